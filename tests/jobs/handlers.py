"""Job handlers for the queue's tests (workers import them through PENGUINMAILS_JOB_MODULES).

`effect` records its side effect under a unique key and every execution separately, so a test
can tell a duplicate execution (runs > effects) from a lost job (no effect)."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from jobs.registry import DeferJob, JobContext, PermanentJobError, handler

EFFECT_TABLES = """
CREATE TABLE IF NOT EXISTS public.test_effects (key text PRIMARY KEY, job_id uuid NOT NULL);
CREATE TABLE IF NOT EXISTS public.test_effect_runs (job_id uuid NOT NULL, attempt int NOT NULL,
                                                    at timestamptz NOT NULL DEFAULT now());
"""


@handler("effect")
async def effect(job: JobContext) -> None:
    if seconds := job.payload.get("sleep"):
        await asyncio.sleep(seconds)
    async with job.db.system_session() as session:
        await session.execute(
            text("INSERT INTO public.test_effect_runs (job_id, attempt) VALUES (:j, :a)"),
            {"j": job.id, "a": job.attempt},
        )
        await session.execute(
            text(
                "INSERT INTO public.test_effects (key, job_id) VALUES (:k, :j) ON CONFLICT DO NOTHING"
            ),
            {"k": job.payload["key"], "j": job.id},
        )


@handler("always_fails")
async def always_fails(job: JobContext) -> None:
    raise RuntimeError(f"failure on attempt {job.attempt}")


@handler("fails_permanently")
async def fails_permanently(job: JobContext) -> None:
    raise PermanentJobError("the object is gone")


@handler("defer_once")
async def defer_once(job: JobContext) -> None:
    """Deferred on its first run (as a full rate limit would), then records its effect."""
    if await job.redis.set(f"test:deferred:{job.id}", 1, nx=True, ex=300):
        raise DeferJob(0.1, "rate full")
    await effect(job)
