"""analytics: the OLAP tables the pipelines fill (sql/analytics_tables.sql) in place of the
first drafts nothing wrote, and a time zone per tenant (its analytics days)

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from penguinmails.migrations import run_sql_file

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DRAFTS = (
    "daily_analytics",
    "campaign_analytics",
    "deliverability_daily",
    "billing_analytics",
    "pipeline_watermarks",
)
NEW = (*DRAFTS, "queue_health")

# The tables of revision 0001, restored by the downgrade (they never held data).
_COUNTS = """sent bigint NOT NULL DEFAULT 0, delivered bigint NOT NULL DEFAULT 0,
    opened bigint NOT NULL DEFAULT 0, clicked bigint NOT NULL DEFAULT 0,
    replied bigint NOT NULL DEFAULT 0, bounced bigint NOT NULL DEFAULT 0,
    complained bigint NOT NULL DEFAULT 0, unsubscribed bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()"""
DRAFT_DDL = (
    f"""CREATE TABLE analytics.daily_analytics (tenant_id uuid NOT NULL, day date NOT NULL,
    {_COUNTS}, CONSTRAINT pk_daily_analytics PRIMARY KEY (tenant_id, day))""",
    f"""CREATE TABLE analytics.campaign_analytics (tenant_id uuid NOT NULL,
    campaign_id uuid NOT NULL, day date NOT NULL, {_COUNTS},
    CONSTRAINT pk_campaign_analytics PRIMARY KEY (tenant_id, campaign_id, day))""",
    """CREATE TABLE analytics.deliverability_daily (tenant_id uuid NOT NULL, day date NOT NULL,
    subject_kind varchar(8) NOT NULL, subject varchar(253) NOT NULL, ip inet,
    sent bigint NOT NULL DEFAULT 0, bounced bigint NOT NULL DEFAULT 0,
    complained bigint NOT NULL DEFAULT 0, blacklist_hits integer NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_deliverability_daily PRIMARY KEY (tenant_id, day, subject_kind, subject),
    CONSTRAINT ck_deliverability_daily_subject_kind_known CHECK (subject_kind IN ('ip', 'domain')))""",
    """CREATE TABLE analytics.billing_analytics (tenant_id uuid NOT NULL, month date NOT NULL,
    emails_sent bigint NOT NULL DEFAULT 0, emails_limit bigint NOT NULL DEFAULT 0,
    amount_paid_cents bigint NOT NULL DEFAULT 0, failed_payments integer NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT pk_billing_analytics PRIMARY KEY (tenant_id, month))""",
    """CREATE TABLE analytics.pipeline_watermarks (pipeline varchar(64) NOT NULL,
    last_seq bigint NOT NULL DEFAULT 0, last_at timestamptz, last_run_at timestamptz,
    CONSTRAINT pk_pipeline_watermarks PRIMARY KEY (pipeline))""",
)


def upgrade() -> None:
    op.add_column(
        "tenants",
        sa.Column("timezone", sa.String(length=64), server_default="UTC", nullable=False),
        schema="app",
    )
    for name in DRAFTS:
        op.drop_table(name, schema="analytics")
    run_sql_file("analytics_tables.sql")
    run_sql_file("rls.sql")  # tenant_isolation on the new tenant tables
    run_sql_file("grants.sql")


def downgrade() -> None:
    for name in NEW:
        op.drop_table(name, schema="analytics")
    for ddl in DRAFT_DDL:
        op.execute(ddl)
    run_sql_file("rls.sql")
    run_sql_file("grants.sql")
    op.drop_column("tenants", "timezone", schema="app")
