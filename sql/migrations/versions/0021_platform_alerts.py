"""Platform alerts: app.alerts.tenant_id may be NULL (the platform's own conditions, which RLS
shows to no tenant), one open platform alert per kind and subject, every alert raised or
resolved queued for the alert webhook (sql/alerts.sql), and the system role may read every
session's statement in pg_stat_activity (the slow query alert).

Revision ID: 0021
Revises: 0020
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from penguinmails.migrations import run_sql_file

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("alerts", "tenant_id", nullable=True, schema="app")
    op.create_index(
        "uq_alerts_platform_open",
        "alerts",
        ["kind", "subject"],
        unique=True,
        schema="app",
        postgresql_where=sa.text("tenant_id IS NULL AND resolved_at IS NULL"),
    )
    run_sql_file("alerts.sql")
    run_sql_file("grants.sql")


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS alert_raised ON app.alerts")
    op.execute("DROP TRIGGER IF EXISTS alert_resolved ON app.alerts")
    op.execute("DROP FUNCTION IF EXISTS app.queue_alert_webhook()")
    op.execute("DELETE FROM app.alerts WHERE tenant_id IS NULL")
    op.drop_index("uq_alerts_platform_open", "alerts", schema="app")
    op.alter_column("alerts", "tenant_id", nullable=False, schema="app")
