"""The Starlette application: `/graphql` (Strawberry, with subscriptions), health checks,
tracking, the Stripe webhook, the ops page (`/ops`) and GraphiQL's own assets."""

from __future__ import annotations

import gc
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

from cross_web import HTTPException
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)

from graphql_api import health, live, local_billing, metrics, tracking, webhooks
from graphql_api.context import Context
from graphql_api.rate_limits import RateLimits
from graphql_api.schema import build_schema
from models.sessions import Database
from penguinmails import logs
from penguinmails.settings import Settings, get_settings, parse_networks
from services import billing, templates
from services.metrics import Exposition

log = logging.getLogger("penguinmails.api")
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
LIVE_TENANT = "penguinmails.live_tenant"  # scope key: the tenant an open websocket counts for
OPS_PAGE = Path(__file__).parent / "ops"
GRAPHIQL = Path(__file__).parent / "static" / "graphiql"


class _ClosingOnceAdapter(ASGIWebSocketAdapter):
    """We close with 4401 ourselves for a bad token; Strawberry then must not close again."""

    async def close(self, code: int, reason: str) -> None:
        if self.ws.application_state != WebSocketState.DISCONNECTED:
            await super().close(code, reason)

    async def send_json(self, message) -> None:
        """Nothing to send once closed (the live hub drops a slow client by closing it), nor to
        a client that went: its receive loop ends the connection."""
        if self.ws.application_state != WebSocketState.DISCONNECTED:
            with suppress(WebSocketDisconnected):
                await super().send_json(message)


class _TransportWSHandler(BaseGraphQLTransportWSHandler):
    """Strawberry's graphql-transport-ws handler; an operation's task knows its id, with which
    the live subscriptions send their pushes themselves (graphql_api/live.py: `pushed`)."""

    async def run_operation(self, operation: Operation) -> None:
        live.OPERATION_ID.set(operation.id)
        await super().run_operation(operation)


class PenguinGraphQL(GraphQL):
    websocket_adapter_class = _ClosingOnceAdapter  # type: ignore[assignment]
    graphql_transport_ws_handler_class = _TransportWSHandler

    def __init__(self, settings: Settings) -> None:
        development = settings.environment == "development"
        super().__init__(
            build_schema(settings),
            graphql_ide="graphiql" if development else None,
            max_subscriptions_per_connection=settings.live_max_subscriptions_per_connection,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:  # a websocket admitted by on_ws_connect leaves its tenant's count
            if (tenant_id := scope.get(LIVE_TENANT)) is not None:
                scope["app"].state.live.release(tenant_id)

    @property
    def graphql_ide_html(self) -> str:
        """Strawberry's GraphiQL page with its scripts and styles served here, not from a CDN."""
        return (GRAPHIQL / "graphiql.html").read_text()

    def parse_json(self, data: str | bytes) -> object:
        """A body that is not JSON is the client's mistake (400), whatever the decoder tripped on."""
        try:
            parsed = super().parse_json(data)
        except UnicodeDecodeError:
            raise HTTPException(400, "The request body is not valid UTF-8.") from None
        except RecursionError:
            raise HTTPException(400, "The request body's JSON is nested too deeply.") from None
        if not isinstance(parsed, dict | list):
            raise HTTPException(400, "The request body must be a JSON object.")
        return parsed

    async def get_context(self, request, response) -> Context:  # type: ignore[override]
        state = request.app.state
        return Context(
            request=request,
            response=response,
            db=state.db,
            redis=state.redis,
            settings=state.settings,
            live=state.live,
        )

    async def on_ws_connect(self, context: Context):  # type: ignore[override]
        """graphql-transport-ws: the token and tenant come in connection_init's payload."""
        if await context.principal() is None:
            await context.request.close(code=4401, reason="Unauthorized")
            raise ConnectionRejectionError()
        access = await context.access()
        if access is None:
            raise ConnectionRejectionError()  # closed with 4403 Forbidden
        if not context.live.admit(access.tenant_id):
            await context.request.close(
                code=live.TOO_MANY_CONNECTIONS, reason="Too many connections"
            )
            raise ConnectionRejectionError()
        context.request.scope[LIVE_TENANT] = access.tenant_id
        return None


class RequestLimits:
    """Refuses bodies over the limit (413) and tags each request with an X-Request-ID."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        request_id = headers.get(b"x-request-id", b"").decode()[:64] or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        declared = headers.get(b"content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            return await _too_large(scope, receive, send)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise _BodyTooLarge
            return message

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            with logs.scope(request_id=request_id):
                await self.app(scope, limited_receive, send_with_id)
        except _BodyTooLarge:
            await _too_large(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


async def _too_large(scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse({"errors": [{"message": "request body too large"}]}, status_code=413)
    await response(scope, receive, send)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.db = Database(settings)
        app.state.redis = Redis.from_url(settings.redis_url or DEFAULT_REDIS)
        app.state.exposition = Exposition(
            app.state.db, settings.metrics_cache_seconds, settings.metrics_dir
        )
        app.state.live = live.Hub(settings, settings.redis_url or DEFAULT_REDIS)
        await app.state.live.start()
        templates.start_checks()
        if billing.local_mode(settings):
            log.warning(
                "billing is in local mode (no PENGUINMAILS_STRIPE_API_KEY): checkout activates "
                "plans without payment"
            )
        yield
        await app.state.live.stop()
        await app.state.redis.aclose()
        await app.state.db.dispose()

    graphql = PenguinGraphQL(settings)
    app = Starlette(
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            Route("/health", health.health),
            Route("/health/db", health.health_db),
            Route("/health/queue", health.health_queue),
            Route("/health/email", health.health_email),
            *tracking.routes,
            *webhooks.routes,
            *local_billing.routes,
            *metrics.routes,
            Mount("/ops", StaticFiles(directory=OPS_PAGE, html=True)),
            Mount("/static/graphiql", StaticFiles(directory=GRAPHIQL)),
        ],
        middleware=[
            Middleware(metrics.RequestTiming),
            Middleware(RequestLimits, max_bytes=settings.max_request_bytes),
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "X-Tenant-ID", "X-Request-ID"],
            ),
            Middleware(RateLimits, settings=settings),  # after CORS: a 429 is readable
        ],
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics_networks = parse_networks(settings.metrics_allow)
    return app


def serve(app: Starlette, host: str, port: int, settings: Settings, **options) -> None:
    """Runs the app under uvicorn as `penguinmails api` does (`options`: more of uvicorn's)."""
    import uvicorn

    # What start-up built (modules, the schema, mappers: some 190,000 objects) lives as long as
    # the process. Frozen, it is left out of full collections, which walked all of it: 110 to
    # 170 ms every 15 or so requests for a page of 100 campaigns.
    gc.collect()
    gc.freeze()
    # Open websockets are long-lived too (5,000 of them: 1.4 million objects), and the default
    # young generation (700 allocations) is collected so often that a live push's objects
    # outlive two collections and reach the old one; it then filled a quarter again every
    # 15 s, and each full collection held the event loop for 1.2 to 1.3 s. A young
    # generation of 50,000 lets them die young.
    gc.set_threshold(50_000, 20, 100)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_config=None,  # logs.configure's format
        log_level=settings.log_level.lower(),
        proxy_headers=False,  # the app reads X-Forwarded-For from trusted_proxies alone
        # Live pushes are a few hundred bytes: deflate would only cost CPU and a zlib context
        # (tens of KB) per open websocket.
        ws_per_message_deflate=False,
        **options,
    )
