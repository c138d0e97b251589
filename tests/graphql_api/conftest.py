"""The API served over real HTTP (uvicorn on loopback, in the test's event loop), and a client."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp

from graphql_api.app import create_app
from penguinmails.settings import Settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Api:
    url: str
    app: Starlette
    http: httpx.AsyncClient

    async def gql(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        tenant: str | None = None,
        ip: str | None = None,
    ) -> dict[str, Any]:
        """POST a GraphQL operation; returns the whole JSON body (data and errors)."""
        headers = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if tenant:
            headers["X-Tenant-ID"] = tenant
        if ip:
            headers["X-Forwarded-For"] = ip
        response = await self.http.post(
            f"{self.url}/graphql",
            json={"query": query, "variables": variables or {}},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        return response.json()


@asynccontextmanager
async def running(app: ASGIApp) -> AsyncIterator[str]:
    """Serves an ASGI app with uvicorn on a free loopback port; yields its base URL."""
    port = _free_port()
    server = uvicorn.Server(
        # proxy_headers off, as `penguinmails api`: the app reads X-Forwarded-For itself.
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            proxy_headers=False,
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises what stopped the server
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def serve(settings: Settings) -> AsyncIterator[Api]:
    app = create_app(settings)
    async with running(app) as url, httpx.AsyncClient(timeout=60) as http:
        yield Api(url=url, app=app, http=http)


@pytest.fixture(scope="session")
async def api(settings: Settings) -> AsyncIterator[Api]:
    async for served in serve(settings):
        yield served


@dataclass
class Account:
    """A signed-up user with their first tenant."""

    token: str
    tenant: str  # Tenant global id
    user: str  # User global id
    email: str


SIGN_UP = """
mutation($email: String!, $password: String!, $tenantName: String!) {
  signUp(email: $email, password: $password, tenantName: $tenantName) {
    token user { id email } tenant { id name } errors { field message code }
  }
}"""


async def sign_up(api: Api, name: str = "Acme", *, verified: bool = True) -> Account:
    """A new user and tenant through signUp; `verified` marks the address confirmed as if its
    mail had been followed (tests/graphql_api/test_account_mail.py follows it for real)."""
    from tests.factories import mark_verified

    email = f"{name.lower().replace(' ', '-')}-{uuid.uuid4().hex[:10]}@example.com"
    body = await api.gql(
        SIGN_UP, {"email": email, "password": "correct horse battery", "tenantName": name}
    )
    payload = body["data"]["signUp"]
    assert payload["errors"] == [], payload
    if verified:
        await mark_verified(api.app.state.db, email)
    return Account(payload["token"], payload["tenant"]["id"], payload["user"]["id"], email)


@pytest.fixture
async def account(api: Api) -> Account:
    return await sign_up(api)
