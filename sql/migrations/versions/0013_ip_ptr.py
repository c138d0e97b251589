"""app.smtp_ip_addresses: the reverse DNS seen for the address at the last check (`ptr`) and
whether it is forward-confirmed and names the IP's HELO host (`ptr_status`, like a domain's
records: PENDING, VERIFIED, MISMATCH, MISSING).

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("smtp_ip_addresses", sa.Column("ptr", sa.String(253)), schema="app")
    op.add_column(
        "smtp_ip_addresses",
        sa.Column("ptr_status", sa.String(8), nullable=False, server_default="PENDING"),
        schema="app",
    )


def downgrade() -> None:
    op.drop_column("smtp_ip_addresses", "ptr_status", schema="app")
    op.drop_column("smtp_ip_addresses", "ptr", schema="app")
