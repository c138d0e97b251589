"""enqueue: the outbox insert."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from jobs.queue import enqueue, enqueue_many
from models.queue import Job
from models.sessions import Database
from tests.factories import create_tenant


async def test_enqueue_with_an_existing_idempotency_key_returns_the_existing_job(db: Database):
    async with db.system_session() as s:
        tenant = await create_tenant(s)
    async with db.tenant_session(tenant) as s:
        first = await enqueue(s, "noop", {"n": 1}, tenant_id=tenant, idempotency_key="once")
        again = await enqueue(s, "noop", {"n": 2}, tenant_id=tenant, idempotency_key="once")
        other = await enqueue(s, "noop", {"n": 3}, tenant_id=tenant)
    async with db.tenant_session(tenant) as s:
        jobs = {j.id: j.payload for j in await s.scalars(select(Job))}
    assert first == again != other
    assert jobs == {first: {"n": 1}, other: {"n": 3}}


async def test_a_rolled_back_transaction_leaves_no_job(db: Database):
    async with db.system_session() as s:
        tenant = await create_tenant(s)
    try:
        async with db.tenant_session(tenant) as s:
            await enqueue(s, "noop", {}, tenant_id=tenant)
            raise RuntimeError("the cause failed")
    except RuntimeError:
        pass
    async with db.tenant_session(tenant) as s:
        assert await s.scalar(select(func.count()).select_from(Job)) == 0


async def test_bulk_enqueue_takes_one_time_for_all_or_one_per_job(db: Database):
    async with db.system_session() as s:
        tenant = await create_tenant(s)
    at = datetime(2030, 1, 1, 9, tzinfo=UTC)
    each = [at, at + timedelta(minutes=10), None]
    async with db.tenant_session(tenant) as s:
        same = await enqueue_many(s, "noop", [{}, {}], tenant_id=tenant, run_at=at)
        own = await enqueue_many(s, "noop", [{}, {}, {}], tenant_id=tenant, run_at=each)
        with pytest.raises(ValueError, match="one run_at per payload"):
            await enqueue_many(s, "noop", [{}, {}], tenant_id=tenant, run_at=each)
        times = dict((await s.execute(select(Job.id, Job.run_at))).all())
        now = await s.scalar(select(func.now()))
    assert [times[j] for j in same] == [at, at]
    assert [times[j] for j in own[:2]] == each[:2] and times[own[2]] == now
