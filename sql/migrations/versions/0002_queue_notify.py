"""queue: wake the queuers with NOTIFY when ready jobs are inserted

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

from alembic import op

from penguinmails.migrations import run_sql_file

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    run_sql_file("queue_notify.sql")


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS jobs_notify_ready ON queue.jobs")
    op.execute("DROP FUNCTION IF EXISTS queue.notify_ready_jobs()")
