-- The OLAP tier's tables, written only by the pipelines (pipelines/), read by the dashboards.
-- Tenant rollups are keyed by tenant first (the tenant is the distribution key on Citus). Counts
-- are what happened on a tenant-local day; the definitions are in docs/analytics.md. `opened`
-- and `clicked` are distinct messages that day; `first_opened` and `first_clicked` count a
-- message on the day of its first human open (click) only, so their sums over days are the
-- distinct messages ever opened (clicked): what a campaign's lifetime figures add up.

-- name: daily_analytics
-- One row per tenant, local day and campaign; campaign_id = the nil UUID is the tenant-wide row
-- (every message, with or without a campaign).
CREATE TABLE analytics.daily_analytics (
    tenant_id uuid NOT NULL,
    day date NOT NULL,
    campaign_id uuid NOT NULL,
    sent bigint NOT NULL DEFAULT 0,
    delivered bigint NOT NULL DEFAULT 0,
    opened bigint NOT NULL DEFAULT 0,
    opens_total bigint NOT NULL DEFAULT 0,
    clicked bigint NOT NULL DEFAULT 0,
    clicks_total bigint NOT NULL DEFAULT 0,
    machine_opens bigint NOT NULL DEFAULT 0,
    machine_clicks bigint NOT NULL DEFAULT 0,
    replied bigint NOT NULL DEFAULT 0,
    bounced bigint NOT NULL DEFAULT 0,
    soft_bounced bigint NOT NULL DEFAULT 0,
    complained bigint NOT NULL DEFAULT 0,
    unsubscribed bigint NOT NULL DEFAULT 0,
    first_opened bigint NOT NULL DEFAULT 0,
    first_clicked bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_daily_analytics PRIMARY KEY (tenant_id, day, campaign_id)
);

-- name: campaign_analytics
-- One row per tenant, campaign, step and local day, with the rates CampaignStats shows.
CREATE TABLE analytics.campaign_analytics (
    tenant_id uuid NOT NULL,
    campaign_id uuid NOT NULL,
    step smallint NOT NULL,
    day date NOT NULL,
    sent bigint NOT NULL DEFAULT 0,
    delivered bigint NOT NULL DEFAULT 0,
    opened bigint NOT NULL DEFAULT 0,
    opens_total bigint NOT NULL DEFAULT 0,
    clicked bigint NOT NULL DEFAULT 0,
    clicks_total bigint NOT NULL DEFAULT 0,
    machine_opens bigint NOT NULL DEFAULT 0,
    machine_clicks bigint NOT NULL DEFAULT 0,
    replied bigint NOT NULL DEFAULT 0,
    bounced bigint NOT NULL DEFAULT 0,
    soft_bounced bigint NOT NULL DEFAULT 0,
    complained bigint NOT NULL DEFAULT 0,
    unsubscribed bigint NOT NULL DEFAULT 0,
    first_opened bigint NOT NULL DEFAULT 0,
    first_clicked bigint NOT NULL DEFAULT 0,
    open_rate double precision GENERATED ALWAYS AS
        (CASE WHEN delivered > 0 THEN opened::float8 / delivered ELSE 0 END) STORED,
    click_rate double precision GENERATED ALWAYS AS
        (CASE WHEN delivered > 0 THEN clicked::float8 / delivered ELSE 0 END) STORED,
    reply_rate double precision GENERATED ALWAYS AS
        (CASE WHEN delivered > 0 THEN replied::float8 / delivered ELSE 0 END) STORED,
    bounce_rate double precision GENERATED ALWAYS AS
        (CASE WHEN sent > 0 THEN bounced::float8 / sent ELSE 0 END) STORED,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_campaign_analytics PRIMARY KEY (tenant_id, campaign_id, step, day)
);

-- name: deliverability_daily
-- Per tenant, local day and subject: a sending IP, a sending (From) domain, or a recipient
-- provider (gmail, outlook, yahoo, other).
CREATE TABLE analytics.deliverability_daily (
    tenant_id uuid NOT NULL,
    day date NOT NULL,
    subject_kind varchar(8) NOT NULL,
    subject varchar(253) NOT NULL,
    sent bigint NOT NULL DEFAULT 0,
    bounced bigint NOT NULL DEFAULT 0,
    complained bigint NOT NULL DEFAULT 0,
    bounce_rate double precision GENERATED ALWAYS AS
        (CASE WHEN sent > 0 THEN bounced::float8 / sent ELSE 0 END) STORED,
    complaint_rate double precision GENERATED ALWAYS AS
        (CASE WHEN sent > 0 THEN complained::float8 / sent ELSE 0 END) STORED,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_deliverability_daily PRIMARY KEY (tenant_id, day, subject_kind, subject),
    CONSTRAINT ck_deliverability_daily_subject_kind_known
        CHECK (subject_kind IN ('ip', 'domain', 'provider'))
);

-- name: billing_analytics
-- Platform figures per UTC day and plan (no tenant: staff read them, tenants never do).
CREATE TABLE analytics.billing_analytics (
    day date NOT NULL,
    plan_id uuid NOT NULL,
    active_subscriptions integer NOT NULL DEFAULT 0,
    mrr_cents bigint NOT NULL DEFAULT 0,
    new_subscriptions integer NOT NULL DEFAULT 0,
    churned_subscriptions integer NOT NULL DEFAULT 0,
    revenue_cents bigint NOT NULL DEFAULT 0,
    failed_payments integer NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_billing_analytics PRIMARY KEY (day, plan_id)
);

-- name: queue_health
-- Platform figures per UTC hour and priority tier.
CREATE TABLE analytics.queue_health (
    hour timestamptz NOT NULL,
    tier varchar(16) NOT NULL,
    finished integer NOT NULL DEFAULT 0,
    failed integer NOT NULL DEFAULT 0,
    dead integer NOT NULL DEFAULT 0,
    wait_p50_ms double precision,
    wait_p95_ms double precision,
    run_p50_ms double precision,
    run_p95_ms double precision,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_queue_health PRIMARY KEY (hour, tier)
);

-- name: pipeline_watermarks
-- How far each pipeline has read. Event pipelines: every event with seq <= last_seq is counted
-- (or never committed), and above it every seq up to max_seq except `holes` ({seq: first seen,
-- epoch seconds}: numbers taken by transactions not yet committed when the run read). Time
-- pipelines: last_at. Written in the same transaction as the rows the run upserted.
CREATE TABLE analytics.pipeline_watermarks (
    pipeline varchar(64) NOT NULL,
    last_seq bigint NOT NULL DEFAULT 0,
    max_seq bigint NOT NULL DEFAULT 0,
    holes jsonb NOT NULL DEFAULT '{}',
    last_at timestamptz,
    last_run_at timestamptz,
    last_ok_at timestamptz,
    last_error text,
    rows_read bigint NOT NULL DEFAULT 0,
    rows_written bigint NOT NULL DEFAULT 0,
    rows_skipped bigint NOT NULL DEFAULT 0,
    seconds double precision,
    CONSTRAINT pk_pipeline_watermarks PRIMARY KEY (pipeline)
);
