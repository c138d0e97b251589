"""Partial indexes for the live queue status, read up to twice a second per watched tenant:
the tenant's failed and dead job logs by time, and its sent messages by time. Without them,
`failed_last_hour` and `sent_last_minute` read every log and every message the tenant ever had.

Revision ID: 0022
Revises: 0021
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_job_logs_tenant_id_at_failures",
        "job_logs",
        ["tenant_id", "at"],
        schema="queue",
        postgresql_where="status IN ('failed', 'dead')",
    )
    op.create_index(
        "ix_email_messages_tenant_id_sent_at_sent",
        "email_messages",
        ["tenant_id", "sent_at"],
        schema="content",
        postgresql_where="status = 'SENT'",
    )


def downgrade() -> None:
    op.drop_index("ix_email_messages_tenant_id_sent_at_sent", "email_messages", schema="content")
    op.drop_index("ix_job_logs_tenant_id_at_failures", "job_logs", schema="queue")
