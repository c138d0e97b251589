"""Putting work on the durable queue: a `queue.jobs` row written in the caller's transaction
(transactional outbox), so a job exists if and only if its cause committed."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from models.sessions import driver_connection
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
    raw = await driver_connection(session)
    return await raw.fetchval(
        statement("queue.sql", "enqueue"),
        tenant_id, kind, json.dumps(payload), priority, run_at, max_attempts,
        idempotency_key, campaign_id,
    )  # fmt: skip


async def enqueue_many(
    session: AsyncSession,
    kind: str,
    payloads: list[dict[str, Any]],
    *,
    tenant_id: uuid.UUID | None,
    priority: int = 100,
    run_at: datetime | list[datetime | None] | None = None,
    idempotency_keys: list[str | None] | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    campaign_id: uuid.UUID | None = None,
) -> list[uuid.UUID]:
    """Thousands of jobs of one kind in one statement; returns the ids of those inserted (a job
    whose idempotency key exists already is skipped). `run_at` is one time for all, or one per
    payload."""
    keys = idempotency_keys or [None] * len(payloads)
    times = run_at if isinstance(run_at, list) else [run_at] * len(payloads)
    if not len(keys) == len(times) == len(payloads):
        raise ValueError("one idempotency key and one run_at per payload")
    raw = await driver_connection(session)
    rows = await raw.fetch(
        statement("queue.sql", "enqueue_many"),
        tenant_id, kind, [json.dumps(p) for p in payloads], priority, times, max_attempts,
        campaign_id, keys,
    )  # fmt: skip
    return [r[0] for r in rows]


async def enqueue_per_tenant(
    session: AsyncSession,
    kind: str,
    jobs: Iterable[tuple[uuid.UUID, dict[str, Any], str]],
    *,
    priority: int = 100,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> int:
    """Jobs of many tenants, given as (tenant, payload, idempotency key): one statement per
    tenant (a periodic task's fan-out, on a system session); how many were inserted."""
    by_tenant: dict[uuid.UUID, list[tuple[dict[str, Any], str]]] = defaultdict(list)
    for tenant_id, payload, key in jobs:
        by_tenant[tenant_id].append((payload, key))
    queued = 0
    for tenant_id, items in by_tenant.items():
        queued += len(
            await enqueue_many(
                session, kind, [payload for payload, _ in items], tenant_id=tenant_id,
                priority=priority, idempotency_keys=[key for _, key in items],
                max_attempts=max_attempts,
            )
        )  # fmt: skip
    return queued


async def cancel(session: AsyncSession, job_id: uuid.UUID) -> bool:
    """Cancels a job that has not started; a dispatched one is fenced off when it arrives."""
    raw = await driver_connection(session)
    return await raw.fetchval(statement("queue.sql", "cancel_job"), job_id) is not None


async def cancel_campaign(session: AsyncSession, campaign_id: uuid.UUID) -> int:
    """Cancels every pending job of a campaign; returns how many."""
    raw = await driver_connection(session)
    return len(await raw.fetch(statement("queue.sql", "cancel_campaign_jobs"), campaign_id))
