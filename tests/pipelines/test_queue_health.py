"""queue_health from hand-made jobs and attempt logs: counts and percentiles per hour and tier,
late logs, reruns and rebuilds."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pipelines

NAME = "queue_health"
FIGURES = "finished, failed, dead, wait_p50_ms, wait_p95_ms, run_p50_ms, run_p95_ms"


def _hour_ago(hours: int) -> datetime:
    now = datetime.now(UTC)
    return now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours)


def _fresh(olap) -> None:
    """No jobs, logs, rows or watermark: the queue writes its logs in time order, and each of
    these tests writes its own past."""
    olap.execute("TRUNCATE queue.job_logs, queue.jobs, analytics.queue_health")
    olap.execute("DELETE FROM analytics.pipeline_watermarks WHERE pipeline = $1", NAME)


def _table(olap):
    return olap.frame(f"SELECT hour, tier, {FIGURES} FROM analytics.queue_health ORDER BY 1, 2")


def test_attempts_count_per_hour_and_tier_with_their_waits_and_run_times(scratch) -> None:
    settings, olap = scratch
    _fresh(olap)
    h = _hour_ago(3)
    s = timedelta(seconds=1)
    # high (priority <= 50): waited 8 s and 4 s, ran 2 s and 1 s
    olap.job_log(olap.job(10, h), 1, "succeeded", h + 10 * s, 2000)
    olap.job_log(olap.job(50, h + 60 * s), 1, "succeeded", h + 65 * s, 1000)
    # normal: a failed attempt (no wait of its own), then the retry, at its run_at, waits 2 s
    retried = olap.job(100, h + 1800 * s, attempts=2)
    olap.job_log(retried, 1, "failed", h + 1200 * s, 500)
    olap.job_log(retried, 2, "succeeded", h + 1803 * s, 1000)
    olap.job_log(olap.job(100, h), 1, "queued", h + 600 * s)  # deferred: no attempt used
    # low: failed, lease expired (no run time), dead in the next hour after a 29.7 s wait
    dead = olap.job(151, h + 3600 * s, attempts=3)
    olap.job_log(dead, 1, "failed", h + 2400 * s, 100)
    olap.job_log(dead, 2, "failed", h + 3000 * s)
    olap.job_log(dead, 3, "dead", h + 3630 * s, 300)
    olap.job_log(uuid.uuid4(), 1, "succeeded", h, 10)  # its job is gone: no tier

    result = pipelines.run(settings, NAME)

    assert (result.rows_read, result.rows_skipped) == (8, 1)
    assert _table(olap).rows() == [
        (h, "high", 2, 0, 0, 6000.0, 7800.0, 1500.0, 1950.0),
        (h, "low", 0, 2, 0, None, None, 100.0, 100.0),
        (h, "normal", 1, 1, 0, 2000.0, 2000.0, 750.0, 975.0),
        (h + timedelta(hours=1), "low", 0, 0, 1, 29700.0, 29700.0, 300.0, 300.0),
    ]


def _bulk(olap, start: datetime, span: timedelta, count: int, seed: int) -> None:
    """`count` jobs of every tier, ready over `span` from `start`, each with its attempts'
    logs: failed ones, then the one that finished it or left it dead."""
    olap.execute(
        """
        WITH j AS (
            INSERT INTO queue.jobs (kind, priority, run_at, attempts)
            SELECT 'bulk', (ARRAY[0, 10, 50, 51, 100, 150, 151, 200, 1000])[1 + i % 9],
                   $1::timestamptz + (hashtext($4::text || ':' || i) & 1048575)::float8 / 1048576
                                     * $2::interval,
                   1 + i % 3
            FROM generate_series(1, $3::int) AS i
            RETURNING id, run_at, attempts
        )
        INSERT INTO queue.job_logs (job_id, attempt, status, duration_ms, at)
        SELECT j.id, a,
               CASE WHEN a < j.attempts THEN 'failed'
                    WHEN hashtext(j.id::text) % 7 = 0 THEN 'dead' ELSE 'succeeded' END,
               d.ms,
               j.run_at - (j.attempts - a) * interval '90 seconds'
                 + (d.ms + (hashtext(j.id::text || 'w' || a) & 8191)) * interval '1 millisecond'
        FROM j, generate_series(1, j.attempts) AS a,
             LATERAL (SELECT hashtext(j.id::text || a) & 2047 AS ms) AS d
        """,
        start.isoformat(), f"{span.total_seconds()} seconds", count, str(seed),
    )  # fmt: skip


def test_reruns_change_nothing_and_incremental_runs_equal_the_rebuilds(scratch) -> None:
    settings, olap = scratch
    _fresh(olap)
    _bulk(olap, _hour_ago(8), timedelta(hours=3), 1500, seed=1)
    pipelines.run(settings, NAME)
    _bulk(olap, _hour_ago(4), timedelta(minutes=100), 1500, seed=2)
    newest = _hour_ago(2) + timedelta(minutes=2)
    olap.job_log(olap.job(10, newest), 1, "succeeded", newest, 5)
    pipelines.run(settings, NAME)
    # Written before the newest log seen (in the hour before its), committed after the run
    # read: within the overlap.
    late = newest - timedelta(minutes=5)
    olap.job_log(olap.job(100, late), 1, "succeeded", late, 42)
    pipelines.run(settings, NAME)
    incremental = _table(olap)
    assert set(incremental["tier"]) == {"high", "normal", "low"}

    pipelines.run(settings, NAME)
    assert _table(olap).equals(incremental)
    pipelines.run(settings, NAME, full=True)
    assert _table(olap).equals(incremental)
    pipelines.run(settings, NAME, since=_hour_ago(24).date())
    assert _table(olap).equals(incremental)


def test_hours_whose_logs_may_be_pruned_keep_their_rows(scratch) -> None:
    settings, olap = scratch
    _fresh(olap)
    old = _hour_ago(24 * settings.job_log_retention_days)  # its logs are partly pruned
    olap.execute(
        "INSERT INTO analytics.queue_health (hour, tier, finished) VALUES ($1::timestamptz,"
        " 'normal', 7)",
        old.isoformat(),
    )  # fmt: skip
    olap.job_log(olap.job(100, old), 1, "succeeded", old + timedelta(minutes=59), 10)

    pipelines.run(settings, NAME, full=True)

    kept = olap.frame(
        "SELECT finished FROM analytics.queue_health WHERE hour = $1::timestamptz",
        old.isoformat(),
    )  # fmt: skip
    assert kept["finished"].to_list() == [7]
