"""Reputation and the sending guards (services/reputation.py): a 0–100 score per domain and per
email account (sending IPs had theirs), and per domain and per sending IP the guard its
complaint and hard-bounce rates put it under (NONE, THROTTLED, PAUSED), since when, why, and
when platform staff last lifted it by hand.

Revision ID: 0015
Revises: 0014
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GUARDED = ("domains", "smtp_ip_addresses")
SCORED = ("domains", "email_accounts")


def upgrade() -> None:
    for table in SCORED:
        op.add_column(
            table,
            sa.Column("reputation_score", sa.Integer, nullable=False, server_default="100"),
            schema="app",
        )
        op.create_check_constraint(
            op.f(f"ck_{table}_reputation_range"), table, "reputation_score BETWEEN 0 AND 100",
            schema="app",
        )
    for table in GUARDED:
        op.add_column(
            table,
            sa.Column("guard", sa.String(9), nullable=False, server_default="NONE"),
            schema="app",
        )
        op.create_check_constraint(
            op.f(f"ck_{table}_guard_known"), table, "guard IN ('NONE', 'THROTTLED', 'PAUSED')",
            schema="app",
        )
        op.add_column(table, sa.Column("guard_reason", sa.Text), schema="app")
        op.add_column(table, sa.Column("guard_since", sa.DateTime(timezone=True)), schema="app")
        op.add_column(
            table, sa.Column("guard_lifted_at", sa.DateTime(timezone=True)), schema="app"
        )


def downgrade() -> None:
    for table in GUARDED:
        for column in ("guard_lifted_at", "guard_since", "guard_reason", "guard"):
            op.drop_column(table, column, schema="app")
    for table in SCORED:
        op.drop_column(table, "reputation_score", schema="app")
