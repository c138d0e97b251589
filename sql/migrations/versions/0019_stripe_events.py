"""Stripe webhooks: a subscription's cancel-at-period-end, a payment's hosted invoice and the
Stripe time of its latest state (so a late event never overwrites a newer one), and the processed
events by time for reconciliation.

Revision ID: 0019
Revises: 0018
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "subscriptions",
        sa.Column("cancel_at_period_end", sa.Boolean(), server_default="false", nullable=False),
        schema="app",
    )
    op.add_column("payments", sa.Column("hosted_invoice_url", sa.Text()), schema="app")
    op.add_column(
        "payments", sa.Column("stripe_updated_at", sa.DateTime(timezone=True)), schema="app"
    )
    op.create_index(
        "ix_stripe_events_stripe_created_at", "stripe_events", ["stripe_created_at"], schema="app"
    )


def downgrade() -> None:
    op.drop_index("ix_stripe_events_stripe_created_at", "stripe_events", schema="app")
    op.drop_column("payments", "stripe_updated_at", schema="app")
    op.drop_column("payments", "hosted_invoice_url", schema="app")
    op.drop_column("subscriptions", "cancel_at_period_end", schema="app")
