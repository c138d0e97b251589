-- Read by the API's /metrics at scrape time (services/metrics.py), each at most once per
-- metrics_cache_seconds.

-- name: jobs_by_priority_status
-- The statuses a job waits or ends badly in (succeeded and cancelled rows are history); a job
-- to run later is "scheduled", one whose time has come "ready". Per priority: the code maps
-- priorities to tiers (jobs/broker.py tier_of), and a platform uses a handful of them.
SELECT priority,
       CASE WHEN status IN ('queued', 'failed') AND run_at > now() THEN 'scheduled'
            WHEN status IN ('queued', 'failed') THEN 'ready'
            ELSE status::text END AS status,
       count(*) AS jobs
FROM queue.jobs
WHERE status IN ('queued', 'failed', 'dispatched', 'running', 'dead')
GROUP BY 1, 2;

-- name: pipeline_lags
SELECT pipeline, extract(epoch FROM now() - last_ok_at)::float8 AS lag
FROM analytics.pipeline_watermarks
WHERE last_ok_at IS NOT NULL;
