-- The platform's operating conditions (services/alerts.py evaluate_platform), read every
-- alert_check_seconds by the scheduler; each is a range read on an index.

-- name: job_outcomes
-- Attempts that ended in the last $1 seconds: failed (to be retried, or dead) and all.
SELECT count(*) FILTER (WHERE status IN ('failed', 'dead')) AS failed, count(*) AS finished
FROM queue.job_logs
WHERE at > now() - make_interval(secs => $1) AND status IN ('succeeded', 'failed', 'dead');

-- name: waiting_jobs
-- Ready jobs (their run_at passed more than $1 seconds ago) not yet claimed, per priority (the
-- code sums them per tier: jobs/broker.py tier_of).
SELECT priority, count(*) AS jobs, extract(epoch FROM now() - min(run_at))::float8 AS oldest
FROM queue.jobs
WHERE status IN ('queued', 'failed') AND run_at < now() - make_interval(secs => $1)
GROUP BY priority;

-- name: dead_jobs
-- Jobs that died in the last $1 seconds, per kind.
SELECT j.kind, count(DISTINCT j.id) AS jobs, max(l.at) AS last
FROM queue.job_logs l
JOIN queue.jobs j ON j.id = l.job_id
WHERE l.status = 'dead' AND l.at > now() - make_interval(secs => $1)
GROUP BY j.kind;

-- name: slow_queries
-- Statements of this database running longer than $1 seconds (backups' dumps excepted).
SELECT pid, usename::text AS role,
       extract(epoch FROM clock_timestamp() - query_start)::float8 AS seconds,
       left(query, 200) AS query
FROM pg_stat_activity
WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()
  AND datname = current_database() AND application_name NOT IN ('pg_dump', 'pg_restore')
  AND query_start < clock_timestamp() - make_interval(secs => $1)
ORDER BY query_start
LIMIT 5;

-- name: lagging_pipelines
-- Pipelines without a successful run for more than $1 seconds.
SELECT pipeline, extract(epoch FROM now() - last_ok_at)::float8 AS lag, last_error
FROM analytics.pipeline_watermarks
WHERE last_ok_at < now() - make_interval(secs => $1);

-- name: infrastructure_costs
-- Tenants whose infrastructure costs more than $1 of their revenue a month, on the latest day
-- the billing_analytics pipeline wrote.
SELECT tenant_id, infra_cost_cents, mrr_cents
FROM analytics.infrastructure_costs
WHERE day = (SELECT max(day) FROM analytics.infrastructure_costs)
  AND infra_cost_cents > 0 AND infra_cost_cents > $1::float8 * mrr_cents;
