"""Request rate limits on the API: per bearer token and per client IP, sliding windows of a
minute in Redis; over either, 429 with Retry-After and a GraphQL-shaped error.

The client's address is the direct peer's, or, when that peer is a trusted proxy
(`trusted_proxies`), the right-most address of X-Forwarded-For that is not one: what the
proxies themselves saw, never what the client wrote at the left of the header.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math

from redis.exceptions import RedisError
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from penguinmails.settings import Settings
from services import ratelimit

log = logging.getLogger("penguinmails.api")
WINDOW_SECONDS = 60
# Never limited: health checks and metrics (probes and scrapers must always get an answer),
# tracking and unsubscribe (recipients' mail clients, which image and link proxies gather on a
# few addresses: a refused open pixel or click loses the event, a refused one-click unsubscribe
# breaks RFC 8058's promise).
EXEMPT_PREFIXES = ("/health", "/metrics", "/t/", "/u/")


class RateLimits:
    """Resolves the client's address for every HTTP and WebSocket request (scope state
    `client_ip`), and takes one slot of each of its windows for every request: an HTTP request
    or a WebSocket handshake (refused with 429 where the server can answer a handshake so, with
    a close before it is accepted, 403, elsewhere)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.per_token, self.per_ip = settings.api_rate_per_token, settings.api_rate_per_ip
        self.trusted = settings.trusted_networks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        ip = client_ip(scope, self.trusted)
        scope.setdefault("state", {})["client_ip"] = ip
        if not scope["path"].startswith(EXEMPT_PREFIXES):
            wait = await self._take(scope, ip)
            if wait > 0 and scope["type"] == "http":
                return await _too_many(math.ceil(wait))(scope, receive, send)
            if wait > 0:
                return await _refuse_handshake(math.ceil(wait), scope, receive, send)
        await self.app(scope, receive, send)

    async def _take(self, scope: Scope, ip: str) -> float:
        windows = [(f"ratelimit:api:ip:{ip}", self.per_ip)]
        token = _bearer(scope)
        if token:  # the key names a digest: the token itself never reaches Redis
            digest = hashlib.sha256(token.encode()).hexdigest()
            windows.append((f"ratelimit:api:token:{digest}", self.per_token))
        windows = [(key, limit) for key, limit in windows if limit > 0]
        if not windows:
            return 0.0
        try:
            [wait] = await ratelimit.acquire_many(
                scope["app"].state.redis, [windows], WINDOW_SECONDS
            )
        except (RedisError, OSError) as e:  # without Redis the API still answers, unlimited
            log.warning("rate limits not applied: Redis: %s", e)
            return 0.0
        return wait


def client_ip(scope: Scope, trusted: list) -> str:
    peer = scope["client"][0] if scope.get("client") else "unknown"
    if not _within(peer, trusted):
        return peer
    forwarded = [
        address.strip()
        for name, value in scope["headers"]
        if name == b"x-forwarded-for"
        for address in value.decode("latin-1").split(",")
        if address.strip()
    ]
    for address in reversed(forwarded):
        if not _within(address, trusted):
            return address[:64]
    return forwarded[0] if forwarded else peer  # every hop trusted: the first one


def _within(address: str, networks: list) -> bool:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in networks)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].strip().decode("latin-1") or None
    return None


async def _refuse_handshake(seconds: int, scope: Scope, receive: Receive, send: Send) -> None:
    websocket = WebSocket(scope, receive, send)
    if "websocket.http.response" in scope.get("extensions", {}):
        await websocket.send_denial_response(_too_many(seconds))
    else:
        await websocket.close(code=1008, reason="rate limited")


def _too_many(seconds: int) -> JSONResponse:
    error = {
        "message": f"Too many requests: try again in {seconds} s.",
        "extensions": {"code": "RATE_LIMITED", "retryAfter": seconds},
    }
    return JSONResponse(
        {"data": None, "errors": [error]},
        status_code=429,
        headers={"Retry-After": str(seconds)},
    )
