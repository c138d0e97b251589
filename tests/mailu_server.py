"""A local stand-in for MailU's admin REST API (2.x, /api/v1), for the platform's real client
(services/mailu.AdminClient).

It answers as core/admin/mailu/api/v1 does: the token in `Authorization` (bare or after
"Bearer "), 401 without one and 403 for a wrong one; `POST /domain` {name}; `POST /user`
{email, raw_password} (404 for an unknown domain, 409 for an existing user); `PATCH
/user/{email}` and `DELETE /user/{email}` (404 for an unknown user); every answer
`{"code": …, "message": …}` (the token checks only a message), and 409 `Duplicate domain name …` for an existing domain. Users
keep their passwords, so a test can check what a mailbox would log in with. `outage` makes it
answer 503 to everything. Every request is recorded.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.graphql_api.conftest import running

API_TOKEN = "mailu-test-token"


class Received(NamedTuple):
    method: str
    path: str
    authorization: str | None
    body: dict[str, Any] | None


class FakeMailu:
    def __init__(self, token: str = API_TOKEN) -> None:
        # Or a function giving it: MailU's token is the one in the mailu.env deployed to it.
        self.token: str | Callable[[], str | None] = token
        self.requests: list[Received] = []
        self.domains: set[str] = set()
        self.passwords: dict[str, str] = {}  # user address -> raw password
        self.outage = False

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/v1/domain", self.create_domain, methods=["POST"]),
                Route("/api/v1/user", self.create_user, methods=["POST"]),
                Route("/api/v1/user/{email}", self.user, methods=["PATCH", "DELETE"]),
            ]
        )

    def can_log_in(self, address: str, password: str) -> bool:
        return self.passwords.get(address.lower()) == password

    async def _receive(self, request: Request) -> tuple[dict[str, Any] | None, JSONResponse | None]:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = {"unparsed": raw.decode(errors="replace")}
        authorization = request.headers.get("authorization")
        self.requests.append(Received(request.method, request.url.path, authorization, body))
        if self.outage:
            return body, _answer(503, "Service Unavailable")
        if not authorization:
            return body, _aborted(401, "A valid Authorization header is mandatory")
        token = self.token() if callable(self.token) else self.token
        if authorization.removeprefix("Bearer ") != token:
            return body, _aborted(403, "Invalid API token")
        if request.method in ("POST", "PATCH") and not isinstance(body, dict):
            return body, _answer(400, "Input payload validation failed")
        return body, None

    async def create_domain(self, request: Request) -> JSONResponse:
        body, refused = await self._receive(request)
        if refused:
            return refused
        assert body is not None
        name = str(body.get("name") or "").lower()
        if not name or "." not in name:
            return _answer(400, f"Domain {name} is not a valid domain")
        if name in self.domains:
            return _answer(409, f"Duplicate domain name {name}")
        self.domains.add(name)
        return _answer(200, f"Domain {name} has been created")

    async def create_user(self, request: Request) -> JSONResponse:
        body, refused = await self._receive(request)
        if refused:
            return refused
        assert body is not None
        email = str(body.get("email") or "")
        if "raw_password" not in body or "@" not in email:
            return _answer(400, "Input payload validation failed")
        domain = email.lower().rsplit("@", 1)[1]
        if domain not in self.domains:
            return _answer(404, f"Domain {domain} does not exist")
        if email.lower() in self.passwords:
            return _answer(409, f"User {email} already exists")
        self.passwords[email.lower()] = body["raw_password"]
        return _answer(200, f"User {email} has been created")

    async def user(self, request: Request) -> JSONResponse:
        body, refused = await self._receive(request)
        if refused:
            return refused
        email = request.path_params["email"]
        if email.lower() not in self.passwords:
            return _answer(404, f"User {email} cannot be found")
        if request.method == "DELETE":
            del self.passwords[email.lower()]
            return _answer(200, f"User {email} has been deleted")
        assert body is not None
        if "raw_password" in body:
            self.passwords[email.lower()] = body["raw_password"]
        return _answer(200, f"User {email} has been updated")


def _answer(status: int, message: str) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status)


def _aborted(status: int, message: str) -> JSONResponse:
    """As flask_restx's abort() answers (the token checks): a message, no code."""
    return JSONResponse({"message": message}, status)


@asynccontextmanager
async def running_mailu(token: str = API_TOKEN) -> AsyncIterator[tuple[str, FakeMailu]]:
    """The stand-in served on a free loopback port: (its base URL, the fake). The URL is the
    MailU web root; the API is under /api/v1."""
    fake = FakeMailu(token)
    async with running(fake.app()) as url:
        yield url, fake
