-- The ops page's platform-wide reads (services/ops.py), run by the system role: every tenant.

-- name: platform_queue
SELECT
    count(*) FILTER (WHERE status IN ('queued', 'failed') AND run_at <= now()) AS queued,
    count(*) FILTER (WHERE status IN ('queued', 'failed') AND run_at > now()) AS scheduled,
    count(*) FILTER (WHERE status IN ('dispatched', 'running')) AS running,
    count(*) FILTER (WHERE status = 'dead') AS dead
FROM queue.jobs
WHERE status IN ('queued', 'failed', 'dispatched', 'running', 'dead');

-- name: minute_outcomes
-- Sends, bounces and complaints per minute over the last hour, every minute present. The
-- tenants come as an array so each is read through its (tenant_id, occurred_at) index, never
-- by scanning every tenant's events.
WITH recent AS (
    SELECT date_trunc('minute', occurred_at) AS minute, kind, count(*) AS n
    FROM content.email_events
    WHERE tenant_id = ANY(CAST(:tenants AS uuid[]))
      AND occurred_at >= date_trunc('minute', now()) - interval '59 minutes'
      AND kind IN ('SENT', 'BOUNCE', 'COMPLAINT')
    GROUP BY 1, 2
)
SELECT m.minute AS at,
       coalesce(sum(r.n) FILTER (WHERE r.kind = 'SENT'), 0)::int AS sent,
       coalesce(sum(r.n) FILTER (WHERE r.kind = 'BOUNCE'), 0)::int AS bounced,
       coalesce(sum(r.n) FILTER (WHERE r.kind = 'COMPLAINT'), 0)::int AS complained
FROM generate_series(date_trunc('minute', now()) - interval '59 minutes',
                     date_trunc('minute', now()), interval '1 minute') AS m(minute)
LEFT JOIN recent r ON r.minute = m.minute
GROUP BY m.minute
ORDER BY m.minute;
