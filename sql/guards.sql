-- Reputation scores and sending guards (services/guards.py).

-- name: sending_signals
-- The tenant's sends, hard bounces and complaints per account and hour since $1 (the tenant's
-- session). A bounce the server gave during the transaction was never SENT: it counts as a send
-- too, as in the analytics.
SELECT account_id,
       date_trunc('hour', occurred_at) AS hour,
       count(*) FILTER (WHERE kind = 'SENT' OR details->>'refused' = 'true') AS sent,
       count(*) FILTER (WHERE kind = 'BOUNCE' AND details->>'hard' = 'true') AS hard_bounces,
       count(*) FILTER (WHERE kind = 'COMPLAINT') AS complaints
FROM content.email_events
WHERE tenant_id = $1 AND occurred_at >= $2::timestamptz AND account_id IS NOT NULL
  AND kind IN ('SENT', 'BOUNCE', 'COMPLAINT')
GROUP BY 1, 2;
