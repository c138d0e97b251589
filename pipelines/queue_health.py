"""queue_health: platform figures per UTC hour and priority tier (the queuer's tiers, high,
normal and low: jobs/broker.py): the attempts that finished a job, failed (to run again) or
left it dead, and the median and 95th percentile of how long jobs waited and attempts ran.

extract: the attempts logged (queue.job_logs) in the hours to recompute, with their job's
    priority and run_at (queue.jobs)
transform: counts and percentiles (linear interpolation, as percentile_cont) per hour — the one
    the attempt ended in — and tier
load: those hours cleared and written again, in the run's transaction with the watermark.

Definitions. An attempt counts once, by how it ended: finished (succeeded), failed (it will
run again) or dead; an attempt whose lease expired is failed or dead too, with no run time.
Run time: the attempt's duration_ms. Wait: from the job's run_at to the attempt's start, which
job_logs does not record: it is the log's time less the run time. A batch's outcomes are
written together when its slowest job ends, so a job that ended sooner counts the difference
as waiting. A job keeps only its last attempt's run_at (a failed attempt's is replaced by its
retry's), so waits are those of the attempts that ended a job, finished or dead.

Incremental by time: `last_at` is the newest log seen; a run recomputes every hour from the
one holding `last_at` less the late-commit overlap. Logs are pruned after
`job_log_retention_days`, so no run recomputes an hour whose logs may be partly gone: `full`
(and a first run) recomputes every hour from the first one wholly kept, and the hours before
keep their rows."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import polars as pl

from jobs.broker import tier_of
from models.sqlfiles import statement
from pipelines.runtime import Run, execute, fetch

NAME = "queue_health"
SQL = "pipelines.sql"
HOUR = timedelta(hours=1)


def refresh(run: Run, *, full: bool = False, since: date | None = None) -> None:
    # extract
    mark = None if full else run.watermark.last_at
    first = _first_hour(run, mark, since)
    attempts = fetch(run.source("queue"), statement(SQL, "queue_attempts"), (first,))
    run.result.rows_read += len(attempts)
    if not attempts.is_empty():
        run.watermark.last_at = max(t for t in (mark, attempts["at"].max()) if t is not None)
    known = attempts.filter(pl.col("priority").is_not_null())  # its job is gone: no tier
    run.result.rows_skipped += len(attempts) - len(known)
    # transform
    rows = transform(known)
    # load
    execute(run.olap, "DELETE FROM analytics.queue_health WHERE hour >= $1::timestamptz", (first,))
    run.upsert(rows, SQL, "upsert_queue_health")


def _first_hour(run: Run, mark: datetime | None, since: date | None) -> datetime:
    """The first hour to recompute (through now), never one whose logs may be partly pruned."""
    kept = _hour(run.started - timedelta(days=run.settings.job_log_retention_days)) + HOUR
    late = timedelta(seconds=run.settings.pipeline_late_commit_seconds)
    first = kept if mark is None else _hour(mark - late)
    if since is not None:
        first = min(first, datetime.combine(since, time(), UTC))
    return max(first, kept)


def transform(attempts: pl.DataFrame) -> pl.DataFrame:
    """Attempts (at, status, duration_ms, priority, run_at) → rows per hour and tier."""
    status, ran = pl.col("status"), pl.col("duration_ms").cast(pl.Float64)
    waited = (pl.col("at") - pl.col("run_at")).dt.total_milliseconds() - ran
    return (
        attempts.join(_tiers(attempts["priority"]), on="priority")
        .with_columns(hour=pl.col("at").dt.truncate("1h"), wait=waited.clip(0), run=ran)
        .group_by("hour", "tier")
        .agg(
            finished=(status == "succeeded").sum().cast(pl.Int32),
            failed=(status == "failed").sum().cast(pl.Int32),
            dead=(status == "dead").sum().cast(pl.Int32),
            wait_p50_ms=pl.col("wait").quantile(0.5, "linear"),
            wait_p95_ms=pl.col("wait").quantile(0.95, "linear"),
            run_p50_ms=pl.col("run").quantile(0.5, "linear"),
            run_p95_ms=pl.col("run").quantile(0.95, "linear"),
        )
    )


def _tiers(priorities: pl.Series) -> pl.DataFrame:
    """(priority, tier) for each priority there is, by the queuer's own mapping."""
    distinct = priorities.unique().to_list()
    return pl.DataFrame(
        {"priority": distinct, "tier": [tier_of(p) for p in distinct]},
        schema={"priority": priorities.dtype, "tier": pl.String},
    )


def _hour(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
