-- What the addressee of an invitation may read. They are not a member of the inviting tenant,
-- so tenant_isolation (sql/rls.sql) shows them nothing of it; these two grant exactly the
-- invitation and the tenant's name. Run by the migration that made app.invitations.

-- name: invitations_drop_invitee_read
DROP POLICY IF EXISTS invitee_read ON app.invitations;

-- name: invitations_invitee_read
-- A signed-in user reads the invitations addressed to their own email, to list and answer them.
-- A tenant session with a user bound sees them too: tenant-side queries name the tenant.
CREATE POLICY invitee_read ON app.invitations FOR SELECT
    USING (email = (SELECT u.email FROM app.users u WHERE u.id = app.current_user_id()));

-- name: invited_tenant_names
-- The names of the tenants that have a pending invitation for the signed-in user, and nothing
-- else of them. A policy on app.tenants would show the invitee the whole row, and put the
-- tenant in their workspace list before they accept. SECURITY DEFINER: it runs as the owner
-- role, which bypasses RLS (it must, to create the BYPASSRLS system role: sql/roles.sql).
CREATE OR REPLACE FUNCTION app.invited_tenant_names()
RETURNS TABLE (tenant_id uuid, name text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
    SELECT t.id, t.name::text
    FROM app.tenants t
    WHERE t.id IN (SELECT i.tenant_id
                   FROM app.invitations i
                   JOIN app.users u ON u.email = i.email
                   WHERE u.id = app.current_user_id()
                     AND i.status = 'PENDING' AND i.expires_at > now())
$fn$;

-- name: invited_tenant_names_private
-- grants.sql gives it back to the two roles.
REVOKE ALL ON FUNCTION app.invited_tenant_names() FROM PUBLIC;
