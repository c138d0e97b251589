"""The queuer: what it claims from Postgres, in which order, and what it leaves in Redis.

Most tests drive `Queuer.round` by hand on a connection of their own (no worker), then read
back what an operator would see: `queue.jobs` rows, `job_logs` rows, and the Dramatiq messages
waiting in Redis (`{namespace}:{tier}` lists of message ids, bodies in `{namespace}:{tier}.msgs`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import func, select, update

from jobs.queue import cancel, cancel_campaign, enqueue, enqueue_many
from jobs.queuer import Queuer, recover_expired_leases
from models.queue import Job
from models.sessions import Database
from models.tenancy import Tenant, TenantStatus
from penguinmails.settings import Settings
from tests.factories import create_tenant
from tests.jobs.helpers import (
    LEASE_EXPIRED,
    LEASE_EXPIRED_WAITING,
    effect_runs,
    forget_redis,
    job_rows,
    logs_of,
    messages_in_redis,
    quiet_queue,
    redis_client,
    refs_in_redis,
    statuses,
    wait_for,
)

# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
async def _quiet(db: Database, queue_settings: Settings) -> AsyncIterator[None]:
    await quiet_queue(db, queue_settings)
    yield
    await quiet_queue(db, queue_settings)


@pytest.fixture
async def tenant(db: Database) -> uuid.UUID:
    async with db.system_session() as s:
        return await create_tenant(s)


def queuer(settings: Settings, **overrides) -> Queuer:
    return Queuer(settings.model_copy(update=overrides))


async def dispatched(db: Database, ids: list[uuid.UUID]) -> set[uuid.UUID]:
    return {i for i, job in (await job_rows(db, ids)).items() if job.status.value == "dispatched"}


# --- claim order and scheduling ------------------------------------------------------------


async def test_jobs_are_claimed_by_priority_then_age_into_the_queue_of_their_tier(
    db: Database, queue_settings: Settings, conn, tenant
) -> None:
    now = datetime.now(UTC)
    # (name, priority, age); enqueued in an order that is neither the expected one nor its reverse.
    specs = [
        ("normal, newer", 100, timedelta(minutes=5)),
        ("bulk", 300, timedelta(minutes=90)),
        ("urgent, newer", 10, timedelta(minutes=10)),
        ("normal, oldest", 100, timedelta(minutes=60)),
        ("urgent, older", 10, timedelta(minutes=50)),
    ]
    names: dict[uuid.UUID, str] = {}
    async with db.tenant_session(tenant) as s:
        for name, priority, age in specs:
            job = await enqueue(
                s, "noop", {}, tenant_id=tenant, priority=priority, run_at=now - age
            )
            names[job] = name
    one_at_a_time = queuer(queue_settings, queue_claim_batch=1)

    order = []
    for _ in specs:
        before = await dispatched(db, list(names))
        assert await one_at_a_time.round(conn) == 1
        (claimed,) = await dispatched(db, list(names)) - before
        order.append(names[claimed])

    assert order == ["urgent, older", "urgent, newer", "normal, oldest", "normal, newer", "bulk"]
    assert await one_at_a_time.round(conn) == 0
    assert sorted((names[job], tier, attempt) for tier, job, attempt in refs_in_redis(queue_settings)) == [
        ("bulk", "low", 1),
        ("normal, newer", "normal", 1),
        ("normal, oldest", "normal", 1),
        ("urgent, newer", "high", 1),
        ("urgent, older", "high", 1),
    ]  # fmt: skip


async def test_a_job_scheduled_in_the_future_is_not_claimed_until_it_is_due(
    db: Database, queue_settings: Settings, conn, tenant
) -> None:
    due = datetime.now(UTC) + timedelta(seconds=2)
    async with db.tenant_session(tenant) as s:
        ready = await enqueue(s, "noop", {}, tenant_id=tenant)
        later = await enqueue(s, "noop", {}, tenant_id=tenant, run_at=due)
    q = queuer(queue_settings)

    assert await q.round(conn) == 1
    assert await dispatched(db, [ready, later]) == {ready}
    assert [job for _, job, _ in refs_in_redis(queue_settings)] == [ready]

    async def later_is_claimed():
        await q.round(conn)
        return later in await dispatched(db, [later])

    await wait_for(later_is_claimed, within=15, every=0.05)
    job = (await job_rows(db, [later]))[later]
    assert job.updated_at >= due and job.attempts == 1
    assert sorted(job for _, job, _ in refs_in_redis(queue_settings)) == sorted([ready, later])


# --- concurrency ---------------------------------------------------------------------------


async def test_two_queuers_racing_over_10000_jobs_dispatch_each_exactly_once_per_attempt(
    db: Database, queue_settings: Settings, run_queuer, tenant
) -> None:
    count = 10_000
    # No workers: every message stays in Redis to be counted. Leases long enough not to expire
    # (and be re-dispatched) while the test reads; room for every message (no backpressure).
    race = {
        "queue_claim_batch": 250,
        "queue_lease_seconds": 600.0,
        "queue_max_messages_per_tier": count,
    }
    first, second = run_queuer(**race), run_queuer(**race)
    await asyncio.wait_for(
        asyncio.gather(first.listening.wait(), second.listening.wait()), timeout=30
    )
    async with db.tenant_session(tenant) as s:  # NOTIFY wakes both at once
        ids = await enqueue_many(s, "noop", [{"n": n} for n in range(count)], tenant_id=tenant)

    async def all_dispatched():
        return (await statuses(db, ids)).get("dispatched") == count

    await wait_for(all_dispatched, within=60)

    assert first.dispatched > 0 and second.dispatched > 0, "both queuers took part in the race"
    assert first.dispatched + second.dispatched == count
    async with db.system_session("queue") as s:
        attempts = dict(
            (await s.execute(
                select(Job.attempts, func.count()).where(Job.id.in_(ids)).group_by(Job.attempts)
            )).all()
        )  # fmt: skip
    assert attempts == {1: count}
    refs = refs_in_redis(queue_settings)
    assert Counter(job for _, job, _ in refs) == Counter(ids)  # every job once, none twice
    assert {(tier, attempt) for tier, _, attempt in refs} == {("normal", 1)}
    assert all(
        len(message.args[0]) <= queue_settings.queue_jobs_per_message
        for _, message in messages_in_redis(queue_settings)
    )


# --- leases --------------------------------------------------------------------------------


async def test_a_job_whose_message_was_lost_before_it_started_comes_back_without_using_an_attempt(
    db: Database, queue_settings: Settings, conn, tenant, effects, start_worker
) -> None:
    async with db.tenant_session(tenant) as s:
        job = await enqueue(s, "effect", {"key": f"lease-{uuid.uuid4()}"}, tenant_id=tenant)
    q = queuer(queue_settings, queue_lease_seconds=1.0)
    assert await q.round(conn) == 1  # attempt 1 goes to Redis; no worker is there to take it
    forget_redis(queue_settings)  # ... and Redis loses it: nothing renews its lease any more

    await wait_for(lambda: recover_expired_leases(conn), within=15)
    row = (await job_rows(db, [job]))[job]
    assert (row.status.value, row.attempts, row.last_error) == ("queued", 0, LEASE_EXPIRED_WAITING)
    assert (await logs_of(db, [job]))[job] == [(1, "queued", LEASE_EXPIRED_WAITING)]

    start_worker()
    assert await q.round(conn) == 1  # attempt 1 again: waiting used none

    async def succeeded():
        return (await statuses(db, [job])).get("succeeded") == 1

    await wait_for(succeeded, within=30)
    assert (await logs_of(db, [job]))[job] == [
        (1, "queued", LEASE_EXPIRED_WAITING),
        (1, "succeeded", None),
    ]
    assert await effect_runs(db, [job]) == [(job, 1)]


async def test_a_job_whose_message_waits_in_redis_keeps_its_lease_while_the_queuer_runs(
    db: Database, queue_settings: Settings, conn, tenant
) -> None:
    async with db.tenant_session(tenant) as s:
        job = await enqueue(s, "noop", {}, tenant_id=tenant)
    q = queuer(queue_settings, queue_lease_seconds=1.0)
    assert await q.round(conn) == 1  # no worker takes it: it waits in the tier's list
    for _ in range(10):  # 3 s: three leases' worth
        await asyncio.sleep(0.3)
        await q.round(conn)
    assert await recover_expired_leases(conn) == 0
    row = (await job_rows(db, [job]))[job]
    assert (row.status.value, row.attempts) == ("dispatched", 1)
    assert [ref for _, ref, _ in refs_in_redis(queue_settings)] == [job]


async def test_a_tier_whose_list_is_full_is_not_claimed_for_while_the_others_are(
    db: Database, queue_settings: Settings, conn, tenant
) -> None:
    async with db.tenant_session(tenant) as s:
        urgent = await enqueue_many(s, "noop", [{}] * 4, tenant_id=tenant, priority=10)
        bulk = await enqueue_many(s, "noop", [{}] * 4, tenant_id=tenant, priority=300)
    # One message of one job per tier may wait; no worker takes any.
    q = queuer(queue_settings, queue_max_messages_per_tier=1, queue_jobs_per_message=1)
    assert await q.round(conn) == 2  # one of each tier
    assert await q.round(conn) == 0  # both lists are full: nothing more is claimed
    assert await statuses(db, urgent) == {"dispatched": 1, "queued": 3}
    assert await statuses(db, bulk) == {"dispatched": 1, "queued": 3}
    client = redis_client(queue_settings)
    try:  # a worker takes the high tier's message: that tier has room again, the low one not
        client.delete(f"{queue_settings.redis_namespace}:high")
    finally:
        client.close()
    assert await q.round(conn) == 1
    assert await statuses(db, urgent) == {"dispatched": 2, "queued": 2}
    assert await statuses(db, bulk) == {"dispatched": 1, "queued": 3}


LOSE_LEASE = """
WITH lost AS (UPDATE queue.jobs SET lease_until = now() - interval '1 second'
              WHERE id = $1 AND status = 'running' RETURNING id)
SELECT count(*) FROM lost
"""


async def test_a_job_whose_lease_ran_out_while_it_ran_is_cut_short_and_runs_once_more(
    db: Database, queue_settings: Settings, conn, tenant, effects, start_worker
) -> None:
    """As if its worker had stalled past its lease: the job goes back to the queue while the
    old run still sleeps. The old run's next heartbeat finds the job no longer its own and cuts
    it short before its side effect; the job runs once more, as attempt 2, and only that run
    has an effect."""
    async with db.tenant_session(tenant) as s:
        job = await enqueue(
            s, "effect", {"key": f"lost-{uuid.uuid4()}", "sleep": 6}, tenant_id=tenant
        )
    q = queuer(queue_settings)
    start_worker()
    assert await q.round(conn) == 1

    async def running() -> bool:
        return (await statuses(db, [job])).get("running") == 1

    await wait_for(running, within=30, every=0.05)

    async def lease_lost_and_recovered() -> bool:  # (a heartbeat may renew it in between)
        return await conn.fetchval(LOSE_LEASE, job) == 1 and await recover_expired_leases(conn) == 1

    await wait_for(lease_lost_and_recovered, within=10, every=0.01)
    await asyncio.sleep(2)  # the old run's next heartbeat (every second here) cuts it short
    assert await q.round(conn) == 1  # attempt 2

    async def succeeded():
        return (await statuses(db, [job])).get("succeeded") == 1

    await wait_for(succeeded, within=30)
    assert await effect_runs(db, [job]) == [(job, 2)]  # the first run was cut before its effect


# --- suspended tenants ---------------------------------------------------------------------


async def set_tenant_status(db: Database, tenant: uuid.UUID, status: TenantStatus) -> None:
    async with db.system_session() as s:
        await s.execute(update(Tenant).where(Tenant.id == tenant).values(status=status))


async def test_a_suspended_tenants_jobs_wait_in_postgres_while_other_tenants_jobs_are_dispatched(
    db: Database, queue_settings: Settings, conn, tenant
) -> None:
    async with db.system_session() as s:
        suspended = await create_tenant(s, "Suspended")
    async with db.tenant_session(suspended) as s:
        waiting = await enqueue_many(s, "noop", [{}] * 3, tenant_id=suspended, priority=10)
    async with db.tenant_session(tenant) as s:
        going = await enqueue_many(s, "noop", [{}] * 3, tenant_id=tenant, priority=200)
    await set_tenant_status(db, suspended, TenantStatus.SUSPENDED)
    q = queuer(queue_settings)

    assert await q.round(conn) == 3
    assert await statuses(db, waiting) == {"queued": 3}
    assert await statuses(db, going) == {"dispatched": 3}
    assert {job for _, job, _ in refs_in_redis(queue_settings)} == set(going)

    await set_tenant_status(db, suspended, TenantStatus.ACTIVE)

    async def reactivated_jobs_are_dispatched():
        await q.round(conn)
        return (await statuses(db, waiting)) == {"dispatched": 3}

    await wait_for(reactivated_jobs_are_dispatched, within=20, every=0.2)
    assert {job for _, job, _ in refs_in_redis(queue_settings)} == set(going) | set(waiting)


# --- cancellation --------------------------------------------------------------------------


async def test_a_cancelled_job_never_runs_even_when_it_was_already_dispatched(
    db: Database, queue_settings: Settings, conn, tenant, effects, start_worker
) -> None:
    campaign, other_campaign = uuid.uuid4(), uuid.uuid4()

    def effect(label: str) -> dict:
        return {"key": f"cancel-{label}-{uuid.uuid4()}"}

    async with db.tenant_session(tenant) as s:
        before_dispatch = await enqueue(s, "effect", effect("early"), tenant_id=tenant)
        in_flight = await enqueue(s, "effect", effect("in-flight"), tenant_id=tenant)
        kept = await enqueue(s, "effect", effect("kept"), tenant_id=tenant)
        campaign_ready = [
            await enqueue(s, "effect", effect("c"), tenant_id=tenant, campaign_id=campaign)
            for _ in range(2)
        ]
        campaign_scheduled = await enqueue(
            s, "effect", effect("c-later"), tenant_id=tenant, campaign_id=campaign,
            run_at=datetime.now(UTC) + timedelta(hours=1),
        )  # fmt: skip
        other = await enqueue(
            s, "effect", effect("other"), tenant_id=tenant, campaign_id=other_campaign
        )
    campaign_jobs = [*campaign_ready, campaign_scheduled]
    async with db.tenant_session(tenant) as s:
        assert await cancel(s, before_dispatch)

    # One round: the five ready jobs go out together, in one message of the normal tier.
    assert await queuer(queue_settings, queue_lease_seconds=600.0).round(conn) == 5
    assert await dispatched(db, [in_flight, kept, other, *campaign_ready]) == {
        in_flight, kept, other, *campaign_ready
    }  # fmt: skip
    assert len(messages_in_redis(queue_settings)) == 1
    async with db.tenant_session(tenant) as s:
        assert await cancel(s, in_flight)
        assert await cancel_campaign(s, campaign) == 3  # two dispatched, one scheduled

    start_worker()

    async def survivors_succeeded():
        return (await statuses(db, [kept, other])) == {"succeeded": 2}

    await wait_for(survivors_succeeded, within=30)  # the message is done: fencing has happened
    cancelled = [before_dispatch, in_flight, *campaign_jobs]
    assert await statuses(db, cancelled) == {"cancelled": len(cancelled)}
    assert sorted(job for job, _ in await effect_runs(db, [*cancelled, kept, other])) == sorted(
        [kept, other]
    )
    logs = await logs_of(db, cancelled)
    assert all(entries == [] for entries in logs.values())
    async with db.tenant_session(tenant) as s:
        assert not await cancel(s, kept)  # a finished job cannot be cancelled
    assert await statuses(db, [kept]) == {"succeeded": 1}


# --- poison messages -----------------------------------------------------------------------


async def test_a_poison_message_does_not_stop_the_worker_from_processing_the_next_jobs(
    db: Database, queue_settings: Settings, conn, tenant, effects, start_worker
) -> None:
    broker = RedisBroker(url=queue_settings.redis_url, namespace=queue_settings.redis_namespace)
    poison_args = [
        ("garbage",),
        ([["not-a-uuid", 1]],),
        ([[str(uuid.uuid4()), "one"]],),
        ([None],),
        (),
    ]
    try:
        for args in poison_args:
            broker.enqueue(
                dramatiq.Message(queue_name="normal", actor_name="run_normal", args=args,
                                 kwargs={}, options={})
            )  # fmt: skip
    finally:
        broker.close()
    async with db.tenant_session(tenant) as s:
        ids = await enqueue_many(
            s, "effect", [{"key": f"after-poison-{uuid.uuid4()}"} for _ in range(20)],
            tenant_id=tenant,
        )  # fmt: skip
    assert await queuer(queue_settings, queue_lease_seconds=600.0).round(conn) == 20  # behind them

    worker = start_worker(processes=1, threads=1)

    async def all_succeeded():
        return (await statuses(db, ids)).get("succeeded") == len(ids)

    await wait_for(all_succeeded, within=30)
    assert worker.proc.poll() is None, worker.log.read_text()
    assert len(await effect_runs(db, ids)) == len(ids)
    # Logged, then dropped (no Retries middleware: retries are Postgres's), not redelivered.
    assert worker.log.read_text().count("Failed to process message run_normal") == len(poison_args)
    assert messages_in_redis(queue_settings) == []


# --- backpressure --------------------------------------------------------------------------


@pytest.mark.slow
async def test_backpressure_keeps_dispatched_jobs_from_outliving_their_lease(
    db: Database, tenant, effects, start_worker, run_queuer
) -> None:
    async with db.tenant_session(tenant) as s:
        ids = await enqueue_many(
            s, "effect", [{"key": f"bp-{uuid.uuid4()}", "sleep": 0.002} for _ in range(5000)],
            tenant_id=tenant,
        )  # fmt: skip
    start_worker(processes=2)  # each takes only the messages it can start at once
    run_queuer(queue_max_messages_per_tier=2)  # at most 2 messages of 50 jobs wait per tier

    async def all_succeeded():
        return (await statuses(db, ids)).get("succeeded") == len(ids)

    await wait_for(all_succeeded, within=120)
    logs = await logs_of(db, ids)
    expired = [
        job
        for job, log in logs.items()
        if any(message in (LEASE_EXPIRED, LEASE_EXPIRED_WAITING) for *_, message in log)
    ]
    assert expired == []  # no job waited past its lease in a run where nothing failed
    assert {attempt for log in logs.values() for attempt, *_ in log} == {1}
