"""templates, campaigns."""

from __future__ import annotations

import strawberry
from sqlalchemy import select
from strawberry.types import Info

from graphql_api.campaigns.types import Campaign, CampaignStatus, Lead, Template
from graphql_api.node import register_node
from graphql_api.pagination import Connection, paginate
from graphql_api.permissions import IsMember
from models import campaigns


@strawberry.type
class CampaignsQuery:
    @strawberry.field(permission_classes=[IsMember])
    async def templates(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[Template]:
        async with info.context.tenant_session() as session:
            return await paginate(
                session,
                select(campaigns.Template),
                keys=(campaigns.Template.created_at, campaigns.Template.id),
                first=first,
                after=after,
                max_page=info.context.settings.graphql_max_page_size,
                node=Template.from_row,
            )

    @strawberry.field(permission_classes=[IsMember])
    async def campaigns(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        status: CampaignStatus | None = None,
    ) -> Connection[Campaign]:
        stmt = select(campaigns.Campaign)
        if status is not None:
            stmt = stmt.where(campaigns.Campaign.status == status)
        async with info.context.tenant_session() as session:
            return await paginate(
                session,
                stmt,
                keys=(campaigns.Campaign.created_at, campaigns.Campaign.id),
                first=first,
                after=after,
                max_page=info.context.settings.graphql_max_page_size,
                node=Campaign.from_row,
            )


register_node("Template", campaigns.Template, Template.from_row)
register_node("Campaign", campaigns.Campaign, Campaign.from_row)
register_node("Lead", campaigns.Lead, Lead.from_row)
