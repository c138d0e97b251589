"""A local stand-in for Loops' transactional API, for the platform's real HTTP client
(`PENGUINMAILS_LOOP_API_BASE`).

It speaks the documented shapes of `POST /api/v1/transactional`: a JSON body with
`transactionalId`, `email` and `dataVariables`, a bearer key, an optional `Idempotency-Key`;
`{"success": true}` when sent, `{"success": false, "message": …}` with 400 (bad request), 401
(bad key), 404 (no such published transactional email) or 409 (idempotency key used in the last
24 hours). `outage` makes it answer 500 to everything. Every request is recorded.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.graphql_api.conftest import running

API_KEY = "loops-test-key"
TRANSACTIONAL_IDS = {
    "verify_email": "tx_verify",
    "password_reset": "tx_reset",
    "invitation": "tx_invite",
    "payment_failed": "tx_payment_failed",
    "suspended": "tx_suspended",
    "restored": "tx_restored",
}


class Received(NamedTuple):
    authorization: str | None
    idempotency_key: str | None
    body: dict[str, Any]


class FakeLoops:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.published = set(TRANSACTIONAL_IDS.values())
        self.outage = False
        self.sent: list[dict[str, Any]] = []  # the bodies it answered 200 to
        self._keys: set[str] = set()

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/api/v1/transactional", self.send, methods=["POST"])])

    async def send(self, request: Request) -> JSONResponse:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"unparsed": raw.decode(errors="replace")}
        key = request.headers.get("idempotency-key")
        self.requests.append(Received(request.headers.get("authorization"), key, body))
        if self.outage:
            return _error(500, "Internal server error")
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return _error(401, "Invalid API key")
        if not isinstance(body, dict) or not body.get("email") or not body.get("transactionalId"):
            return _error(400, "email and transactionalId are required")
        if body["transactionalId"] not in self.published:
            return _error(404, "Transactional email not found")
        if key is not None and key in self._keys:
            return _error(409, "Idempotency key has been used in the previous 24 hours")
        if key is not None:
            self._keys.add(key)
        self.sent.append(body)
        return JSONResponse({"success": True})


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"success": False, "message": message}, status)


@asynccontextmanager
async def running_loops() -> AsyncIterator[tuple[str, FakeLoops]]:
    """The fake served on a free loopback port: (its base URL, the fake)."""
    fake = FakeLoops()
    async with running(fake.app()) as url:
        yield url, fake
