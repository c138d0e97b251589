-- Bounces (services/bounces.py, services/inbound.py).

-- name: recent_soft_bounces
-- The soft and mailbox-full bounces of the tenant's messages to address $1 since $2 (the
-- tenant's session: RLS keeps it to the tenant's messages).
SELECT count(*)
FROM content.email_events e
JOIN content.email_messages m ON m.id = e.message_id AND m.tenant_id = e.tenant_id
WHERE lower(m.to_address) = $1::text AND e.kind = 'BOUNCE' AND e.occurred_at >= $2::timestamptz
  AND e.details->>'class' IN ('soft', 'mailbox_full');
