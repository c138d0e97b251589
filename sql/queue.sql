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
