"""dailyStats, deliverability: dashboards read the OLAP tables, never the raw events."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated

import strawberry
from sqlalchemy import func, select
from strawberry.types import Info

from graphql_api.analytics.types import Alert, DailyStat, DeliverabilityStatus
from graphql_api.ids import decode_id
from graphql_api.infrastructure.types import Domain, SendingIp
from graphql_api.permissions import IsMember
from models import analytics, infrastructure, operations
from services.errors import DomainError

MAX_DAYS = 366
COUNTS = (
    "sent",
    "delivered",
    "opened",
    "clicked",
    "replied",
    "bounced",
    "complained",
    "unsubscribed",
)
RATE_WINDOW_DAYS = 30


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
        if to < from_ or (to - from_).days >= MAX_DAYS:
            raise DomainError("INVALID_RANGE", f"`to` must follow `from`, within {MAX_DAYS} days")
        table = analytics.DailyAnalytics
        stmt = select(table)
        if campaign_id is not None:
            table = analytics.CampaignAnalytics
            stmt = select(table).where(
                table.campaign_id == decode_id(campaign_id, "Campaign", "campaignId")
            )
        stmt = stmt.where(table.day.between(from_, to))
        async with info.context.tenant_session() as session:
            rows = {row.day: row for row in await session.scalars(stmt)}
        days = [from_ + timedelta(days=n) for n in range((to - from_).days + 1)]
        return [
            DailyStat(day=d, **{c: getattr(rows[d], c) for c in COUNTS})
            if d in rows
            else DailyStat(day=d)
            for d in days
        ]

    @strawberry.field(permission_classes=[IsMember])
    async def deliverability(self, info: Info) -> DeliverabilityStatus:
        since = date.today() - timedelta(days=RATE_WINDOW_DAYS)
        d = analytics.DailyAnalytics
        async with info.context.tenant_session() as session:
            sent, bounced, complained = (
                await session.execute(
                    select(
                        func.coalesce(func.sum(d.sent), 0),
                        func.coalesce(func.sum(d.bounced), 0),
                        func.coalesce(func.sum(d.complained), 0),
                    ).where(d.day >= since)
                )
            ).one()
            domains = await session.scalars(
                select(infrastructure.Domain).order_by(infrastructure.Domain.name)
            )
            ips = await session.scalars(
                select(infrastructure.SmtpIpAddress).order_by(infrastructure.SmtpIpAddress.address)
            )
            alerts = await session.scalars(
                select(operations.Alert)
                .where(operations.Alert.resolved_at.is_(None))
                .order_by(operations.Alert.created_at.desc())
                .limit(50)
            )
            return DeliverabilityStatus(
                bounce_rate=bounced / sent if sent else 0.0,
                complaint_rate=complained / sent if sent else 0.0,
                domains=[Domain.from_row(r) for r in domains],
                ips=[SendingIp.from_row(r) for r in ips],
                alerts=[
                    Alert(
                        kind=a.kind, severity=a.severity.value, message=a.message, at=a.created_at
                    )
                    for a in alerts
                ],
            )
