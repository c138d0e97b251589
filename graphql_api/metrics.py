"""`/metrics` (Prometheus text format) for the networks in `metrics_allow`, and the timing of
every HTTP request and GraphQL operation (services/metrics.py holds the metrics)."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from graphql_api.rate_limits import client_ip
from services import metrics


async def serve_metrics(request: Request) -> Response:
    """Refused (403) unless the client's address is in `metrics_allow`: the figures tell how
    busy the platform is, not for the public. The client is the peer, or behind a trusted proxy
    the address it forwards (as for the rate limits): a public request relayed by a proxy on
    the same host is not a local one."""
    state = request.app.state
    client = client_ip(request.scope, state.settings.trusted_networks)
    try:
        address = ipaddress.ip_address(client)
    except ValueError:  # a unix socket's peer, a test client's name
        address = None
    if address is None or not any(address in n for n in state.metrics_networks):
        return PlainTextResponse("metrics are not served to this address\n", status_code=403)
    hub = getattr(state, "live", None)  # graphql_api/live.py, when the process has one
    return Response(await state.exposition.render(hub), media_type=CONTENT_TYPE_LATEST)


routes = [Route("/metrics", serve_metrics, methods=["GET"])]


class RequestTiming:
    """penguinmails_http_request_duration_seconds: labelled by the route's template
    (`/t/o/{token}`), never the raw path, so a scan of random URLs adds no series."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        began = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            metrics.HTTP_REQUEST_DURATION.labels(
                scope["method"], getattr(route, "path", "unmatched"), str(status)
            ).observe(time.perf_counter() - began)


class OperationTiming(SchemaExtension):
    """penguinmails_graphql_operation_duration_seconds, by operation name (bounded)."""

    def on_operation(self) -> Iterator[None]:
        began = time.perf_counter()
        yield
        context = self.execution_context
        try:
            subscription = context.operation_type == OperationType.SUBSCRIPTION
        except RuntimeError:  # no document (it did not parse) or no such operation: timed too
            subscription = False
        if subscription:  # it lasts as long as its client
            return
        name = metrics.operation_label(context.operation_name)
        metrics.GRAPHQL_OPERATION_DURATION.labels(name).observe(time.perf_counter() - began)
