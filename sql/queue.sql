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
-- The tenant's counts and each tier's depth ({"high": [ready, in_flight], …}) in one statement:
-- the function (migration 0023) binds the tenant for the statement, and row-level security
-- scopes every count.
SELECT * FROM queue.tenant_queue_status(:tenant);

-- name: tier_depths
-- Each tier's depth over every job the session sees (the ops page: the whole platform).
SELECT CASE WHEN priority <= 50 THEN 'high' WHEN priority <= 150 THEN 'normal' ELSE 'low' END AS tier,
       count(*) FILTER (WHERE status IN ('queued', 'failed') AND run_at <= now()) AS ready,
       count(*) FILTER (WHERE status IN ('dispatched', 'running')) AS in_flight
FROM queue.jobs
WHERE status IN ('queued', 'failed', 'dispatched', 'running')
GROUP BY 1;

-- name: enqueue_many
-- Many jobs of one kind in one statement (outbox), each at its own time (NULL: now); keys
-- that exist already are skipped.
INSERT INTO queue.jobs (tenant_id, kind, payload, priority, run_at, max_attempts,
                        idempotency_key, campaign_id)
SELECT $1, $2, p.payload, $4, coalesce(p.run_at, now()), $6, p.idempotency_key, $7
FROM unnest($3::jsonb[], $8::text[], $5::timestamptz[]) AS p(payload, idempotency_key, run_at)
ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id;

-- name: claim_ready_jobs
-- Ready jobs of one tier ($4..$5: its priorities) by priority then age, skipping rows another
-- queuer holds and suspended tenants. Each claim is a new attempt: a job is never dispatched
-- twice in the same attempt. The ids come as an array so the update finds its rows by primary
-- key, never by a join the planner may turn into a scan of the whole table.
UPDATE queue.jobs j
SET status = 'dispatched', attempts = j.attempts + 1,
    lease_until = now() + make_interval(secs => $2), updated_at = now()
WHERE j.id = ANY(ARRAY(
    SELECT id FROM queue.jobs
    WHERE status IN ('queued', 'failed') AND run_at <= now()
      AND priority BETWEEN $4 AND $5
      AND (tenant_id IS NULL OR tenant_id <> ALL($3::uuid[]))
    ORDER BY priority, run_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
))
RETURNING j.id, j.priority, j.attempts, j.tenant_id;

-- name: recover_expired_leases
-- Leases are renewed while a job's message waits in Redis and while it runs, so an expired one
-- means its worker died or its message was lost. A job that never started goes back to the
-- queue with its attempt given back (it only waited); one that was running has used its
-- attempt: back to the queue, or dead when it has used them all. Either goes to the head of
-- its priority's line (just before the oldest ready job): it was already under way, and a dead
-- worker's jobs run again within seconds, not after the whole backlog.
WITH expired AS (
    SELECT id, priority, status = 'dispatched' AS waited FROM queue.jobs
    WHERE status IN ('dispatched', 'running') AND lease_until < now()
    ORDER BY lease_until
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), heads AS (
    SELECT p.priority, head.run_at
    FROM (SELECT DISTINCT priority FROM expired) AS p
    CROSS JOIN LATERAL (
        SELECT min(run_at) AS run_at FROM (
            SELECT run_at FROM queue.jobs
            WHERE status IN ('queued', 'failed') AND priority = p.priority
            ORDER BY run_at LIMIT 1
        ) AS oldest
    ) AS head
), moved AS (
    UPDATE queue.jobs j
    SET status = CASE WHEN NOT e.waited AND j.attempts >= j.max_attempts
                      THEN 'dead' ELSE 'queued' END,
        attempts = CASE WHEN e.waited THEN j.attempts - 1 ELSE j.attempts END,
        run_at = LEAST(j.run_at, h.run_at - interval '1 millisecond'),
        lease_until = NULL, updated_at = now(),
        finished_at = CASE WHEN NOT e.waited AND j.attempts >= j.max_attempts THEN now() END,
        last_error = CASE WHEN e.waited
                          THEN 'lease expired before it started (message lost or worker lost)'
                          ELSE 'lease expired (worker lost or message lost)' END
    FROM expired e JOIN heads h USING (priority)
    WHERE j.id = e.id
    RETURNING j.id, j.tenant_id, j.attempts, j.status, j.last_error, e.waited
)
-- The log names the attempt that expired (for one that waited, the one given back).
INSERT INTO queue.job_logs (tenant_id, job_id, attempt, status, message)
SELECT tenant_id, id, CASE WHEN waited THEN attempts + 1 ELSE attempts END,
       CASE WHEN status = 'dead' THEN 'dead' WHEN waited THEN 'queued' ELSE 'failed' END,
       last_error
FROM moved
RETURNING job_id;

-- name: renew_leases
-- The heartbeat: jobs still in the hands of the attempt that holds them keep their lease. $4
-- says in which hands: 'dispatched' (its message waits in Redis: the queuer renews) or
-- 'running' (the worker running it renews). A message that waits while its job runs is a
-- stale copy (e.g. Dramatiq put a dead worker's message back) and renews nothing.
UPDATE queue.jobs j
SET lease_until = now() + make_interval(secs => $3)
FROM unnest($1::uuid[], $2::int[]) AS f(id, attempt)
WHERE j.id = f.id AND j.attempts = f.attempt AND j.status = $4::text
RETURNING j.id;

-- name: start_jobs
-- Fencing: only the attempt that was dispatched may run, once; the lease now covers the run.
UPDATE queue.jobs j
SET status = 'running', lease_until = now() + make_interval(secs => $3), updated_at = now()
FROM unnest($1::uuid[], $2::int[]) AS f(id, attempt)
WHERE j.id = f.id AND j.attempts = f.attempt AND j.status = 'dispatched'
RETURNING j.id, j.tenant_id, j.campaign_id, j.kind, j.payload, j.attempts, j.max_attempts,
          j.last_error IS NOT NULL AS ran_before,
          extract(epoch FROM now() - j.run_at)::float8 AS waited;

-- name: finish_succeeded
WITH done AS (
    UPDATE queue.jobs j
    SET status = 'succeeded', finished_at = now(), lease_until = NULL, updated_at = now(),
        last_error = NULL
    FROM unnest($1::uuid[], $2::int[], $3::int[]) AS f(id, attempt, duration_ms)
    WHERE j.id = f.id AND j.attempts = f.attempt AND j.status = 'running'
    RETURNING j.id, j.tenant_id, j.attempts, f.duration_ms
)
INSERT INTO queue.job_logs (tenant_id, job_id, attempt, status, duration_ms)
SELECT tenant_id, id, attempts, 'succeeded', duration_ms FROM done;

-- name: finish_failed
-- A failed attempt waits for its backoff (run_at), or dies when attempts are used up.
WITH done AS (
    UPDATE queue.jobs j
    SET status = CASE WHEN f.dead THEN 'dead' ELSE 'failed' END,
        run_at = CASE WHEN f.dead THEN j.run_at ELSE f.run_at END,
        finished_at = CASE WHEN f.dead THEN now() END,
        lease_until = NULL, updated_at = now(), last_error = f.error
    FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::text[], $5::bool[], $6::int[])
         AS f(id, attempt, run_at, error, dead, duration_ms)
    WHERE j.id = f.id AND j.attempts = f.attempt AND j.status = 'running'
    RETURNING j.id, j.tenant_id, j.attempts, j.status, f.error, f.duration_ms
)
INSERT INTO queue.job_logs (tenant_id, job_id, attempt, status, message, duration_ms)
SELECT tenant_id, id, attempts, status, error, duration_ms FROM done;

-- name: cancel_job
UPDATE queue.jobs SET status = 'cancelled', finished_at = now(), lease_until = NULL,
                      updated_at = now()
WHERE id = $1 AND status IN ('queued', 'failed', 'dispatched')
RETURNING id;

-- name: cancel_campaign_jobs
UPDATE queue.jobs SET status = 'cancelled', finished_at = now(), lease_until = NULL,
                      updated_at = now()
WHERE campaign_id = $1 AND status IN ('queued', 'failed', 'dispatched')
RETURNING id;

-- name: prune_job_logs
DELETE FROM queue.job_logs WHERE at < now() - make_interval(days => $1);

-- name: finish_deferred
-- Not now (a rate limit was full): back to the queue at run_at, the attempt given back.
WITH done AS (
    UPDATE queue.jobs j
    SET status = 'queued', attempts = j.attempts - 1, run_at = f.run_at, lease_until = NULL,
        updated_at = now(), last_error = f.reason
    FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::text[]) AS f(id, attempt, run_at, reason)
    WHERE j.id = f.id AND j.attempts = f.attempt AND j.status = 'running'
    RETURNING j.id, j.tenant_id, f.attempt, f.reason
)
INSERT INTO queue.job_logs (tenant_id, job_id, attempt, status, message)
SELECT tenant_id, id, attempt, 'queued', reason FROM done;
