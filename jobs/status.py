"""queue_status(tenant): what the tenant's work looks like right now, cheap enough to poll."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from models.sqlfiles import statement

TIERS = ("high", "normal", "low")


@dataclass
class TierDepth:
    name: str
    ready: int
    in_flight: int


@dataclass
class QueueStatus:
    queued: int
    scheduled: int
    running: int
    failed_last_hour: int
    dead: int
    sent_last_minute: int
    tiers: list[TierDepth] = field(default_factory=list)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


async def queue_status(session: AsyncSession) -> QueueStatus:
    """From Postgres, the record of truth, in one round trip per tier (the session is tenant
    bound, so RLS scopes every count; the indexes lead with tenant_id and status)."""
    row = (await session.execute(text(statement("queue.sql", "queue_status")))).one()
    tiers = [
        TierDepth(name, ready, in_flight)
        for name, ready, in_flight in await session.execute(
            text(statement("queue.sql", "tier_depths"))
        )
    ]
    by_name = {t.name: t for t in tiers}
    return QueueStatus(
        queued=row.queued, scheduled=row.scheduled, running=row.running,
        failed_last_hour=row.failed_last_hour, dead=row.dead,
        sent_last_minute=row.sent_last_minute,
        tiers=[by_name.get(name, TierDepth(name, 0, 0)) for name in TIERS],
    )  # fmt: skip
