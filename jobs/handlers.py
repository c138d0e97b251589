"""The platform's job handlers. Later capabilities add theirs here or in modules of their own
listed in settings.job_modules."""

from __future__ import annotations

from jobs.registry import JobContext, handler


@handler("noop")
async def noop(job: JobContext) -> None:
    """Does nothing: health probes and benchmarks of the queue itself."""
