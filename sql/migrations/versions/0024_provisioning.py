"""The sending infrastructure's state: a VPS's failed step and its reason, when its current
step began (a step that waits, on DNS or warm-up, gives up after a while), how often it was
retried by hand, and its monthly cost; an IP's monthly cost, and its address unique among the
IPs held (a released address may be bought again); a domain's MX host and the
addresses its SPF names once its accounts send from a VPS of the tenant's; and per tenant and
day, its infrastructure's monthly cost against its subscription's monthly revenue.

Revision ID: 0024
Revises: 0023
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from penguinmails.migrations import run_sql_file

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """CREATE TABLE analytics.infrastructure_costs (
            tenant_id uuid NOT NULL, day date NOT NULL, plan_id uuid NOT NULL,
            vps_instances integer NOT NULL DEFAULT 0, sending_ips integer NOT NULL DEFAULT 0,
            infra_cost_cents bigint NOT NULL DEFAULT 0, mrr_cents bigint NOT NULL DEFAULT 0,
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_infrastructure_costs PRIMARY KEY (tenant_id, day))"""
    )
    run_sql_file("rls.sql")
    run_sql_file("grants.sql")
    op.add_column("vps_instances", sa.Column("failed_step", sa.String(32)), schema="app")
    op.add_column("vps_instances", sa.Column("failure_reason", sa.Text()), schema="app")
    op.add_column(
        "vps_instances", sa.Column("step_started_at", sa.DateTime(timezone=True)), schema="app"
    )
    op.add_column(
        "vps_instances",
        sa.Column("retries", sa.Integer(), nullable=False, server_default="0"),
        schema="app",
    )
    op.add_column("vps_instances", sa.Column("monthly_cost_cents", sa.Integer()), schema="app")
    op.add_column("smtp_ip_addresses", sa.Column("monthly_cost_cents", sa.Integer()), schema="app")
    op.drop_constraint(
        "uq_smtp_ip_addresses_address", "smtp_ip_addresses", type_="unique", schema="app"
    )
    op.create_index(
        "uq_smtp_ip_addresses_address_held", "smtp_ip_addresses", ["address"], unique=True,
        schema="app", postgresql_where=sa.text("status <> 'RELEASED'"),
    )  # fmt: skip
    op.add_column("domains", sa.Column("mx_host", sa.String(253)), schema="app")
    op.add_column(
        "domains",
        sa.Column("spf_ips", JSONB(), nullable=False, server_default="[]"),
        schema="app",
    )


def downgrade() -> None:
    op.drop_table("infrastructure_costs", schema="analytics")
    op.drop_column("domains", "spf_ips", schema="app")
    op.drop_column("domains", "mx_host", schema="app")
    op.drop_column("smtp_ip_addresses", "monthly_cost_cents", schema="app")
    op.drop_index("uq_smtp_ip_addresses_address_held", "smtp_ip_addresses", schema="app")
    op.create_unique_constraint(
        "uq_smtp_ip_addresses_address", "smtp_ip_addresses", ["address"], schema="app"
    )
    for column in ("monthly_cost_cents", "retries", "step_started_at", "failure_reason",
                   "failed_step"):  # fmt: skip
        op.drop_column("vps_instances", column, schema="app")
