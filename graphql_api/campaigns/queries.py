"""templates, campaigns."""

from __future__ import annotations

import strawberry
from sqlalchemy import select
from strawberry.types import Info

from graphql_api.campaigns.types import Campaign, CampaignStats, CampaignStatus, Lead, Template
from graphql_api.node import register_node
from graphql_api.pagination import Connection, nodes_select, paginate
from graphql_api.permissions import IsMember
from models import campaigns
from services.analytics import campaign_totals


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
            page = await paginate(
                session,
                stmt,
                keys=(campaigns.Campaign.created_at, campaigns.Campaign.id),
                first=first,
                after=after,
                max_page=info.context.settings.graphql_max_page_size,
                node=Campaign.from_row,
            )
            if nodes_select(info, "stats"):  # in the same transaction, not a loader's own
                nodes = [edge.node for edge in page.edges]
                totals = await campaign_totals(session, [n.row.id for n in nodes])
                for node in nodes:
                    node.page_stats = CampaignStats.from_counts(totals[node.row.id])
        return page


register_node("Template", campaigns.Template, Template.from_row)
register_node("Campaign", campaigns.Campaign, Campaign.from_row)
register_node("Lead", campaigns.Lead, Lead.from_row)
