"""queue_status(tenant): what the tenant's work looks like right now, cheap enough to poll."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

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


async def queue_status(db: AsyncSession | AsyncConnection, tenant_id: uuid.UUID) -> QueueStatus:
    """From Postgres, the record of truth, in one statement (one round trip: a live read
    outside a transaction binds the tenant for that statement alone); row-level security scopes
    every count, and the indexes lead with tenant_id and status."""
    row = (
        await db.execute(text(statement("queue.sql", "queue_status")), {"tenant": tenant_id})
    ).one()
    return QueueStatus(
        queued=row.queued, scheduled=row.scheduled, running=row.running,
        failed_last_hour=row.failed_last_hour, dead=row.dead,
        sent_last_minute=row.sent_last_minute,
        tiers=[TierDepth(name, *row.tiers.get(name, (0, 0))) for name in TIERS],
    )  # fmt: skip
