-- name: campaign_progress
-- Distinct messages per outcome (an open counted once per message), plus pending send jobs, in
-- one statement: the function (migration 0023) binds the tenant for the statement.
SELECT * FROM content.tenant_campaign_progress(:tenant, :c);
