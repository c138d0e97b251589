"""Runs a batch of dispatched jobs in a worker: fence, run each handler, record the outcomes.

Three statements per batch, whatever its size: start (only the dispatched attempt may run),
then succeeded and failed outcomes, each written with its job_logs rows in one statement.
While the batch runs, a heartbeat renews its jobs' leases every third of `queue_lease_seconds`,
so a job that waits (on a slow server, for a connection) never expires, and a job whose worker
died is claimed again within about one lease.

A job is cut short at `job_timeout_seconds` (a failure: it uses an attempt) or when the worker
shuts down (deferred: it does not). Cutting is cancelling the handler's task and waiting for
it: a handler cleans up on cancellation (the send job records what it sent and releases what
it did not) and a batch handler still returns its per-job results, which then decide: the
send job defers a send that was cut while it waited for a connection (waiting never uses an
attempt), whatever the reason for the cut.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import asyncpg
from redis.asyncio import Redis

from jobs.connections import create_pool
from jobs.registry import (
    DeferJob,
    JobContext,
    PermanentJobError,
    batch_handler_for,
    handler_for,
)
from models.sessions import Database
from models.sqlfiles import statement
from penguinmails import logs
from penguinmails.settings import Settings
from services import live, metrics

log = logging.getLogger("penguinmails.jobs")
T = TypeVar("T")
RUNNER_POOL_MAX = 8


def backoff_seconds(settings: Settings, attempt: int) -> float:
    """Exponential, capped, with equal jitter: half fixed, half random."""
    delay = min(
        settings.job_backoff_max_seconds, settings.job_backoff_base_seconds * 2 ** (attempt - 1)
    )
    return delay / 2 + random.uniform(0, delay / 2)


@dataclass
class Outcome:
    id: uuid.UUID
    attempt: int
    duration_ms: int
    error: str | None = None
    dead: bool = False
    retry_at: datetime | None = None
    deferred: bool = False

    @property
    def name(self) -> str:
        if self.error is None:
            return "succeeded"
        return "deferred" if self.deferred else "dead" if self.dead else "failed"


class WorkerStopping(DeferJob):
    """The worker is shutting down: the job is run again soon, without using an attempt."""

    def __init__(self) -> None:
        super().__init__(1.0, "the worker stopped before the job ended")


class LeaseLost(Exception):
    """The job's lease expired while it ran (its worker stalled): another attempt has it, and
    this one's outcome is fenced off."""


class Runner:
    """One per worker process; the pool is made on first use, inside the actors' event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.model_copy(update={"db_pool_pre_ping": False}))
        self.redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
        self._pool: asyncpg.Pool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            # Start, heartbeat and finish are short statements: a few connections serve them all.
            size = min(self.settings.worker_threads + 2, RUNNER_POOL_MAX)
            self._pool = await create_pool(self.settings, size=size)
        return self._pool

    def stop(self) -> None:
        """Cut every running job short (the worker is shutting down). Thread-safe."""
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)

    async def run(self, refs: list[list]) -> None:
        """`refs` are [job id, attempt] pairs as the queuer dispatched them."""
        if self._stopping is None:
            self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        pool = await self.pool()
        ids = [uuid.UUID(r[0]) for r in refs]
        attempts = [int(r[1]) for r in refs]
        started = await pool.fetch(
            statement("queue.sql", "start_jobs"), ids, attempts, self.settings.queue_lease_seconds
        )
        if not started:
            return
        jobs = [self._context(row) for row in started]
        for row in started:
            metrics.JOB_WAIT.labels(row["kind"]).observe(max(0.0, row["waited"]))
        lost = asyncio.Event()  # set when a renewal finds a job no longer this attempt's
        heartbeat = asyncio.ensure_future(self._heartbeat(pool, jobs, lost))
        try:
            outcomes = await self._run_all(jobs, lost)
        finally:
            heartbeat.cancel()
        kinds = {job.id: job.kind for job in jobs}
        for outcome in outcomes:
            metrics.JOB_RUN.labels(kinds[outcome.id], outcome.name).observe(
                outcome.duration_ms / 1000
            )
        done = [o for o in outcomes if o.error is None]
        failed = [o for o in outcomes if o.error is not None and not o.deferred]
        deferred = [o for o in outcomes if o.deferred]
        async with pool.acquire() as conn:
            for name, outcomes_of, fields in (
                ("finish_succeeded", done, ("id", "attempt", "duration_ms")),
                ("finish_deferred", deferred, ("id", "attempt", "retry_at", "error")),
                ("finish_failed", failed,
                 ("id", "attempt", "retry_at", "error", "dead", "duration_ms")),
            ):  # fmt: skip
                if outcomes_of:  # one statement, one array per column
                    columns = ([getattr(o, field) for o in outcomes_of] for field in fields)
                    await conn.execute(statement("queue.sql", name), *columns)
        # Once per batch, whatever its size: its tenants' queues and campaigns changed.
        await live.publish(self.redis, _changes(started))

    async def _run_all(self, jobs: list[JobContext], lost: asyncio.Event) -> list[Outcome]:
        # The jobs of a batch run side by side (they wait on I/O: SMTP, DNS, Postgres), at most
        # job_concurrency at once, so a batch lasts about its slowest wave, not the sum of all;
        # the jobs of a kind with a batch handler run in one call of it.
        limit = asyncio.Semaphore(self.settings.job_concurrency)
        together: dict[str, list[JobContext]] = {}
        alone: list[JobContext] = []
        for job in jobs:
            if batch_handler_for(job.kind) is not None:
                together.setdefault(job.kind, []).append(job)
            else:
                alone.append(job)

        async def bounded(job: JobContext) -> list[Outcome]:
            async with limit:
                return [await self._run_one(job, lost)]

        groups = await asyncio.gather(
            *(bounded(job) for job in alone),
            *(self._run_batch(kind, batch, lost) for kind, batch in together.items()),
        )
        return [outcome for group in groups for outcome in group]

    async def _heartbeat(
        self, pool: asyncpg.Pool, jobs: list[JobContext], lost: asyncio.Event
    ) -> None:
        """Renews the batch's leases until it ends. A renewal that fails or stalls is tried
        again at the next beat (the lease covers three). A renewal that finds a job no longer
        this attempt's (its lease expired meanwhile and it went back to the queue) sets `lost`:
        the batch is cut short, so that two attempts never run side by side."""
        every = self.settings.queue_lease_seconds / 3
        ids, attempts = [j.id for j in jobs], [j.attempt for j in jobs]
        while True:
            await asyncio.sleep(every)
            try:
                renewed = await pool.fetch(
                    statement("queue.sql", "renew_leases"), ids, attempts,
                    self.settings.queue_lease_seconds, "running", timeout=every,
                )  # fmt: skip
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError, TimeoutError) as e:
                log.warning("could not renew the leases of %d jobs: %s", len(ids), e)
                continue
            if len(renewed) < len(ids):
                log.warning(
                    "%d of %d jobs lost their lease: cut short", len(ids) - len(renewed), len(ids)
                )
                lost.set()
                return

    async def _cut_short(
        self, work: Awaitable[T], lost: asyncio.Event
    ) -> tuple[T | None, BaseException | None]:
        """Runs `work` until it ends, the job timeout passes, its lease is lost or the worker
        stops; cut short, it is cancelled and waited for. Returns its result, or what it ended
        with: its exception, TimeoutError, LeaseLost or WorkerStopping."""
        task = asyncio.ensure_future(work)
        stopping = asyncio.ensure_future(self._stopping.wait())
        losing = asyncio.ensure_future(lost.wait())
        try:
            await asyncio.wait(
                [task, stopping, losing], timeout=self.settings.job_timeout_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )  # fmt: skip
        except asyncio.CancelledError:  # the runner itself is cancelled: the work cleans up first
            task.cancel()
            await asyncio.wait([task])
            raise
        finally:  # neither waiter may outlive this call (a pending task left to the collector)
            stopping.cancel()
            losing.cancel()
        reason: BaseException | None = None
        if not task.done():
            reason = (
                WorkerStopping()
                if self._stopping.is_set()
                else TimeoutError(f"cut short after {self.settings.job_timeout_seconds:g} s")
            )
            task.cancel()
            await asyncio.wait([task])
        if task.cancelled():
            return None, reason
        if task.exception() is not None:
            return None, reason or task.exception()
        return task.result(), reason

    def _context(self, row: asyncpg.Record) -> JobContext:
        payload = row["payload"]
        return JobContext(
            id=row["id"],
            kind=row["kind"],
            tenant_id=row["tenant_id"],
            payload=json.loads(payload) if isinstance(payload, str) else payload,
            attempt=row["attempts"],
            max_attempts=row["max_attempts"],
            ran_before=row["ran_before"],
            db=self.db,
            settings=self.settings,
            redis=self.redis,
        )

    async def _run_one(self, job: JobContext, lost: asyncio.Event) -> Outcome:
        began = time.perf_counter()
        handle = handler_for(job.kind)
        if handle is None:
            error = PermanentJobError(f"no handler for job kind {job.kind!r}")
            return self._failed(job, _ms(began), error)
        with logs.scope(job_id=job.id, tenant_id=job.tenant_id):
            _, error = await self._cut_short(handle(job), lost)
        if error is None:
            return Outcome(job.id, job.attempt, _ms(began))
        return self._failed(job, _ms(began), error)

    async def _run_batch(
        self, kind: str, jobs: list[JobContext], lost: asyncio.Event
    ) -> list[Outcome]:
        began = time.perf_counter()
        errors, failure = await self._cut_short(batch_handler_for(kind)(jobs), lost)
        if errors is None:  # the whole call failed, or ended without results: every job did
            errors = [failure] * len(jobs)
        spent = _ms(began)
        return [
            Outcome(job.id, job.attempt, spent)
            if error is None
            else self._failed(job, spent, error)
            for job, error in zip(jobs, errors, strict=True)
        ]

    def _failed(self, job: JobContext, duration_ms: int, e: BaseException) -> Outcome:
        if isinstance(e, DeferJob):
            later = datetime.now(UTC) + timedelta(seconds=e.seconds)
            return Outcome(
                job.id, job.attempt, duration_ms, f"deferred: {e}", deferred=True, retry_at=later
            )
        dead = isinstance(e, PermanentJobError) or job.attempt >= job.max_attempts
        error = f"{type(e).__name__}: {e}"[:2000]
        with logs.scope(job_id=job.id, tenant_id=job.tenant_id):
            log.warning("job %s (%s) attempt %d failed: %s", job.id, job.kind, job.attempt, error)
        retry_at = (
            None
            if dead
            else datetime.now(UTC) + timedelta(seconds=backoff_seconds(self.settings, job.attempt))
        )
        return Outcome(job.id, job.attempt, duration_ms, error, dead, retry_at)


def _changes(rows: list[asyncpg.Record]) -> list[live.Change]:
    return [live.Change(r["tenant_id"], r["campaign_id"]) for r in rows if r["tenant_id"]]


def _ms(began: float) -> int:
    return int((time.perf_counter() - began) * 1000)
