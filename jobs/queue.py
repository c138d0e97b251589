"""Putting work on the durable queue: a `queue.jobs` row written in the caller's transaction
(transactional outbox), so a job exists if and only if its cause committed."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from models.sqlfiles import statement

DEFAULT_MAX_ATTEMPTS = 5


async def enqueue(
    session: AsyncSession,
    kind: str,
    payload: dict[str, Any],
    *,
    tenant_id: uuid.UUID | None,
    priority: int = 100,
    run_at: datetime | None = None,
    idempotency_key: str | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    campaign_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """Insert a job (or find the one with the same idempotency key) and return its id."""
    conn = await session.connection()
    raw = (await conn.get_raw_connection()).driver_connection
    return await raw.fetchval(
        statement("queue.sql", "enqueue"),
        tenant_id, kind, json.dumps(payload), priority, run_at, max_attempts,
        idempotency_key, campaign_id,
    )  # fmt: skip
