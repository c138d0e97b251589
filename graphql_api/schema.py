"""Assembles Query, Mutation and Subscription from each domain, with the hardening extensions."""

from __future__ import annotations

import logging

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.extensions.disable_introspection import DisableIntrospection
from strawberry.tools import merge_types
from strawberry.types import Info

from graphql_api.admin.queries import AdminQuery
from graphql_api.analytics.queries import AnalyticsQuery
from graphql_api.billing.mutations import BillingMutation
from graphql_api.billing.queries import BillingQuery
from graphql_api.campaigns.mutations import CampaignsMutation
from graphql_api.campaigns.queries import CampaignsQuery
from graphql_api.infrastructure.mutations import InfrastructureMutation
from graphql_api.infrastructure.queries import InfrastructureQuery
from graphql_api.node import Node, resolve_node
from graphql_api.operations.queries import OperationsQuery, Subscription
from graphql_api.permissions import IsMember
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
    "Mutation", (TenancyMutation, InfrastructureMutation, CampaignsMutation, BillingMutation)
)


def _should_mask(error: GraphQLError) -> bool:
    """Unexpected exceptions become a generic error (logged with their traceback); rules the
    caller broke, permission refusals and malformed queries keep their message."""
    original = error.original_error
    if original is None or isinstance(original, (DomainError, GraphQLError)):
        return False
    log.error("unexpected error in %s", error.path, exc_info=original)
    return True


def build_schema(settings: Settings) -> strawberry.Schema:
    extensions: list = [
        lambda: QueryDepthLimiter(max_depth=settings.graphql_max_depth),
        lambda: MaxAliasesLimiter(max_alias_count=settings.graphql_max_aliases),
        lambda: MaxTokensLimiter(max_token_count=settings.graphql_max_tokens),
        lambda: MaskErrors(should_mask_error=_should_mask, error_message="Unexpected error."),
        lambda: ParserCache(maxsize=256),  # the caches live at module level, shared
        lambda: ValidationCache(maxsize=256),
    ]
    if settings.environment != "development":
        extensions.append(DisableIntrospection)
    return strawberry.Schema(
        query=Query, mutation=Mutation, subscription=Subscription, extensions=extensions
    )
