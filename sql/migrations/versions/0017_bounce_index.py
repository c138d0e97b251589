"""content.email_events: a partial index of the bounces per tenant and time, for the
soft-bounce count of one recipient (three in seven days suppress it), which otherwise read all
of the tenant's events of the last seven days.

Revision ID: 0017
Revises: 0016
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_email_events_tenant_id_occurred_at_bounces",
        "email_events",
        ["tenant_id", "occurred_at"],
        schema="content",
        postgresql_where="kind = 'BOUNCE'",
    )


def downgrade() -> None:
    op.drop_index("ix_email_events_tenant_id_occurred_at_bounces", "email_events", schema="content")
