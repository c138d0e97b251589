"""Driving the VPS state machine from a test: each step's job, as the queue holds it, run by its
handler in this process as a worker runs it (the crash tests use real worker processes)."""

from __future__ import annotations

import uuid

from redis.asyncio import Redis
from sqlalchemy import select, update

import jobs.handlers  # noqa: F401  (registers the platform's handlers)
from jobs.registry import DeferJob, JobContext, handler_for
from models.infrastructure import VpsInstance, VpsStatus
from models.queue import Job
from models.sessions import Database
from penguinmails.settings import Settings
from services import provisioning


async def status_of(db: Database, tenant: uuid.UUID, vps_id: uuid.UUID) -> VpsInstance:
    async with db.tenant_session(tenant) as s:
        return await s.get_one(VpsInstance, vps_id)


async def queued_job(db: Database, tenant: uuid.UUID, kind: str, **payload: str) -> Job:
    """The newest job of `kind` whose payload holds `payload`."""
    async with db.tenant_session(tenant) as s:
        jobs = [
            job
            for job in await s.scalars(
                select(Job).where(Job.kind == kind).order_by(Job.created_at.desc())
            )
            if all(job.payload.get(k) == v for k, v in payload.items())
        ]
    assert jobs, f"no {kind} job with {payload} was queued"
    return jobs[0]


async def run_job(
    db: Database, settings: Settings, redis: Redis, job: Job, attempt: int = 1
) -> BaseException | None:
    """Runs the job's handler; what it raised (DeferJob: it waits), or None."""
    handler = handler_for(job.kind)
    assert handler is not None, job.kind
    context = JobContext(
        job.id, job.kind, job.tenant_id, job.payload, attempt, job.max_attempts, db, settings,
        redis,
    )  # fmt: skip
    try:
        await handler(context)
    except Exception as error:
        return error
    return None


async def run_step(
    db: Database, settings: Settings, redis: Redis, tenant: uuid.UUID, vps_id: uuid.UUID
) -> VpsStatus:
    """Runs the queued job of the VPS's current step until the VPS leaves it (a step that waits
    is run again: at most 20 times); returns the new status."""
    vps = await status_of(db, tenant, vps_id)
    step = VpsStatus.PROVISIONING if vps.status == VpsStatus.REQUESTED else vps.status
    job = await queued_job(db, tenant, provisioning.KIND, vps_id=str(vps_id), step=step.value)
    for _ in range(20):
        raised = await run_job(db, settings, redis, job)
        now = (await status_of(db, tenant, vps_id)).status
        if now not in (step, VpsStatus.REQUESTED):
            async with db.system_session("queue") as s:  # as the worker records it
                await s.execute(update(Job).where(Job.id == job.id).values(status="succeeded"))
            return now
        assert isinstance(raised, DeferJob), f"{step}: {raised!r}"
    raise AssertionError(f"{step} never ended")
