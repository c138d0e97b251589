"""The scheduler process: periodic tasks on APScheduler, starting with the queue's upkeep."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select

from jobs import scheduler
from models.content import EmailMessage
from models.queue import Job, JobLog, JobStatus
from models.sessions import Database
from penguinmails.settings import Settings
from tests.factories import written_messages


def _ago(**delta) -> datetime:
    return datetime.now(UTC) - timedelta(**delta)


async def test_the_queue_upkeep_is_registered() -> None:
    names = {p.name for p in scheduler.registered()}
    assert {"recover_leases", "prune_job_logs"} <= names


async def test_expired_leases_come_back_as_queued_with_a_log_and_only_a_run_uses_an_attempt(
    db: Database, settings: Settings
) -> None:
    async with db.system_session("queue") as s:
        job_id = await s.scalar(
            insert(Job)
            .values(
                kind="noop",
                status=JobStatus.DISPATCHED,
                attempts=1,
                lease_until=_ago(minutes=1),
            )
            .returning(Job.id)
        )
        ran = await s.scalar(
            insert(Job)
            .values(kind="noop", status=JobStatus.RUNNING, attempts=1, lease_until=_ago(minutes=1))
            .returning(Job.id)
        )
        spent = await s.scalar(
            insert(Job)
            .values(
                kind="noop",
                status=JobStatus.RUNNING,
                attempts=3,
                max_attempts=3,
                lease_until=_ago(minutes=1),
            )
            .returning(Job.id)
        )
    assert await scheduler.recover_leases(settings) >= 3
    async with db.system_session("queue") as s:
        back, again = await s.get(Job, job_id), await s.get(Job, ran)
        dead = await s.get(Job, spent)
        logs = dict(
            (
                await s.execute(
                    select(JobLog.job_id, JobLog.status).where(
                        JobLog.job_id.in_([job_id, ran, spent])
                    )
                )
            ).all()
        )
    # Dispatched, never started: it only waited, and gets its attempt back.
    assert (back.status, back.attempts, back.lease_until) == (JobStatus.QUEUED, 0, None)
    assert (again.status, again.attempts) == (JobStatus.QUEUED, 1)  # it ran: the attempt is used
    assert dead.status == JobStatus.DEAD
    assert {k: v.value for k, v in logs.items()} == {job_id: "queued", ran: "failed", spent: "dead"}


async def test_job_logs_older_than_the_retention_are_pruned(
    db: Database, settings: Settings
) -> None:
    old, recent = uuid.uuid4(), uuid.uuid4()
    async with db.system_session("queue") as s:
        await s.execute(
            insert(JobLog),
            [
                {
                    "job_id": old,
                    "attempt": 1,
                    "status": JobStatus.SUCCEEDED,
                    "at": _ago(days=settings.job_log_retention_days + 1),
                },
                {"job_id": recent, "attempt": 1, "status": JobStatus.SUCCEEDED},
            ],
        )
    await scheduler.prune_job_logs(settings)
    async with db.system_session("queue") as s:
        left = set(await s.scalars(select(JobLog.job_id).where(JobLog.job_id.in_([old, recent]))))
    assert left == {recent}


async def test_message_bodies_past_the_content_retention_setting_are_dropped_hourly(
    db: Database, settings: Settings
) -> None:
    [task] = [p for p in scheduler.registered() if p.name == "drop_old_message_bodies"]
    assert task.interval(settings) == 3600
    old, recent = await written_messages(db, [11, 9])

    await task.task(settings.model_copy(update={"content_retention_days": 10}))

    async with db.system_session("content") as s:
        bodies = dict(
            (
                await s.execute(
                    select(EmailMessage.id, EmailMessage.body_compressed).where(
                        EmailMessage.id.in_([old, recent])
                    )
                )
            ).all()
        )
    assert bodies[old] is None and bodies[recent] is not None


async def test_the_scheduler_runs_registered_tasks_until_stopped(settings: Settings) -> None:
    ran = asyncio.Event()

    async def tick(_: Settings) -> None:
        ran.set()

    item = scheduler.Periodic("tick", 0.1, tick)
    scheduler._periodic.append(item)
    stop = asyncio.Event()
    try:
        task = asyncio.create_task(scheduler.run_scheduler(settings, stop))
        await asyncio.wait_for(ran.wait(), 5)
        stop.set()
        await asyncio.wait_for(task, 5)
    finally:
        scheduler._periodic.remove(item)
    assert task.done() and task.exception() is None
