"""Jobs through the whole durable path: Postgres → queuer → Redis → Dramatiq worker → Postgres."""

from __future__ import annotations

import asyncio
import itertools
import uuid

from sqlalchemy import func, select, text

from jobs.queue import enqueue, enqueue_many
from models.queue import Job, JobLog, JobStatus
from models.sessions import Database
from penguinmails.settings import Settings
from tests.factories import create_tenant
from tests.jobs.helpers import statuses, wait_for


async def test_jobs_run_once_each_and_are_recorded_with_logs(
    db: Database, effects, start_worker, run_queuer
) -> None:
    async with db.system_session() as s:
        tenant = await create_tenant(s)
    async with db.tenant_session(tenant) as s:
        ids = await enqueue_many(
            s, "effect", [{"key": f"e2e-{uuid.uuid4()}"} for _ in range(300)], tenant_id=tenant
        )
    start_worker()
    run_queuer()

    async def all_succeeded():
        return (await statuses(db, ids)).get("succeeded") == len(ids)

    await wait_for(all_succeeded)
    async with db.system_session() as s:
        runs = await s.scalar(
            text("SELECT count(*) FROM public.test_effect_runs WHERE job_id = ANY(:ids)"),
            {"ids": ids},
        )
        logs = await s.scalar(
            select(func.count())
            .select_from(JobLog)
            .where(JobLog.job_id.in_(ids), JobLog.status == JobStatus.SUCCEEDED)
        )
    assert runs == logs == len(ids)


async def test_a_failing_job_backs_off_and_is_dead_after_max_attempts_with_a_log_each_time(
    db: Database, start_worker, run_queuer
) -> None:
    async with db.system_session() as s:
        tenant = await create_tenant(s)
    async with db.tenant_session(tenant) as s:
        failing = await enqueue(s, "always_fails", {}, tenant_id=tenant, max_attempts=3)
        permanent = await enqueue(s, "fails_permanently", {}, tenant_id=tenant, max_attempts=3)
        unknown = await enqueue(s, "no_such_kind", {}, tenant_id=tenant, max_attempts=3)
    start_worker()
    run_queuer()

    async def all_dead():
        return (await statuses(db, [failing, permanent, unknown])).get("dead") == 3

    await wait_for(all_dead)
    async with db.system_session("queue") as s:
        logs = {
            job: [
                (row.attempt, row.status.value)
                for row in await s.scalars(
                    select(JobLog).where(JobLog.job_id == job).order_by(JobLog.attempt)
                )
            ]
            for job in (failing, permanent, unknown)
        }
        job = await s.get(Job, failing)
        times = list(
            await s.scalars(
                select(JobLog.at).where(JobLog.job_id == failing).order_by(JobLog.attempt)
            )
        )
    assert logs[failing] == [(1, "failed"), (2, "failed"), (3, "dead")]
    assert logs[permanent] == [(1, "dead")] and logs[unknown] == [(1, "dead")]
    assert job.attempts == 3 and "failure on attempt 3" in job.last_error
    assert all(later > earlier for earlier, later in itertools.pairwise(times))


async def test_a_deferred_job_runs_again_later_without_using_an_attempt(
    db: Database, effects, start_worker, run_queuer
) -> None:
    async with db.system_session() as s:
        tenant = await create_tenant(s)
    async with db.tenant_session(tenant) as s:
        job_id = await enqueue(
            s, "defer_once", {"key": f"defer-{uuid.uuid4()}"}, tenant_id=tenant, max_attempts=1
        )
    start_worker()
    run_queuer()

    async def succeeded():
        return (await statuses(db, [job_id])).get("succeeded") == 1

    await wait_for(succeeded)
    async with db.system_session("queue") as s:
        job = await s.get(Job, job_id)
        logs = [
            (row.attempt, row.status.value)
            for row in await s.scalars(
                select(JobLog).where(JobLog.job_id == job_id).order_by(JobLog.id)
            )
        ]
    assert job.attempts == 1  # max_attempts 1, yet it ran twice: the deferral was free
    assert logs == [(1, "queued"), (1, "succeeded")]


async def test_a_job_that_ends_leaves_none_of_the_runners_waiters_pending(
    settings: Settings,
) -> None:
    """A job's run waits on the worker stopping and on its lease being lost; once the job ends
    neither wait may be left pending (a pending task dropped by the collector is an asyncio
    error in the worker's log)."""
    from jobs.runner import Runner

    runner = Runner(settings)
    runner._stopping = asyncio.Event()
    result = await runner._cut_short(asyncio.sleep(0, result=7), asyncio.Event())
    await asyncio.sleep(0)  # cancelled waiters finish on the next turn

    assert result == (7, None)
    waiting = [t for t in asyncio.all_tasks() if "Event.wait" in repr(t.get_coro())]
    assert waiting == []
