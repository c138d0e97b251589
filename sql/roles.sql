-- The two login roles the processes use; the owner role (the migration's) keeps the tables.
-- Role names and passwords come from settings through the penguinmails.* session settings.

-- name: create_roles
DO $$
DECLARE
    app_role text := current_setting('penguinmails.app_role');
    system_role text := current_setting('penguinmails.system_role');
    app_password text := nullif(current_setting('penguinmails.app_password', true), '');
    system_password text := nullif(current_setting('penguinmails.system_password', true), '');
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = app_role) THEN
        BEGIN
            EXECUTE format('CREATE ROLE %I LOGIN', app_role);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- created meanwhile by a migration of another database on this server
        END;
    END IF;
    -- Whatever existed before, the app role is bound by RLS: never superuser, never BYPASSRLS.
    EXECUTE format('ALTER ROLE %I LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE', app_role);
    IF app_password IS NOT NULL THEN
        EXECUTE format('ALTER ROLE %I PASSWORD %L', app_role, app_password);
    END IF;

    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = system_role) THEN
        BEGIN
            EXECUTE format('CREATE ROLE %I LOGIN', system_role);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    -- The system role (queuer, pipelines, the audited staff path) reads across tenants.
    EXECUTE format('ALTER ROLE %I LOGIN NOSUPERUSER BYPASSRLS NOCREATEDB NOCREATEROLE', system_role);
    IF system_password IS NOT NULL THEN
        EXECUTE format('ALTER ROLE %I PASSWORD %L', system_role, system_password);
    END IF;
END
$$;
