"""The Starlette application: `/graphql` (Strawberry), health checks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from strawberry.asgi import GraphQL

from graphql_api.context import Context
from graphql_api.schema import schema
from models.sessions import Database
from penguinmails.settings import Settings, get_settings


class PenguinGraphQL(GraphQL):
    def __init__(self, settings: Settings) -> None:
        development = settings.environment == "development"
        super().__init__(schema, graphql_ide="graphiql" if development else None)

    async def get_context(self, request, response) -> Context:  # type: ignore[override]
        return Context(request=request, response=response, db=request.app.state.db)


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.db = Database(settings)
        yield
        await app.state.db.dispose()

    graphql = PenguinGraphQL(settings)
    app = Starlette(
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            Route("/health", health),
        ],
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "X-Tenant-ID"],
            )
        ],
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app
