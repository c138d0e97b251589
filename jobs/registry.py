"""Job kinds and their handlers. A module registers its kinds with `@handler("kind")`; the
workers import the modules named in settings.job_modules."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from models.sessions import Database
from penguinmails.settings import Settings


@dataclass
class JobContext:
    """What a handler gets: the job, and the process's database and settings."""

    id: uuid.UUID
    kind: str
    tenant_id: uuid.UUID | None
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    db: Database
    settings: Settings
    redis: Redis


Handler = Callable[[JobContext], Awaitable[None]]
_handlers: dict[str, Handler] = {}


class DeferJob(Exception):
    """Not now (a rate limit is full): run again after `seconds`, without using an attempt."""

    def __init__(self, seconds: float, reason: str) -> None:
        super().__init__(reason)
        self.seconds = seconds


class PermanentJobError(Exception):
    """The job can never succeed (bad payload, object gone): no retry, straight to dead."""


def handler(kind: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        if kind in _handlers and _handlers[kind] is not fn:
            raise ValueError(f"job kind {kind!r} has two handlers")
        _handlers[kind] = fn
        return fn

    return register


def handler_for(kind: str) -> Handler | None:
    return _handlers.get(kind)


def kinds() -> list[str]:
    return sorted(_handlers)
