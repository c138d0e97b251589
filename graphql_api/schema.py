"""Assembles Query, Mutation and Subscription from each domain, with the hardening extensions."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaskErrors, SchemaExtension
from strawberry.extensions.disable_introspection import DisableIntrospection
from strawberry.tools import merge_types
from strawberry.types import Info
from strawberry.types.graphql import OperationType

from graphql_api.admin.mutations import AdminMutation
from graphql_api.admin.queries import AdminQuery
from graphql_api.admin.subscriptions import AdminSubscription
from graphql_api.analytics.queries import AnalyticsQuery
from graphql_api.billing.mutations import BillingMutation
from graphql_api.billing.queries import BillingQuery
from graphql_api.campaigns.mutations import CampaignsMutation
from graphql_api.campaigns.queries import CampaignsQuery
from graphql_api.infrastructure.mutations import InfrastructureMutation
from graphql_api.infrastructure.queries import InfrastructureQuery
from graphql_api.input_limits import bound_mutations
from graphql_api.live import CohortExecutor
from graphql_api.metrics import OperationTiming
from graphql_api.node import Node, resolve_node
from graphql_api.operations.queries import OperationsQuery
from graphql_api.operations.queries import Subscription as OperationsSubscription
from graphql_api.permissions import IsMember
from graphql_api.query_limits import QueryLimiter, QueryLimits
from graphql_api.tenancy.mutations import TenancyMutation
from graphql_api.tenancy.queries import TenancyQuery
from penguinmails.settings import Settings
from services.errors import DomainError

log = logging.getLogger("penguinmails.graphql")


@strawberry.type
class NodeQuery:
    @strawberry.field(permission_classes=[IsMember])
    async def node(self, info: Info, id: strawberry.ID) -> Node | None:
        async with info.context.tenant_session() as session:
            return await resolve_node(session, id)


Query = merge_types(
    "Query",
    (
        NodeQuery,
        TenancyQuery,
        InfrastructureQuery,
        CampaignsQuery,
        BillingQuery,
        AnalyticsQuery,
        OperationsQuery,
        AdminQuery,
    ),
)
Mutation = merge_types(
    "Mutation",
    (TenancyMutation, InfrastructureMutation, CampaignsMutation, BillingMutation, AdminMutation),
)
bound_mutations(Mutation)
Subscription = merge_types("Subscription", (OperationsSubscription, AdminSubscription))


def _expected(error: GraphQLError) -> bool:
    """Rules the caller broke, permission refusals and malformed queries."""
    original = error.original_error
    return original is None or isinstance(original, (DomainError, GraphQLError))


def _should_mask(error: GraphQLError) -> bool:
    """Unexpected exceptions become a generic error; the expected keep their message."""
    return not _expected(error)


class PenguinSchema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context=None) -> None:
        """An expected error is one line (Strawberry logs each error with its traceback); an
        unexpected one is logged with its traceback, and its message never reaches the caller."""
        for error in errors:
            where = ".".join(map(str, error.path)) if error.path else "the document"
            if _expected(error):
                code = (error.extensions or {}).get("code")
                log.info("%s at %s%s", error.message, where, f" ({code})" if code else "")
            else:
                log.error("unexpected error at %s", where, exc_info=error.original_error)


class SubscriptionsOverWebSocket(SchemaExtension):
    """A subscription sent as an HTTP request is refused with a clear error: subscriptions are
    served over graphql-transport-ws only."""

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        over_http = context.context.request.scope["type"] == "http"
        if over_http and context.operation_type is OperationType.SUBSCRIPTION:
            raise GraphQLError(
                "Subscriptions are served over WebSocket (graphql-transport-ws) at /graphql.",
                extensions={"code": "SUBSCRIPTION_OVER_HTTP"},
            )
        yield


def build_schema(settings: Settings) -> strawberry.Schema:
    limits = QueryLimits.from_settings(settings)
    extensions: list = [
        OperationTiming,  # first: it times the whole operation, limits included
        lambda: QueryLimiter(limits),  # parses and validates, bounded and cached
        SubscriptionsOverWebSocket,
        lambda: MaskErrors(should_mask_error=_should_mask, error_message="Unexpected error."),
    ]
    if settings.environment != "development":
        extensions.append(DisableIntrospection)
    return PenguinSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions,
        execution_context_class=CohortExecutor,  # a live push executed once per cohort
    )
