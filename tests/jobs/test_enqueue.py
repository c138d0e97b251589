"""enqueue: the outbox insert."""

from __future__ import annotations

from sqlalchemy import func, select

from jobs.queue import enqueue
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
