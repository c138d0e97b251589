-- Lead import, one batch at a time on the raw asyncpg connection of a tenant session. Both run as
-- the application role, so RLS scopes them to the bound tenant (and refuses COPY: hence unnest).

-- name: suppressed_emails
-- Which of a batch's addresses the tenant must not email. Not `email = ANY($1)`: once the
-- prepared statement goes generic (the sixth batch), that searches the 5,000-element array
-- linearly for each of the tenant's suppressions, 250 ms a batch for 5,000 of them; this
-- semi-join probes the (tenant_id, email) index or hashes the batch, 5-15 ms at 200,000.
SELECT email FROM app.suppressions WHERE email IN (SELECT unnest($1::text[]));

-- name: insert_leads
-- One batch of leads for a campaign, column by column. An address the campaign already has is
-- skipped; the addresses actually inserted are returned.
INSERT INTO app.leads (tenant_id, campaign_id, email, first_name, last_name, company, fields)
SELECT $1::uuid, $2::uuid, l.email, l.first_name, l.last_name, l.company, l.fields
FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[])
     AS l (email, first_name, last_name, company, fields)
ON CONFLICT (campaign_id, email) DO NOTHING
RETURNING email;
