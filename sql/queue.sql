-- The queue's statements that matter for correctness and speed.

-- name: enqueue
-- One job in the caller's transaction (outbox). With an idempotency key that exists already,
-- nothing is inserted and the existing job is returned.
WITH inserted AS (
    INSERT INTO queue.jobs (tenant_id, kind, payload, priority, run_at, max_attempts,
                            idempotency_key, campaign_id)
    VALUES ($1, $2, $3, $4, coalesce($5, now()), $6, $7, $8)
    ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id
)
SELECT id FROM inserted
UNION ALL
SELECT id FROM queue.jobs
WHERE idempotency_key = $7 AND tenant_id IS NOT DISTINCT FROM $1
  AND NOT EXISTS (SELECT 1 FROM inserted)
LIMIT 1;

-- name: queue_status
SELECT
    count(*) FILTER (WHERE status IN ('queued', 'failed') AND run_at <= now()) AS queued,
    count(*) FILTER (WHERE status IN ('queued', 'failed') AND run_at > now()) AS scheduled,
    count(*) FILTER (WHERE status IN ('dispatched', 'running')) AS running,
    (SELECT count(*) FROM queue.job_logs
     WHERE status IN ('failed', 'dead') AND at > now() - interval '1 hour') AS failed_last_hour,
    count(*) FILTER (WHERE status = 'dead') AS dead,
    (SELECT count(*) FROM content.email_messages
     WHERE status = 'SENT' AND sent_at > now() - interval '1 minute') AS sent_last_minute
FROM queue.jobs
WHERE status IN ('queued', 'failed', 'dispatched', 'running', 'dead');

-- name: tier_depths
SELECT CASE WHEN priority <= 50 THEN 'high' WHEN priority <= 150 THEN 'normal' ELSE 'low' END AS tier,
       count(*) FILTER (WHERE status IN ('queued', 'failed') AND run_at <= now()) AS ready,
       count(*) FILTER (WHERE status IN ('dispatched', 'running')) AS in_flight
FROM queue.jobs
WHERE status IN ('queued', 'failed', 'dispatched', 'running')
GROUP BY 1;
