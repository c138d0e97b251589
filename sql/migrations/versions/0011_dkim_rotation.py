"""app.domains: DKIM key rotation. A new key waits under its own selector (`dkim_next_*`) until
its record verifies, then signs; the key it replaces stays published, and listed, until
`dkim_retire_at` (`dkim_retiring_*`).

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    ("dkim_next_selector", sa.String(63)),
    ("dkim_next_public_key", sa.Text()),
    ("dkim_next_private_key_encrypted", sa.LargeBinary()),
    ("dkim_next_encryption_key_id", sa.String(32)),
    ("dkim_retiring_selector", sa.String(63)),
    ("dkim_retiring_public_key", sa.Text()),
    ("dkim_retire_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    for name, type_ in COLUMNS:
        op.add_column("domains", sa.Column(name, type_, nullable=True), schema="app")


def downgrade() -> None:
    for name, _ in reversed(COLUMNS):
        op.drop_column("domains", name, schema="app")
