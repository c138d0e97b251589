"""What the dashboards read: daily counts and deliverability, from the OLAP tables only."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from models import analytics, infrastructure, operations
from models.tenancy import Tenant
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
# The tenant the session is bound to, named in the query (RLS stays the guarantee; the explicit
# predicate lets a planner route to the tenant's rows).
CURRENT_TENANT = func.app.current_tenant_id()
ALERTS_SHOWN = 50
RESOLVED_SHOWN_FOR = timedelta(hours=24)  # a resolved alert stays listed, with its resolvedAt


@dataclass
class DayCounts:
    day: date
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))


async def daily_counts(
    session: AsyncSession, first: date, last: date, campaign_id: uuid.UUID | None = None
) -> list[DayCounts]:
    """One entry per day from `first` to `last` inclusive; days without sends are zeros."""
    if last < first or (last - first).days >= MAX_DAYS:
        raise DomainError("INVALID_RANGE", f"`to` must follow `from`, within {MAX_DAYS} days")
    d = analytics.DailyAnalytics
    stmt = select(d).where(
        d.tenant_id == CURRENT_TENANT,
        d.campaign_id == (campaign_id or analytics.ALL_CAMPAIGNS),
        d.day.between(first, last),
    )
    rows = {row.day: row for row in await session.scalars(stmt)}
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    return [
        DayCounts(d, {c: getattr(rows[d], c) for c in COUNTS}) if d in rows else DayCounts(d)
        for d in days
    ]


async def campaign_totals(
    session: AsyncSession, campaign_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, dict[str, int]]:
    """Each campaign's lifetime counts (every step, every day), kept per campaign by the
    campaign_analytics pipeline (analytics.campaign_totals). Opened and clicked are the distinct
    messages ever opened or clicked. A campaign nothing was counted for has zeros."""
    t = analytics.CampaignTotals
    rows = await session.execute(
        select(t.campaign_id, *(getattr(t, c) for c in COUNTS)).where(
            t.tenant_id == CURRENT_TENANT, t.campaign_id.in_(campaign_ids)
        )
    )
    found = {row[0]: dict(zip(COUNTS, row[1:], strict=True)) for row in rows}
    return {c: found.get(c, dict.fromkeys(COUNTS, 0)) for c in campaign_ids}


@dataclass
class Deliverability:
    bounce_rate: float
    complaint_rate: float
    domains: list[infrastructure.Domain]
    ips: list[infrastructure.SmtpIpAddress]
    alerts: list[operations.Alert]


async def deliverability(session: AsyncSession, today: date | None = None) -> Deliverability:
    """Bounce and complaint rates over the last 30 days (the tenant's days, today included),
    the sending estate, open alerts and those resolved in the last day."""
    if today is None:
        zone = await session.scalar(select(Tenant.timezone).where(Tenant.id == CURRENT_TENANT))
        today = datetime.now(ZoneInfo(zone or "UTC")).date()
    since = today - timedelta(days=RATE_WINDOW_DAYS - 1)
    d = analytics.DailyAnalytics
    sent, bounced, complained = (
        await session.execute(
            select(
                func.coalesce(func.sum(d.sent), 0),
                func.coalesce(func.sum(d.bounced), 0),
                func.coalesce(func.sum(d.complained), 0),
            ).where(
                d.tenant_id == CURRENT_TENANT,
                d.campaign_id == analytics.ALL_CAMPAIGNS,
                d.day >= since,
            )
        )
    ).one()
    domains = await session.scalars(
        select(infrastructure.Domain).order_by(infrastructure.Domain.name)
    )
    ips = await session.scalars(
        select(infrastructure.SmtpIpAddress).order_by(infrastructure.SmtpIpAddress.address)
    )
    alert = operations.Alert
    alerts = await session.scalars(
        select(alert)
        .where(
            or_(alert.resolved_at.is_(None), alert.resolved_at > func.now() - RESOLVED_SHOWN_FOR)
        )
        .order_by(alert.resolved_at.is_not(None), alert.created_at.desc())  # open ones first
        .limit(ALERTS_SHOWN)
    )
    return Deliverability(
        bounce_rate=bounced / sent if sent else 0.0,
        complaint_rate=complained / sent if sent else 0.0,
        domains=list(domains),
        ips=list(ips),
        alerts=list(alerts),
    )
