"""What every resolver receives: the request and the process's database handle."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from models.sessions import Database


@dataclass
class Context:
    request: Request
    response: Response | None
    db: Database
