"""app.domains.blacklisted_on: the DNS blocklists that list the domain at the last check
(services/reputation.py), as app.smtp_ip_addresses has for its addresses.

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "domains",
        sa.Column("blacklisted_on", JSONB, nullable=False, server_default="[]"),
        schema="app",
    )


def downgrade() -> None:
    op.drop_column("domains", "blacklisted_on", schema="app")
