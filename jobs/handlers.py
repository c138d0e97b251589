"""The platform's job handlers: each decodes its job and calls one service. Later capabilities
add theirs here or in modules of their own listed in settings.job_modules."""

from __future__ import annotations

import uuid

from jobs.registry import JobContext, handler
from services import sending


@handler("noop")
async def noop(job: JobContext) -> None:
    """Does nothing: health probes and benchmarks of the queue itself."""


@handler("plan_campaign")
async def plan_campaign(job: JobContext) -> None:
    async with job.db.tenant_session(job.tenant_id) as session:
        await sending.plan_campaign(session, uuid.UUID(job.payload["campaign_id"]))


@handler(sending.SEND_KIND)
async def send_step(job: JobContext) -> None:
    await sending.send_step(job.db, job.settings, job.redis, job.tenant_id, job.payload)
