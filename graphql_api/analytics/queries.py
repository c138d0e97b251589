"""dailyStats, deliverability: dashboards read the OLAP tables, never the raw events."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import strawberry
from strawberry.types import Info

from graphql_api.analytics.types import Alert, DailyStat, DeliverabilityStatus
from graphql_api.ids import decode_id
from graphql_api.infrastructure.types import Domain, SendingIp
from graphql_api.permissions import IsMember
from services import analytics


@strawberry.type
class AnalyticsQuery:
    @strawberry.field(permission_classes=[IsMember])
    async def daily_stats(
        self,
        info: Info,
        from_: Annotated[date, strawberry.argument(name="from")],
        to: date,
        campaign_id: strawberry.ID | None = None,
    ) -> list[DailyStat]:
        """One entry per day from `from` to `to` inclusive; days without sends are zeros."""
        campaign = decode_id(campaign_id, "Campaign", "campaignId") if campaign_id else None
        async with info.context.tenant_session() as session:
            days = await analytics.daily_counts(session, from_, to, campaign)
        return [DailyStat(day=d.day, **d.counts) for d in days]

    @strawberry.field(permission_classes=[IsMember])
    async def deliverability(self, info: Info) -> DeliverabilityStatus:
        async with info.context.tenant_session() as session:
            status = await analytics.deliverability(session)
        return DeliverabilityStatus(
            bounce_rate=status.bounce_rate,
            complaint_rate=status.complaint_rate,
            domains=[Domain.from_row(r) for r in status.domains],
            ips=[SendingIp.from_row(r) for r in status.ips],
            alerts=[Alert.from_row(a) for a in status.alerts],
        )
