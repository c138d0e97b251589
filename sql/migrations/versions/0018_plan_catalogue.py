"""app.plans: whether a plan is public (listed, and open to sign-up) and its Stripe product, for
the plan catalogue (penguinmails/plans.toml, services/plan_catalogue.py).

Revision ID: 0018
Revises: 0017
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "plans", sa.Column("public", sa.Boolean(), server_default="true", nullable=False),
        schema="app",
    )
    op.add_column("plans", sa.Column("stripe_product_id", sa.String(64)), schema="app")


def downgrade() -> None:
    op.drop_column("plans", "stripe_product_id", schema="app")
    op.drop_column("plans", "public", schema="app")
