-- What each role may do, re-applied by every migration that adds tables (idempotent).

-- name: grant_privileges
DO $$
DECLARE
    app_role text := current_setting('penguinmails.app_role');
    system_role text := current_setting('penguinmails.system_role');
    s text;
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I, %I', current_database(), app_role, system_role);
    FOREACH s IN ARRAY ARRAY['app', 'content', 'queue', 'analytics'] LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I, %I', s, app_role, system_role);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO %I', s, system_role);
        EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO %I, %I', s, app_role, system_role);
        EXECUTE format('GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA %I TO %I, %I', s, app_role, system_role);
    END LOOP;
    -- Tenant data: read and write, always through RLS.
    FOREACH s IN ARRAY ARRAY['app', 'content', 'queue'] LOOP
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO %I', s, app_role);
    END LOOP;
    -- Rollups are written by the pipelines only; the API reads them.
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA analytics TO %I', app_role);
    EXECUTE format('REVOKE ALL ON analytics.pipeline_watermarks FROM %I', app_role);
    -- Platform figures (revenue, queue health) are staff's, read through the system role.
    IF to_regclass('analytics.queue_health') IS NOT NULL THEN
        EXECUTE format('REVOKE ALL ON analytics.billing_analytics, analytics.queue_health FROM %I', app_role);
    END IF;
    -- Platform tables the app role must not touch, or only read.
    EXECUTE format('REVOKE ALL ON app.staff_members, app.staff_roles FROM %I', app_role);
    EXECUTE format('REVOKE INSERT, UPDATE, DELETE ON app.plans, app.stripe_events FROM %I', app_role);
    -- Tokens mailed to users (verification, password reset) are found and spent by the system
    -- role only: a tenant or user session never reads one.
    IF to_regclass('app.user_tokens') IS NOT NULL THEN
        EXECUTE format('REVOKE ALL ON app.user_tokens FROM %I', app_role);
    END IF;
    -- The audit log is append-only for the application.
    EXECUTE format('REVOKE UPDATE, DELETE ON app.audit_log FROM %I', app_role);
    -- ANALYZE on request is the system processes' (the statistics job), not the API's.
    IF to_regprocedure('app.refresh_statistics(text)') IS NOT NULL THEN
        EXECUTE format('REVOKE EXECUTE ON FUNCTION app.refresh_statistics(text) FROM %I', app_role);
    END IF;
END
$$;
