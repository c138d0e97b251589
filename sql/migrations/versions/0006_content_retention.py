"""content retention: an index of the messages that still have a body, by age, so the hourly
retention job finds the old ones without reading the whole table

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.get_context().autocommit_block():  # sending goes on while the index is built
        op.execute(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_email_messages_created_at_with_body "
            "ON content.email_messages (created_at) WHERE body_compressed IS NOT NULL"
        )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS content.ix_email_messages_created_at_with_body")
