"""Crash safety: a worker killed with SIGKILL, and Redis losing all of the queue's data, in the
middle of 5,000 jobs. Afterwards every job has succeeded exactly once as Postgres records it,
every side effect exists exactly once by its unique key, and a side effect ran twice only where
its outcome was lost before Postgres heard of it (the idempotency key absorbed the repeat)."""

from __future__ import annotations

import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from urllib.parse import urlparse

import pytest
from sqlalchemy import text

from jobs.broker import TIERS
from jobs.queue import enqueue_many
from models.sessions import Database
from penguinmails.settings import Settings
from tests.factories import create_tenant
from tests.jobs.conftest import QUEUE_SETTINGS
from tests.jobs.helpers import (
    LEASE_EXPIRED,
    LEASE_EXPIRED_WAITING,
    database_now,
    effect_runs,
    held_jobs,
    logs_of,
    quiet_queue,
    redis_client,
    seconds_until_started_again,
    statuses,
    wait_for,
)

JOBS = 5_000
PROCESSES, THREADS = 2, 6
# Each tier's list holds at most 2 messages of 20 jobs that no worker has taken, and each worker
# process takes 2 per tier (threads // 3), each started at once: some messages really wait in
# Redis when it loses its data, and a lease expires only where the test broke something.
QUEUER = {"queue_max_messages_per_tier": 2, "queue_jobs_per_message": 20}
PREFETCH = THREADS // 3
RECOVERY_TARGET_SECONDS = 30  # the platform's operating target


@pytest.fixture
def crash_settings(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    """The crash tests run with the default lease (and so its renewals), not the queue tests'
    short one: the recovery they measure is the one an operator gets."""
    monkeypatch.setitem(QUEUE_SETTINGS, "queue_lease_seconds", Settings().queue_lease_seconds)


@pytest.fixture(autouse=True)
async def _quiet(db: Database, queue_settings: Settings) -> AsyncIterator[None]:
    await quiet_queue(db, queue_settings)
    yield
    await quiet_queue(db, queue_settings)


async def enqueue_effects(db: Database, label: str) -> tuple[list[uuid.UUID], set[str]]:
    """5,000 `effect` jobs with unique keys, each 20 ms of work (a batch is still mid-run when
    the test sees it running and kills the worker)."""
    async with db.system_session() as s:
        tenant = await create_tenant(s)
    keys = [f"{label}-{uuid.uuid4()}" for _ in range(JOBS)]
    async with db.tenant_session(tenant) as s:
        ids = await enqueue_many(
            s, "effect", [{"key": k, "sleep": 0.02} for k in keys], tenant_id=tenant
        )
    return ids, set(keys)


def succeeded_at_least(db: Database, ids: list[uuid.UUID], n: int, *, running: bool = False):
    """A predicate for wait_for: n jobs have succeeded (and, with `running`, a batch is mid-run)."""

    async def check():
        now = await statuses(db, ids)
        return now.get("succeeded", 0) >= n and (not running or now.get("running", 0) > 0)

    check.__name__ = f"at_least_{n}_succeeded" + ("_and_a_batch_running" if running else "")
    return check


# Counts the messages waiting in the tier lists and, only when there are some, loses the data in
# the same atomic step: FLUSHALL on the project's embedded Redis, else every key under the
# session's namespace (a Redis that may be shared; the same loss as far as the queue can tell).
LOSE_IF_WAITING = """
local waiting = 0
for i = 1, #KEYS do waiting = waiting + redis.call('LLEN', KEYS[i]) end
if waiting == 0 then return 0 end
if ARGV[1] == 'flushall' then
  redis.call('FLUSHALL')
else
  local keys = redis.call('KEYS', ARGV[2] .. '*')
  for i = 1, #keys, 1000 do
    redis.call('DEL', unpack(keys, i, math.min(i + 999, #keys)))
  end
end
return waiting
"""


def lose_redis_data_while_messages_wait(settings: Settings) -> int:
    """Redis loses all of the queue's data at a moment when messages wait in it; returns how
    many were waiting (0: none waited, nothing was done)."""
    client = redis_client(settings)
    try:
        embedded = urlparse(settings.redis_url).port == settings.embedded_redis_port
        tiers = [f"{settings.redis_namespace}:{tier}" for tier in TIERS]
        how = "flushall" if embedded else "namespace"
        return int(client.eval(LOSE_IF_WAITING, len(tiers), *tiers, how, settings.redis_namespace))
    finally:
        client.close()


async def assert_every_job_succeeded_once(
    db: Database, ids: list[uuid.UUID], keys: set[str], max_repeats: int
) -> int:
    """What an operator checks after the incident; returns how many side effects repeated."""
    assert await statuses(db, ids) == {"succeeded": JOBS}  # none dead, none lost
    async with db.system_session() as s:
        effects = dict(
            (await s.execute(
                text("SELECT key, job_id FROM public.test_effects WHERE job_id = ANY(:ids)"),
                {"ids": ids},
            )).all()
        )  # fmt: skip
    assert set(effects) == keys  # every side effect exactly once (the key is the primary key)
    assert len(set(effects.values())) == JOBS  # by its own job

    runs: dict[uuid.UUID, list[int]] = defaultdict(list)
    for job, attempt in await effect_runs(db, ids):
        runs[job].append(attempt)
    assert set(runs) == set(ids) and sum(map(len, runs.values())) >= JOBS
    logs = await logs_of(db, ids)
    repeated = 0
    print("attempts:", Counter(max(a for a, _, _ in logs[j]) for j in ids), end="; ")
    for job in ids:
        attempts, log = runs[job], logs[job]
        assert len(attempts) == len(set(attempts)), f"{job}: an attempt ran twice (no fencing)"
        succeeded = [attempt for attempt, status, _ in log if status == "succeeded"]
        assert len(succeeded) == 1, f"{job}: {log}"
        assert max(attempts) == succeeded[0], f"{job}: ran {attempts}, logged {log}"
        # An earlier run counts only if its outcome was lost: Postgres knows it as a lease that
        # expired, never as an outcome.
        lost = {attempt for attempt, status, message in log if message == LEASE_EXPIRED}
        assert set(attempts) - {succeeded[0]} <= lost, f"{job}: ran {attempts}, logged {log}"
        repeated += len(attempts) - 1
    assert repeated <= max_repeats
    return repeated


@pytest.mark.slow
async def test_a_worker_killed_with_sigkill_mid_run_loses_no_job_and_repeats_only_unacknowledged_effects(
    db: Database, effects, crash_settings, start_worker, run_queuer
) -> None:
    ids, keys = await enqueue_effects(db, "kill")
    began = time.monotonic()
    worker = start_worker(processes=PROCESSES, threads=THREADS)
    run_queuer(**QUEUER, queue_lease_seconds=Settings().queue_lease_seconds)
    # A batch seen running may end in the moment before the kill (on a loaded machine): then
    # nothing was cut, and the worker is started again and killed again, up to three times.
    for attempt in range(1, 4):
        await wait_for(
            succeeded_at_least(db, ids, 500 * attempt, running=True), within=60, every=0.02
        )
        worker.kill()  # the dramatiq parent and both worker processes, mid-batch
        killed_at = await database_now(db)
        at_kill = await statuses(db, ids)
        if at_kill.get("running", 0) > 0:
            break
        worker = start_worker(processes=PROCESSES, threads=THREADS)
    orphans = await held_jobs(db, ids)
    assert at_kill.get("succeeded", 0) < JOBS, "the run ended before the kill: nothing tested"
    assert at_kill.get("running", 0) > 0, "no batch was mid-run at any kill: nothing tested"
    start_worker(processes=PROCESSES, threads=THREADS)
    recovery = await seconds_until_started_again(db, orphans, killed_at)
    print(
        f"recovery: the last of {len(orphans)} orphaned jobs ran again {recovery:.1f} s after the kill"
    )
    assert recovery < RECOVERY_TARGET_SECONDS
    await wait_for(succeeded_at_least(db, ids, JOBS), within=120, every=0.2)

    # A run repeats only inside a batch that was running when the worker died: at most the
    # messages each process had prefetched, of at most queue_jobs_per_message jobs each.
    repeated = await assert_every_job_succeeded_once(
        db, ids, keys, max_repeats=PROCESSES * PREFETCH * QUEUER["queue_jobs_per_message"]
    )
    print(
        f"kill -9 at {at_kill} (attempt {attempt}); {repeated} repeated side effects; "
        f"{time.monotonic() - began:.1f}s"
    )


@pytest.mark.slow
async def test_redis_losing_all_queue_data_mid_run_loses_no_job_and_repeats_no_effect(
    db: Database, queue_settings: Settings, effects, crash_settings, start_worker, run_queuer
) -> None:
    ids, keys = await enqueue_effects(db, "flush")
    began = time.monotonic()
    worker = start_worker(processes=PROCESSES, threads=THREADS)
    run_queuer(**QUEUER)
    await wait_for(succeeded_at_least(db, ids, 500), within=60, every=0.02)
    waiting = 0

    async def redis_lost_its_data_with_messages_waiting():
        nonlocal waiting
        waiting = lose_redis_data_while_messages_wait(queue_settings)
        return waiting > 0

    await wait_for(redis_lost_its_data_with_messages_waiting, within=60, every=0.005)
    at_loss = await statuses(db, ids)
    assert at_loss.get("succeeded", 0) < JOBS, "the run ended before the loss: nothing tested"
    assert waiting > 0, "no message was waiting in Redis: nothing was lost"
    await wait_for(succeeded_at_least(db, ids, JOBS), within=120, every=0.2)

    assert worker.proc.poll() is None, worker.log.read_text()
    # No process died, so no outcome was lost: the lost messages' jobs ran once, on a new
    # attempt after their lease, and the messages still held by the workers were fenced off.
    repeated = await assert_every_job_succeeded_once(db, ids, keys, max_repeats=0)
    logs = await logs_of(db, ids)
    came_back = sum(
        1
        for log in logs.values()
        for *_, message in log
        if message in (LEASE_EXPIRED, LEASE_EXPIRED_WAITING)
    )
    assert came_back > 0, "the lost messages' jobs came back through their leases"
    print(f"{waiting} messages lost", end="; ")
    print(f"Redis data lost at {at_loss}; {repeated} repeats; {time.monotonic() - began:.1f}s")
