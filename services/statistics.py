"""Planner statistics refreshed after bulk loads, instead of waiting for autovacuum's next round
(see sql/statistics.sql): a job, so the ANALYZE runs after the load has committed and never
holds up the request that loaded."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from jobs.queue import enqueue
from models.sessions import Database

REFRESH_KIND = "refresh_statistics"
BULK_ROWS = 1_000  # a load of at least this many rows asks for fresh statistics
TIERS = {"app.leads": "oltp", "content.email_messages": "content"}


async def refresh_later(
    session: AsyncSession, tenant_id: uuid.UUID, table: str, *, after_seconds: float = 0
) -> None:
    """Queues a refresh of `table`'s statistics `after_seconds` from now, at most one per table
    per minute per tenant."""
    at = datetime.now(UTC) + timedelta(seconds=after_seconds)
    await enqueue(
        session, REFRESH_KIND, {"table": table}, tenant_id=tenant_id, priority=40, run_at=at,
        idempotency_key=f"{REFRESH_KIND}:{table}:{at:%Y%m%d%H%M}",
    )  # fmt: skip


async def refresh(db: Database, table: str) -> None:
    async with db.system_session(TIERS[table]) as session:
        await session.execute(text("SELECT app.refresh_statistics(:table)"), {"table": table})
