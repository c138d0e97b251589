"""What the ops page shows platform staff: the queue of every tenant, sends, bounces and
complaints per minute over the last hour, the open alerts and how far each pipeline lags."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from jobs.status import TIERS, TierDepth
from models.operations import Alert
from models.sessions import Database
from models.sqlfiles import statement
from models.tenancy import Tenant
from penguinmails.settings import Settings
from services import staff

if TYPE_CHECKING:
    from pipelines import runtime

TICK_SECONDS = 1.0
# The hour's minutes and the pipelines' lag change slowly and cost more to read.
SLOW_READ_SECONDS = 10.0


@dataclass
class PlatformQueue:
    queued: int
    scheduled: int
    running: int
    dead: int
    tiers: list[TierDepth]


@dataclass
class Minute:
    at: datetime
    sent: int
    bounced: int
    complained: int


@dataclass
class OpsStatus:
    queue: PlatformQueue
    minutes: list[Minute]
    alerts: list[Alert]
    pipelines: list[runtime.Status]
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


async def platform_queue(db: Database) -> PlatformQueue:
    async with db.system_session("queue") as session:
        row = (await session.execute(text(statement("ops.sql", "platform_queue")))).one()
        depths = {
            name: TierDepth(name, ready, in_flight)
            for name, ready, in_flight in await session.execute(
                text(statement("queue.sql", "tier_depths"))
            )
        }
    return PlatformQueue(
        queued=row.queued, scheduled=row.scheduled, running=row.running, dead=row.dead,
        tiers=[depths.get(name, TierDepth(name, 0, 0)) for name in TIERS],
    )  # fmt: skip


async def minute_outcomes(db: Database) -> list[Minute]:
    async with db.system_session() as session:
        tenants = list(await session.scalars(select(Tenant.id)))
    async with db.system_session("content") as session:
        rows = await session.execute(
            text(statement("ops.sql", "minute_outcomes")), {"tenants": tenants}
        )
        return [Minute(row.at, row.sent, row.bounced, row.complained) for row in rows]


async def open_alerts(session: AsyncSession, limit: int = 50) -> list[Alert]:
    """Every tenant's open alerts and the platform's own (tenant NULL), newest first (a system
    or staff session)."""
    return list(
        await session.scalars(
            select(Alert)
            .where(Alert.resolved_at.is_(None))
            .order_by(Alert.created_at.desc())
            .limit(limit)
        )
    )


async def _open_alerts(db: Database) -> list[Alert]:
    async with db.system_session() as session:
        return await open_alerts(session)


async def pipeline_lag(settings: Settings) -> list[runtime.Status]:
    from pipelines import runtime  # Polars and ADBC: loaded by the first watch, not at start

    return await asyncio.to_thread(runtime.status, settings)


async def watch(db: Database, settings: Settings, user_id: uuid.UUID) -> AsyncIterator[OpsStatus]:
    """The status now, then again whenever it changes (looked at every second), for as long as
    the user stays active staff."""
    last = None
    minutes: list[Minute] = []
    pipelines: list[runtime.Status] = []
    slow_read_at = -SLOW_READ_SECONDS
    while await staff.is_active_staff(db, user_id):
        if time.monotonic() - slow_read_at >= SLOW_READ_SECONDS:
            minutes, pipelines = await asyncio.gather(minute_outcomes(db), pipeline_lag(settings))
            slow_read_at = time.monotonic()
        queue, alerts = await asyncio.gather(platform_queue(db), _open_alerts(db))
        seen = (queue, [a.id for a in alerts], slow_read_at)
        if seen != last:
            last = seen
            yield OpsStatus(queue, minutes, alerts, pipelines)
        await asyncio.sleep(TICK_SECONDS)
