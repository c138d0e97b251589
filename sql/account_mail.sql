-- Account e-mails (services/account_mail.py) are platform jobs: tenant_id NULL, so a paused or
-- suspended tenant's owners still get their notices, and no tenant's queue shows anyone's mail.
-- The application role may not write such a row under RLS; this function writes exactly one
-- kind of it, in the caller's transaction (outbox: the mail exists if its cause committed).
-- Run by the migration that made app.user_tokens.

-- name: enqueue_account_mail
-- SECURITY DEFINER: it runs as the owner role, which bypasses RLS (sql/invitations.sql).
CREATE OR REPLACE FUNCTION queue.enqueue_account_mail(mail jsonb, mail_key text)
RETURNS uuid
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    WITH inserted AS (
        INSERT INTO queue.jobs (tenant_id, kind, payload, priority, run_at, max_attempts,
                                idempotency_key)
        VALUES (NULL, 'account_mail', mail, 40, now(), 12, mail_key)
        ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING id
    )
    SELECT id FROM inserted
    UNION ALL
    SELECT j.id FROM queue.jobs j
    WHERE j.idempotency_key = mail_key AND j.tenant_id IS NULL
      AND NOT EXISTS (SELECT 1 FROM inserted)
    LIMIT 1
$fn$;

-- name: enqueue_account_mail_private
-- grants.sql gives it back to the two roles.
REVOKE ALL ON FUNCTION queue.enqueue_account_mail(jsonb, text) FROM PUBLIC;

-- name: user_tokens_enable
-- No policy: a session of the application role sees no token, whatever its grants.
ALTER TABLE app.user_tokens ENABLE ROW LEVEL SECURITY;

-- name: user_tokens_force
ALTER TABLE app.user_tokens FORCE ROW LEVEL SECURITY;
