"""The API's request rate limits: per bearer token and per client IP, over real HTTP and Redis.

Each test's client speaks from a loopback address of its own (127.x.y.z), so its windows are
its own whatever else uses the same Redis."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from graphql_api.app import create_app
from penguinmails.settings import Settings
from tests.graphql_api.conftest import running

QUERY = {"query": "{ __typename }"}


def _loopback() -> str:
    """A loopback address for a test's client alone."""
    return f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


@asynccontextmanager
async def limited_api(
    settings: Settings, source: str | None = None, **limits: object
) -> AsyncIterator[httpx.AsyncClient]:
    """The API with these limits, and a client from a loopback address nobody else uses."""
    own = settings.model_copy(update={"trusted_proxies": "", **limits})
    transport = httpx.AsyncHTTPTransport(local_address=source or _loopback())
    async with (
        running(create_app(own)) as url,
        httpx.AsyncClient(base_url=url, transport=transport, timeout=30) as client,
    ):
        yield client


async def test_the_request_over_a_tokens_limit_is_refused_with_429_and_retry_after(
    settings: Settings,
) -> None:
    token = {"Authorization": f"Bearer pm_{uuid.uuid4().hex}"}
    async with limited_api(settings, api_rate_per_token=3, api_rate_per_ip=100) as client:
        answered = [(await client.post("/graphql", json=QUERY, headers=token)) for _ in range(3)]
        refused = await client.post("/graphql", json=QUERY, headers=token)
        health = await client.get("/health", headers=token)
        other_token = await client.post(
            "/graphql", json=QUERY, headers={"Authorization": f"Bearer pm_{uuid.uuid4().hex}"}
        )
        anonymous = await client.post("/graphql", json=QUERY)
    assert [r.status_code for r in answered] == [200, 200, 200]
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    [error] = refused.json()["errors"]
    assert error["extensions"]["code"] == "RATE_LIMITED"
    assert error["extensions"]["retryAfter"] == int(refused.headers["Retry-After"])
    assert refused.headers["X-Request-ID"]
    assert health.status_code == 200  # health, metrics and tracking are never limited
    assert other_token.status_code == 200 and anonymous.status_code == 200


async def test_x_forwarded_for_from_a_trusted_proxy_counts_per_client(settings: Settings) -> None:
    async with limited_api(
        settings, api_rate_per_ip=2, trusted_proxies="127.0.0.0/8, 10.0.0.0/8"
    ) as client:

        async def from_(chain: str) -> int:
            response = await client.post("/graphql", json=QUERY, headers={"X-Forwarded-For": chain})
            return response.status_code

        a, b = f"198.51.100.{random.randint(1, 254)}", f"203.0.113.{random.randint(1, 254)}"
        # What a client writes at the left is not believed: the right-most untrusted hop is.
        first = [await from_(f"{uuid.uuid4().hex}, {a}"), await from_(f"192.0.2.1, {a}, 10.1.2.3")]
        a_again = await from_(a)
        b_first = await from_(b)
    assert first == [200, 200]
    assert a_again == 429
    assert b_first == 200


async def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(settings: Settings) -> None:
    async with limited_api(settings, api_rate_per_ip=2, trusted_proxies="10.0.0.0/8") as client:
        statuses = [
            (
                await client.post(
                    "/graphql", json=QUERY, headers={"X-Forwarded-For": f"198.51.100.{n}"}
                )
            ).status_code
            for n in range(1, 4)
        ]
        pixel = await client.get("/t/o/not-a-token")  # a mail client's open, from the same peer
    assert statuses == [200, 200, 429]  # one peer, however many clients it claims to speak for
    assert pixel.status_code != 429


async def test_websocket_handshakes_over_the_ip_limit_are_refused(settings: Settings) -> None:
    source = _loopback()
    async with limited_api(settings, source, api_rate_per_ip=2) as client:
        url = f"ws://{client.base_url.host}:{client.base_url.port}/graphql"

        def handshake():
            return connect(url, subprotocols=["graphql-transport-ws"], local_addr=(source, 0))

        opened = []
        for _ in range(2):
            async with handshake() as ws:
                opened.append(ws.subprotocol)
        with pytest.raises(InvalidStatus) as refused:
            async with handshake():
                pass
    assert opened == ["graphql-transport-ws", "graphql-transport-ws"]
    # 429 where the server can answer a handshake with a response; uvicorn's default
    # WebSocket implementation cannot, and the handshake closed before acceptance is a 403.
    assert refused.value.response.status_code in (403, 429)
