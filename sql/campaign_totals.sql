-- analytics.campaign_totals (migration 0009): each campaign's lifetime counts, what
-- Campaign.stats shows, one row per campaign so a page of 100 reads 100 rows, not a row per
-- step and day of each. Kept by the campaign_analytics pipeline in the transaction that writes
-- campaign_analytics (sql/pipelines.sql, upsert_campaign_analytics): always the sums of its rows,
-- `opened` and `clicked` those of first_opened and first_clicked (distinct messages ever).

-- name: campaign_totals
CREATE TABLE analytics.campaign_totals (
    tenant_id uuid NOT NULL,
    campaign_id uuid NOT NULL,
    sent bigint NOT NULL DEFAULT 0,
    delivered bigint NOT NULL DEFAULT 0,
    opened bigint NOT NULL DEFAULT 0,
    clicked bigint NOT NULL DEFAULT 0,
    replied bigint NOT NULL DEFAULT 0,
    bounced bigint NOT NULL DEFAULT 0,
    complained bigint NOT NULL DEFAULT 0,
    unsubscribed bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_campaign_totals PRIMARY KEY (tenant_id, campaign_id)
);

-- name: fill_campaign_totals
INSERT INTO analytics.campaign_totals (
    tenant_id, campaign_id, sent, delivered, opened, clicked, replied, bounced, complained,
    unsubscribed
)
SELECT tenant_id, campaign_id, sum(sent), sum(delivered), sum(first_opened), sum(first_clicked),
       sum(replied), sum(bounced), sum(complained), sum(unsubscribed)
FROM analytics.campaign_analytics
GROUP BY tenant_id, campaign_id;
