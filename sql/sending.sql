-- The send job's writes, a whole batch of messages per statement (services/sending.py).
-- Each runs in a tenant session: RLS still decides which rows exist.

-- name: claim_messages
-- The messages about to go out, SENDING and committed before any SMTP transaction starts: a
-- new row, or a PENDING one left by an attempt that failed and looked up by this one (its id
-- and tokens are reused: the ids match). Any other row of the key is left alone and not
-- returned, and its message is not sent.
INSERT INTO content.email_messages AS m (
    id, tenant_id, campaign_id, lead_id, account_id, step_position, idempotency_key,
    message_id_header, verp_token, from_address, to_address, subject, body_compressed, status
)
SELECT u.id, $1, u.campaign_id, u.lead_id, u.account_id, u.step, u.key, u.header, u.token,
       u.sender, u.recipient, u.subject, u.body, 'SENDING'
FROM unnest(
    $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::int[], $7::text[], $8::text[],
    $9::text[], $10::text[], $11::text[], $12::text[], $13::bytea[]
) AS u(id, campaign_id, lead_id, account_id, step, key, header, token, sender, recipient,
       subject, body)
ON CONFLICT (tenant_id, idempotency_key) DO UPDATE
    SET status = 'SENDING', subject = EXCLUDED.subject,
        body_compressed = EXCLUDED.body_compressed, updated_at = now()
    WHERE m.status = 'PENDING' AND m.id = EXCLUDED.id
RETURNING m.id;

-- name: mark_sent
-- SENDING → SENT with the server's reply, and the SENT event, in one statement: a message is
-- SENT exactly when its event exists. Returns the events to publish.
WITH sent AS (
    UPDATE content.email_messages AS m
    SET status = 'SENT', sent_at = now(), smtp_response = u.reply, updated_at = now()
    FROM unnest($1::uuid[], $2::text[], $3::jsonb[]) AS u(id, reply, details)
    WHERE m.id = u.id AND m.status = 'SENDING'
    RETURNING m.id, m.tenant_id, m.campaign_id, m.lead_id, m.account_id, m.step_position,
              u.details
)
INSERT INTO content.email_events (
    tenant_id, kind, message_id, campaign_id, lead_id, account_id, step_position, details
)
SELECT tenant_id, 'SENT', id, campaign_id, lead_id, account_id, step_position, details
FROM sent
RETURNING id, tenant_id, kind, message_id, campaign_id, lead_id, machine, url, occurred_at;

-- name: release_messages
-- The server said "later" (4xx) or the connection failed: back to PENDING for the retry.
UPDATE content.email_messages AS m
SET status = 'PENDING', smtp_response = u.reply, updated_at = now()
FROM unnest($1::uuid[], $2::text[]) AS u(id, reply)
WHERE m.id = u.id AND m.status = 'SENDING';

-- name: leads_sent
-- The leads' side of sent messages; running it twice changes nothing more. A lead that
-- replied, bounced, complained or unsubscribed keeps its status. Returns each lead's status.
UPDATE app.leads AS l
SET current_step = GREATEST(l.current_step, u.step),
    last_sent_at = now(),
    first_message_id = CASE WHEN u.step = 1 THEN u.header ELSE l.first_message_id END,
    status = CASE
        WHEN l.status NOT IN ('ACTIVE', 'CONTACTED') THEN l.status
        WHEN u.last THEN 'FINISHED'
        ELSE 'CONTACTED'
    END,
    updated_at = now()
FROM unnest($1::uuid[], $2::int[], $3::text[], $4::bool[]) AS u(id, step, header, last)
WHERE l.id = u.id
RETURNING l.id, l.status;
