-- Row-level security. Re-run by every migration that adds tables: each table with a tenant_id
-- column gets ENABLE + FORCE and the tenant_isolation policy, so a new table is never left open.

-- name: tenant_functions
CREATE OR REPLACE FUNCTION app.current_tenant_id() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE
-- NULLIF: once set in a session, an unset transaction-local value reads as '' rather than NULL.
AS $$ SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid $$;

-- name: user_function
CREATE OR REPLACE FUNCTION app.current_user_id() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT NULLIF(current_setting('app.user_id', true), '')::uuid $$;

-- name: tenant_isolation
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT c.table_schema, c.table_name
        FROM information_schema.columns c
        JOIN information_schema.tables tb USING (table_schema, table_name)
        WHERE c.column_name = 'tenant_id'
          AND tb.table_type = 'BASE TABLE'
          AND c.table_schema IN ('app', 'content', 'queue', 'analytics')
    LOOP
        EXECUTE format('ALTER TABLE %I.%I ENABLE ROW LEVEL SECURITY', t.table_schema, t.table_name);
        EXECUTE format('ALTER TABLE %I.%I FORCE ROW LEVEL SECURITY', t.table_schema, t.table_name);
        EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %I.%I', t.table_schema, t.table_name);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I.%I USING (tenant_id = app.current_tenant_id()) '
            'WITH CHECK (tenant_id = app.current_tenant_id())',
            t.table_schema, t.table_name
        );
    END LOOP;
END
$$;

-- name: tenants_enable
ALTER TABLE app.tenants ENABLE ROW LEVEL SECURITY;

-- name: tenants_force
ALTER TABLE app.tenants FORCE ROW LEVEL SECURITY;

-- name: tenants_drop_current
DROP POLICY IF EXISTS tenant_isolation ON app.tenants;

-- name: tenants_current
CREATE POLICY tenant_isolation ON app.tenants
    USING (id = app.current_tenant_id()) WITH CHECK (id = app.current_tenant_id());

-- name: tenants_drop_member_read
DROP POLICY IF EXISTS member_read ON app.tenants;

-- name: tenants_member_read
-- A signed-in user lists the tenants they belong to (the tenant switcher).
CREATE POLICY member_read ON app.tenants FOR SELECT
    USING (id IN (SELECT tu.tenant_id FROM app.tenant_users tu
                  WHERE tu.user_id = app.current_user_id()));

-- name: tenant_users_drop_own_read
DROP POLICY IF EXISTS own_memberships_read ON app.tenant_users;

-- name: tenant_users_own_read
CREATE POLICY own_memberships_read ON app.tenant_users FOR SELECT
    USING (user_id = app.current_user_id());

-- name: users_enable
ALTER TABLE app.users ENABLE ROW LEVEL SECURITY;

-- name: users_force
ALTER TABLE app.users FORCE ROW LEVEL SECURITY;

-- name: users_drop_self
DROP POLICY IF EXISTS self ON app.users;

-- name: users_self
CREATE POLICY self ON app.users
    USING (id = app.current_user_id()) WITH CHECK (id = app.current_user_id());

-- name: users_drop_colleagues
DROP POLICY IF EXISTS colleagues_read ON app.users;

-- name: users_colleagues
-- Members of the bound tenant see each other (the members list), nobody else.
CREATE POLICY colleagues_read ON app.users FOR SELECT
    USING (EXISTS (SELECT 1 FROM app.tenant_users tu
                   WHERE tu.user_id = app.users.id AND tu.tenant_id = app.current_tenant_id()));
