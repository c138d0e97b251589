-- The pipelines' statements (pipelines/): their bookkeeping on the OLAP tier, what they extract
-- from the content and OLTP tiers, and their upserts. Extracts name only the columns a rollup
-- needs and hand uuids over as 16 bytes (uuid_send), which Arrow and Polars load as binary;
-- the temporary tables the pipelines fill (staging, batch_*) take them back as uuid columns.

-- name: try_lock_pipeline
-- One run of a pipeline at a time, across every scheduler and CLI: held until the run commits.
SELECT pg_try_advisory_xact_lock(hashtextextended('pipeline:' || $1::text, 0)) AS locked;

-- name: lock_pipeline
SELECT true AS locked FROM (SELECT pg_advisory_xact_lock(hashtextextended('pipeline:' || $1::text, 0))) AS l;

-- name: ensure_watermark
INSERT INTO analytics.pipeline_watermarks (pipeline) VALUES ($1::text) ON CONFLICT DO NOTHING;

-- name: read_watermark
SELECT last_seq, max_seq, holes::text AS holes, last_at
FROM analytics.pipeline_watermarks WHERE pipeline = $1::text FOR UPDATE;

-- name: write_watermark
UPDATE analytics.pipeline_watermarks
SET last_seq = $2::bigint, max_seq = $3::bigint, holes = $4::jsonb, last_at = $5::timestamptz,
    last_run_at = now(), last_ok_at = now(), last_error = NULL,
    rows_read = $6::bigint, rows_written = $7::bigint, rows_skipped = $8::bigint,
    seconds = $9::float8
WHERE pipeline = $1::text;

-- name: record_failure
INSERT INTO analytics.pipeline_watermarks AS w (pipeline, last_run_at, last_error)
VALUES ($1::text, now(), $2::text)
ON CONFLICT (pipeline) DO UPDATE SET last_run_at = now(), last_error = EXCLUDED.last_error;

-- name: pipeline_status
SELECT pipeline, last_seq, max_seq, holes::text AS holes, last_at, last_run_at, last_ok_at,
       last_error, rows_read, rows_written, rows_skipped, seconds
FROM analytics.pipeline_watermarks ORDER BY pipeline;

-- name: tenant_zones
-- The time zones of the tenants in the uuid[] $1: their analytics days are those zones' days.
SELECT uuid_send(id) AS tenant, timezone AS zone FROM app.tenants WHERE id = ANY($1);

-- name: email_events
-- The events with $1 < seq <= $2. `message` only where a rollup counts distinct messages (human
-- and machine opens and clicks); `hard` only for bounces, NULL when the report did not say;
-- `refused`: a bounce the receiving server gave during the SMTP transaction (never accepted).
SELECT e.seq,
       uuid_send(e.tenant_id) AS tenant,
       uuid_send(e.campaign_id) AS campaign,
       e.step_position AS step,
       CASE WHEN e.kind IN ('OPEN', 'CLICK') THEN uuid_send(e.message_id) END AS message,
       e.message_id IS NOT NULL AS has_message,
       e.kind,
       e.machine,
       CASE WHEN e.kind = 'BOUNCE' AND e.details->>'hard' IN ('true', 'false')
            THEN (e.details->>'hard')::boolean END AS hard,
       e.kind = 'BOUNCE' AND e.details->>'refused' = 'true' AS refused,
       e.occurred_at AS at
FROM content.email_events e
WHERE e.seq > $1::bigint AND e.seq <= $2::bigint;

-- name: email_events_since
-- Every event that happened at or after $1 with seq <= $2 (a rebuild from a date).
SELECT e.seq,
       uuid_send(e.tenant_id) AS tenant,
       uuid_send(e.campaign_id) AS campaign,
       e.step_position AS step,
       CASE WHEN e.kind IN ('OPEN', 'CLICK') THEN uuid_send(e.message_id) END AS message,
       e.message_id IS NOT NULL AS has_message,
       e.kind,
       e.machine,
       CASE WHEN e.kind = 'BOUNCE' AND e.details->>'hard' IN ('true', 'false')
            THEN (e.details->>'hard')::boolean END AS hard,
       e.kind = 'BOUNCE' AND e.details->>'refused' = 'true' AS refused,
       e.occurred_at AS at
FROM content.email_events e
WHERE e.occurred_at >= $1::timestamptz AND e.seq <= $2::bigint;

-- name: last_event_seq
SELECT coalesce(max(seq), 0) AS seq FROM content.email_events;

-- name: prior_human_touches
-- Human opens and clicks with seq <= $1 of the messages in pg_temp.batch_messages: whether a
-- message already counted as opened (or clicked) on a day.
SELECT e.seq, uuid_send(e.tenant_id) AS tenant, uuid_send(e.message_id) AS message, e.kind,
       e.occurred_at AS at
FROM pg_temp.batch_messages b
JOIN content.email_events e
  ON e.tenant_id = b.tenant AND e.message_id = b.message
WHERE e.kind IN ('OPEN', 'CLICK') AND NOT e.machine AND e.seq <= $1::bigint;

-- name: upsert_daily_analytics
INSERT INTO analytics.daily_analytics AS t (
    tenant_id, day, campaign_id, sent, delivered, opened, opens_total, clicked, clicks_total,
    machine_opens, machine_clicks, replied, bounced, soft_bounced, complained, unsubscribed,
    first_opened, first_clicked
)
SELECT s.tenant, s.day, s.campaign, s.sent,
       s.delivered, s.opened, s.opens_total, s.clicked, s.clicks_total, s.machine_opens,
       s.machine_clicks, s.replied, s.bounced, s.soft_bounced, s.complained, s.unsubscribed,
       s.first_opened, s.first_clicked
FROM pg_temp.staging s
ON CONFLICT (tenant_id, day, campaign_id) DO UPDATE SET
    sent = t.sent + EXCLUDED.sent, delivered = t.delivered + EXCLUDED.delivered,
    opened = t.opened + EXCLUDED.opened, opens_total = t.opens_total + EXCLUDED.opens_total,
    clicked = t.clicked + EXCLUDED.clicked, clicks_total = t.clicks_total + EXCLUDED.clicks_total,
    machine_opens = t.machine_opens + EXCLUDED.machine_opens,
    machine_clicks = t.machine_clicks + EXCLUDED.machine_clicks,
    replied = t.replied + EXCLUDED.replied, bounced = t.bounced + EXCLUDED.bounced,
    soft_bounced = t.soft_bounced + EXCLUDED.soft_bounced,
    complained = t.complained + EXCLUDED.complained,
    unsubscribed = t.unsubscribed + EXCLUDED.unsubscribed,
    first_opened = t.first_opened + EXCLUDED.first_opened,
    first_clicked = t.first_clicked + EXCLUDED.first_clicked, updated_at = now();

-- name: forget_campaign_totals_since
-- Before a rebuild from a date deletes those days' campaign_analytics rows: their counts taken
-- off the campaigns' totals (the rebuilt rows add them back).
UPDATE analytics.campaign_totals AS t
SET sent = t.sent - g.sent, delivered = t.delivered - g.delivered, opened = t.opened - g.opened,
    clicked = t.clicked - g.clicked, replied = t.replied - g.replied,
    bounced = t.bounced - g.bounced, complained = t.complained - g.complained,
    unsubscribed = t.unsubscribed - g.unsubscribed, updated_at = now()
FROM (
    SELECT tenant_id, campaign_id, sum(sent) AS sent, sum(delivered) AS delivered,
           sum(first_opened) AS opened, sum(first_clicked) AS clicked, sum(replied) AS replied,
           sum(bounced) AS bounced, sum(complained) AS complained,
           sum(unsubscribed) AS unsubscribed
    FROM analytics.campaign_analytics
    WHERE day >= $1::date
    GROUP BY tenant_id, campaign_id
) AS g
WHERE t.tenant_id = g.tenant_id AND t.campaign_id = g.campaign_id;

-- name: upsert_campaign_analytics
-- With each campaign's totals (sql/campaign_totals.sql): the same counts, added up per campaign.
WITH totals AS (
    INSERT INTO analytics.campaign_totals AS t (
        tenant_id, campaign_id, sent, delivered, opened, clicked, replied, bounced, complained,
        unsubscribed
    )
    SELECT s.tenant, s.campaign, sum(s.sent), sum(s.delivered), sum(s.first_opened),
           sum(s.first_clicked), sum(s.replied), sum(s.bounced), sum(s.complained),
           sum(s.unsubscribed)
    FROM pg_temp.staging s
    GROUP BY s.tenant, s.campaign
    ON CONFLICT (tenant_id, campaign_id) DO UPDATE SET
        sent = t.sent + EXCLUDED.sent, delivered = t.delivered + EXCLUDED.delivered,
        opened = t.opened + EXCLUDED.opened, clicked = t.clicked + EXCLUDED.clicked,
        replied = t.replied + EXCLUDED.replied, bounced = t.bounced + EXCLUDED.bounced,
        complained = t.complained + EXCLUDED.complained,
        unsubscribed = t.unsubscribed + EXCLUDED.unsubscribed, updated_at = now()
)
INSERT INTO analytics.campaign_analytics AS t (
    tenant_id, campaign_id, step, day, sent, delivered, opened, opens_total, clicked,
    clicks_total, machine_opens, machine_clicks, replied, bounced, soft_bounced, complained,
    unsubscribed, first_opened, first_clicked
)
SELECT s.tenant, s.campaign, s.step, s.day, s.sent,
       s.delivered, s.opened, s.opens_total, s.clicked, s.clicks_total, s.machine_opens,
       s.machine_clicks, s.replied, s.bounced, s.soft_bounced, s.complained, s.unsubscribed,
       s.first_opened, s.first_clicked
FROM pg_temp.staging s
ON CONFLICT (tenant_id, campaign_id, step, day) DO UPDATE SET
    sent = t.sent + EXCLUDED.sent, delivered = t.delivered + EXCLUDED.delivered,
    opened = t.opened + EXCLUDED.opened, opens_total = t.opens_total + EXCLUDED.opens_total,
    clicked = t.clicked + EXCLUDED.clicked, clicks_total = t.clicks_total + EXCLUDED.clicks_total,
    machine_opens = t.machine_opens + EXCLUDED.machine_opens,
    machine_clicks = t.machine_clicks + EXCLUDED.machine_clicks,
    replied = t.replied + EXCLUDED.replied, bounced = t.bounced + EXCLUDED.bounced,
    soft_bounced = t.soft_bounced + EXCLUDED.soft_bounced,
    complained = t.complained + EXCLUDED.complained,
    unsubscribed = t.unsubscribed + EXCLUDED.unsubscribed,
    first_opened = t.first_opened + EXCLUDED.first_opened,
    first_clicked = t.first_clicked + EXCLUDED.first_clicked, updated_at = now();

-- deliverability_daily (pipelines/deliverability_daily.py) ------------------------------------

-- name: deliverability_events
-- The events with $1 < seq <= $2. Every seq comes back (the watermark's holes are the seqs not
-- seen); only SENT, BOUNCE and COMPLAINT bring the sending account and the From and To domains
-- of their message (same tier: joined here), NULL when the message is not found.
SELECT e.seq,
       uuid_send(e.tenant_id) AS tenant,
       e.kind,
       CASE WHEN e.kind = 'BOUNCE' AND e.details->>'hard' IN ('true', 'false')
            THEN (e.details->>'hard')::boolean END AS hard,
       e.kind = 'BOUNCE' AND e.details->>'refused' = 'true' AS refused,
       m.id IS NOT NULL AS has_message,
       uuid_send(m.account_id) AS account,
       lower(substring(m.from_address FROM '@([^@]+)$')) AS from_domain,
       lower(substring(m.to_address FROM '@([^@]+)$')) AS to_domain,
       e.occurred_at AS at
FROM content.email_events e
LEFT JOIN content.email_messages m
  ON e.kind IN ('SENT', 'BOUNCE', 'COMPLAINT')
 AND m.tenant_id = e.tenant_id AND m.id = e.message_id
WHERE e.seq > $1::bigint AND e.seq <= $2::bigint;

-- name: deliverability_events_since
-- The SENT, BOUNCE and COMPLAINT events that happened at or after $1 with seq <= $2 (a rebuild
-- from a date), as deliverability_events reads them.
SELECT e.seq,
       uuid_send(e.tenant_id) AS tenant,
       e.kind,
       CASE WHEN e.kind = 'BOUNCE' AND e.details->>'hard' IN ('true', 'false')
            THEN (e.details->>'hard')::boolean END AS hard,
       e.kind = 'BOUNCE' AND e.details->>'refused' = 'true' AS refused,
       m.id IS NOT NULL AS has_message,
       uuid_send(m.account_id) AS account,
       lower(substring(m.from_address FROM '@([^@]+)$')) AS from_domain,
       lower(substring(m.to_address FROM '@([^@]+)$')) AS to_domain,
       e.occurred_at AS at
FROM content.email_events e
LEFT JOIN content.email_messages m ON m.tenant_id = e.tenant_id AND m.id = e.message_id
WHERE e.kind IN ('SENT', 'BOUNCE', 'COMPLAINT')
  AND e.occurred_at >= $1::timestamptz AND e.seq <= $2::bigint;

-- name: account_ips
-- The sending IP each account of pg_temp.batch_accounts has now (none: no row).
SELECT b.tenant, b.account, host(ip.address) AS ip
FROM pg_temp.batch_accounts b
JOIN app.email_accounts a
  ON a.tenant_id = b.tenant AND a.id = b.account
JOIN app.smtp_ip_addresses ip ON ip.tenant_id = a.tenant_id AND ip.id = a.ip_id;

-- name: upsert_deliverability_daily
INSERT INTO analytics.deliverability_daily AS t (
    tenant_id, day, subject_kind, subject, sent, bounced, complained
)
SELECT s.tenant, s.day, s.subject_kind, s.subject, s.sent, s.bounced,
       s.complained
FROM pg_temp.staging s
ON CONFLICT (tenant_id, day, subject_kind, subject) DO UPDATE SET
    sent = t.sent + EXCLUDED.sent, bounced = t.bounced + EXCLUDED.bounced,
    complained = t.complained + EXCLUDED.complained, updated_at = now();

-- billing_analytics (pipelines/billing_analytics.py) ------------------------------------------

-- name: billing_changes
-- What changed after $1 (NULL: since the beginning). `touched_from`: the earliest moment whose
-- UTC day the changes touch. A subscription counts on every day of its life, so a change to
-- it, to one of its payments or to its plan touches every day from its creation on; a payment
-- also touches the days it was made and paid on. `last_at`: the newest change seen.
SELECT least(
           (SELECT min(s.created_at) FROM app.subscriptions s
            WHERE s.updated_at > coalesce($1::timestamptz, '-infinity')),
           (SELECT min(least(p.created_at, p.paid_at, s.created_at))
            FROM app.payments p LEFT JOIN app.subscriptions s ON s.id = p.subscription_id
            WHERE p.updated_at > coalesce($1::timestamptz, '-infinity')),
           (SELECT min(s.created_at)
            FROM app.plans pl JOIN app.subscriptions s ON s.plan_id = pl.id
            WHERE pl.updated_at > coalesce($1::timestamptz, '-infinity'))
       ) AS touched_from,
       greatest((SELECT max(updated_at) FROM app.subscriptions),
                (SELECT max(updated_at) FROM app.payments),
                (SELECT max(updated_at) FROM app.plans)) AS last_at;

-- name: billing_subscriptions
-- Every subscription as it is, with its plan's monthly price (a yearly plan's over 12) and
-- whether a payment of it ever succeeded.
SELECT uuid_send(s.plan_id) AS plan, s.status, s.created_at, s.canceled_at,
       (CASE WHEN pl.interval = 'year' THEN round(pl.price_cents / 12.0)
             ELSE pl.price_cents END)::bigint AS monthly_cents,
       EXISTS (SELECT 1 FROM app.payments p
               WHERE p.subscription_id = s.id AND p.status = 'SUCCEEDED') AS paid
FROM app.subscriptions s JOIN app.plans pl ON pl.id = s.plan_id;

-- name: billing_payments
-- The succeeded payments paid at or after $1 and the failed ones made at or after $1, with the
-- plan of their subscription (NULL: none).
SELECT uuid_send(s.plan_id) AS plan, p.status, p.amount_cents, p.created_at, p.paid_at
FROM app.payments p LEFT JOIN app.subscriptions s ON s.id = p.subscription_id
WHERE (p.status = 'SUCCEEDED' AND p.paid_at >= $1::timestamptz)
   OR (p.status = 'FAILED' AND p.created_at >= $1::timestamptz);

-- name: upsert_billing_analytics
-- The days were cleared first: every row is a whole day recomputed.
INSERT INTO analytics.billing_analytics AS t (
    day, plan_id, active_subscriptions, mrr_cents, new_subscriptions, churned_subscriptions,
    revenue_cents, failed_payments
)
SELECT s.day, s.plan, s.active, s.mrr_cents, s.new, s.churned,
       s.revenue_cents, s.failed
FROM pg_temp.staging s
ON CONFLICT (day, plan_id) DO UPDATE SET
    active_subscriptions = EXCLUDED.active_subscriptions, mrr_cents = EXCLUDED.mrr_cents,
    new_subscriptions = EXCLUDED.new_subscriptions,
    churned_subscriptions = EXCLUDED.churned_subscriptions,
    revenue_cents = EXCLUDED.revenue_cents, failed_payments = EXCLUDED.failed_payments,
    updated_at = now();

-- queue_health (pipelines/queue_health.py) ----------------------------------------------------

-- name: queue_attempts
-- Every attempt that ended at or after $1: succeeded, failed (to be retried) or dead, logged when
-- it ended (`at`) with how long it ran (NULL when its lease expired: it never reported), and
-- its job's priority (NULL: the job is gone). `run_at` only for the attempt that ended the job:
-- a job keeps the run_at of its last attempt (a failed one's is already its retry's).
SELECT l.at, l.status, l.duration_ms, j.priority,
       CASE WHEN l.status IN ('succeeded', 'dead') AND l.attempt = j.attempts
            THEN j.run_at END AS run_at
FROM queue.job_logs l
LEFT JOIN queue.jobs j ON j.id = l.job_id
WHERE l.at >= $1::timestamptz AND l.status IN ('succeeded', 'failed', 'dead');

-- name: upsert_queue_health
-- The hours were cleared first: every row is a whole hour recomputed.
INSERT INTO analytics.queue_health AS t (
    hour, tier, finished, failed, dead, wait_p50_ms, wait_p95_ms, run_p50_ms, run_p95_ms
)
SELECT s.hour, s.tier, s.finished, s.failed, s.dead, s.wait_p50_ms, s.wait_p95_ms,
       s.run_p50_ms, s.run_p95_ms
FROM pg_temp.staging s
ON CONFLICT (hour, tier) DO UPDATE SET
    finished = EXCLUDED.finished, failed = EXCLUDED.failed, dead = EXCLUDED.dead,
    wait_p50_ms = EXCLUDED.wait_p50_ms, wait_p95_ms = EXCLUDED.wait_p95_ms,
    run_p50_ms = EXCLUDED.run_p50_ms, run_p95_ms = EXCLUDED.run_p95_ms, updated_at = now();

-- name: billing_infrastructure
-- Each tenant holding sending infrastructure now (VPS instances not decommissioned, a failed
-- one's server may still exist; IPs not released): how many, their monthly cost, its plan (its paying
-- subscription's, else the tenant's), and that subscription's monthly price (0: none paying).
WITH vps AS (
    SELECT tenant_id, count(*) AS n, coalesce(sum(monthly_cost_cents), 0) AS cents
    FROM app.vps_instances WHERE status <> 'DECOMMISSIONED' GROUP BY tenant_id
), ips AS (
    SELECT tenant_id, count(*) AS n, coalesce(sum(monthly_cost_cents), 0) AS cents
    FROM app.smtp_ip_addresses WHERE status <> 'RELEASED' GROUP BY tenant_id
), paying AS (
    SELECT DISTINCT ON (s.tenant_id) s.tenant_id, s.plan_id,
           (CASE WHEN pl.interval = 'year' THEN round(pl.price_cents / 12.0)
                 ELSE pl.price_cents END)::bigint AS monthly_cents
    FROM app.subscriptions s JOIN app.plans pl ON pl.id = s.plan_id
    WHERE s.status IN ('ACTIVE', 'PAST_DUE', 'GRACE')
    ORDER BY s.tenant_id, s.created_at DESC
)
SELECT uuid_send(t.id) AS tenant, uuid_send(coalesce(p.plan_id, t.plan_id)) AS plan,
       coalesce(v.n, 0)::int AS vps_instances, coalesce(i.n, 0)::int AS sending_ips,
       (coalesce(v.cents, 0) + coalesce(i.cents, 0))::bigint AS infra_cost_cents,
       coalesce(p.monthly_cents, 0)::bigint AS mrr_cents
FROM (SELECT tenant_id FROM vps UNION SELECT tenant_id FROM ips) held
JOIN app.tenants t ON t.id = held.tenant_id
LEFT JOIN vps v ON v.tenant_id = t.id
LEFT JOIN ips i ON i.tenant_id = t.id
LEFT JOIN paying p ON p.tenant_id = t.id;

-- name: upsert_infrastructure_costs
-- The day was cleared first: its rows are the tenants' infrastructure now.
INSERT INTO analytics.infrastructure_costs AS t (
    tenant_id, day, plan_id, vps_instances, sending_ips, infra_cost_cents, mrr_cents
)
SELECT s.tenant, s.day, s.plan, s.vps_instances, s.sending_ips, s.infra_cost_cents, s.mrr_cents
FROM pg_temp.staging s
ON CONFLICT (tenant_id, day) DO UPDATE SET
    plan_id = EXCLUDED.plan_id, vps_instances = EXCLUDED.vps_instances,
    sending_ips = EXCLUDED.sending_ips, infra_cost_cents = EXCLUDED.infra_cost_cents,
    mrr_cents = EXCLUDED.mrr_cents, updated_at = now();
