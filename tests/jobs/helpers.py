"""Helpers of the tests that run real queuers and workers (the queue's, the sending and reply
tests): waiting, reading jobs and logs back, and a quiet queue to start from."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime

import dramatiq
import redis
from sqlalchemy import func, select, text

from jobs.broker import TIERS
from models.content import EmailMessage, MessageStatus
from models.queue import Job, JobLog, JobStatus
from models.sessions import Database
from penguinmails.settings import Settings


async def wait_for(predicate, within: float = 60.0, every: float = 0.2):
    deadline = time.monotonic() + within
    while True:
        value = await predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {predicate.__name__}"
        await asyncio.sleep(every)


async def statuses(db: Database, ids: list[uuid.UUID]) -> dict[str, int]:
    async with db.system_session("queue") as s:
        rows = await s.execute(
            select(Job.status, func.count()).where(Job.id.in_(ids)).group_by(Job.status)
        )
        return {status.value: count for status, count in rows}


LEASE_EXPIRED = "lease expired (worker lost or message lost)"
LEASE_EXPIRED_WAITING = "lease expired before it started (message lost or worker lost)"


def redis_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url)


async def quiet_queue(db: Database, settings: Settings) -> None:
    """No work left over from another test: unfinished jobs cancelled, the session's Redis keys
    gone (other tests share this database and namespace)."""
    async with db.system_session("queue") as s:
        await s.execute(
            text(
                "UPDATE queue.jobs SET status = 'cancelled', lease_until = NULL, finished_at = now()"
                " WHERE status IN ('queued', 'failed', 'dispatched', 'running')"
            )
        )
    forget_redis(settings)


def forget_redis(settings: Settings) -> None:
    """Every key of the session's Redis namespace gone: the queue's messages are lost."""
    client = redis_client(settings)
    try:
        keys = list(client.scan_iter(match=f"{settings.redis_namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def messages_in_redis(settings: Settings) -> list[tuple[str, dramatiq.Message]]:
    """Every Dramatiq message waiting in the tiers' queues, as (tier, message)."""
    client = redis_client(settings)
    found = []
    try:
        for tier in TIERS:
            key = f"{settings.redis_namespace}:{tier}"
            ids = client.lrange(key, 0, -1)
            bodies = client.hgetall(f"{key}.msgs")
            assert set(ids) == set(bodies), f"{tier}: message ids without bodies or vice versa"
            found += [(tier, dramatiq.Message.decode(bodies[i])) for i in ids]
    finally:
        client.close()
    return found


def refs_in_redis(settings: Settings) -> list[tuple[str, uuid.UUID, int]]:
    """Every (tier, job id, attempt) the waiting messages carry."""
    return [
        (tier, uuid.UUID(job_id), attempt)
        for tier, message in messages_in_redis(settings)
        for job_id, attempt in message.args[0]
    ]


async def job_rows(db: Database, ids: list[uuid.UUID]) -> dict[uuid.UUID, Job]:
    async with db.system_session("queue") as s:
        return {job.id: job for job in await s.scalars(select(Job).where(Job.id.in_(ids)))}


async def logs_of(db: Database, ids: list[uuid.UUID]) -> dict[uuid.UUID, list[tuple]]:
    """job id -> [(attempt, status, message)] in the order they were written."""
    async with db.system_session("queue") as s:
        rows = await s.scalars(
            select(JobLog).where(JobLog.job_id.in_(ids)).order_by(JobLog.job_id, JobLog.id)
        )
        logs: dict[uuid.UUID, list[tuple]] = {job_id: [] for job_id in ids}
        for row in rows:
            logs[row.job_id].append((row.attempt, row.status.value, row.message))
        return logs


async def effect_runs(db: Database, ids: list[uuid.UUID]) -> list[tuple[uuid.UUID, int]]:
    async with db.system_session() as s:
        rows = await s.execute(
            text("SELECT job_id, attempt FROM public.test_effect_runs WHERE job_id = ANY(:ids)"),
            {"ids": ids},
        )
        return [(r.job_id, r.attempt) for r in rows]


async def send_jobs(db: Database, tenant: uuid.UUID, campaign_id: uuid.UUID) -> list[Job]:
    """A campaign's send jobs."""
    async with db.tenant_session(tenant, tier="queue") as s:
        return list(
            await s.scalars(
                select(Job).where(Job.campaign_id == campaign_id, Job.kind == "send_step")
            )
        )


def all_sent(db: Database, tenant: uuid.UUID, count: int):
    """A predicate for wait_for: the tenant has `count` messages SENT."""

    async def all_sent() -> bool:
        async with db.tenant_session(tenant, tier="content") as s:
            sent = await s.scalar(
                select(func.count()).where(EmailMessage.status == MessageStatus.SENT)
            )
        return sent == count

    return all_sent


async def held_jobs(db: Database, ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """The jobs a worker holds or is about to (dispatched or running)."""
    async with db.system_session("queue") as s:
        rows = await s.scalars(
            select(Job.id).where(
                Job.id.in_(ids), Job.status.in_([JobStatus.DISPATCHED, JobStatus.RUNNING])
            )
        )
        return set(rows)


async def database_now(db: Database) -> datetime:
    async with db.system_session("queue") as s:
        return await s.scalar(text("SELECT clock_timestamp()"))


async def seconds_until_started_again(
    db: Database, jobs: set[uuid.UUID], since: datetime, within: float = 120
) -> float:
    """Waits until every one of `jobs` has started again after `since` (it is running, or ran
    and ended); the seconds from `since` to the last of those starts, on the database's clock
    (for a job seen only once it had ended, its end: an upper bound)."""
    started: dict[uuid.UUID, datetime] = {}
    deadline = time.monotonic() + within
    while len(started) < len(jobs):
        assert time.monotonic() < deadline, f"{len(jobs) - len(started)} jobs never ran again"
        async with db.system_session("queue") as s:
            rows = await s.execute(
                select(Job.id, Job.updated_at).where(
                    Job.id.in_(jobs - set(started)), Job.updated_at > since,
                    Job.status.in_([JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED]),
                )
            )  # fmt: skip
            started.update(dict(rows.all()))
        await asyncio.sleep(0.1)
    return max((at - since).total_seconds() for at in started.values())
