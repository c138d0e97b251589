-- Run by migration 0021. Every alert raised or resolved, a tenant's or the platform's, whatever
-- code raised it, queues one platform job (kind alert_webhook, tenant NULL: no tenant's queue
-- shows it) in the same transaction; the job POSTs it to PENGUINMAILS_ALERT_WEBHOOK_URL, or
-- does nothing when none is set (services/alerts.py).

-- name: queue_alert_webhook
-- SECURITY DEFINER: an application-role session (a tenant's guard) may not write a platform job
-- under RLS; this function writes exactly that one kind.
CREATE OR REPLACE FUNCTION app.queue_alert_webhook() RETURNS trigger
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    event text := CASE WHEN TG_OP = 'INSERT' THEN 'raised' ELSE 'resolved' END;
BEGIN
    INSERT INTO queue.jobs (tenant_id, kind, payload, priority, run_at, max_attempts,
                            idempotency_key)
    VALUES (NULL, 'alert_webhook', jsonb_build_object('alert_id', NEW.id, 'event', event), 90,
            now(), 12, 'alert_webhook:' || NEW.id || ':' || event)
    ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING;
    RETURN NULL;
END
$fn$;

-- name: queue_alert_webhook_private
REVOKE ALL ON FUNCTION app.queue_alert_webhook() FROM PUBLIC;

-- name: alert_raised_drop
DROP TRIGGER IF EXISTS alert_raised ON app.alerts;

-- name: alert_raised
CREATE TRIGGER alert_raised AFTER INSERT ON app.alerts
FOR EACH ROW EXECUTE FUNCTION app.queue_alert_webhook();

-- name: alert_resolved_drop
DROP TRIGGER IF EXISTS alert_resolved ON app.alerts;

-- name: alert_resolved
CREATE TRIGGER alert_resolved AFTER UPDATE OF resolved_at ON app.alerts
FOR EACH ROW WHEN (OLD.resolved_at IS NULL AND NEW.resolved_at IS NOT NULL)
EXECUTE FUNCTION app.queue_alert_webhook();

-- name: system_role_reads_activity
-- The slow query alert reads every session's statement in pg_stat_activity. Granting the
-- predefined role needs a superuser (or its admin option): an owner without it gets a notice,
-- and the alert then sees only the system role's own statements.
DO $$
BEGIN
    EXECUTE format('GRANT pg_read_all_stats TO %I', current_setting('penguinmails.system_role'));
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'pg_read_all_stats not granted to the system role: %', SQLERRM;
END
$$;
