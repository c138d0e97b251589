"""sending: a message is SENDING while its SMTP transaction runs; UNSUBSCRIBE inbound mail;
an index for cancelling one lead's pending sends; the UIDVALIDITY of an account's inbox;
statistics refreshed on request after bulk loads

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from penguinmails.migrations import run_sql_file

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MESSAGE_STATUSES = ("PENDING", "SENDING", "SENT", "BOUNCED", "FAILED")
INBOUND_KINDS = ("DSN", "ARF", "REPLY", "UNSUBSCRIBE", "UNKNOWN")
PENDING_JOBS = "kind = 'send_step' AND status IN ('queued', 'failed', 'dispatched')"


def _check(table: str, name: str, column: str, values: Sequence[str]) -> str:
    """Replaces the enum's CHECK, NOT VALID: returns the statement that validates it, to run
    outside the migration's transaction (so the big tables are not locked against writes while
    every row is checked)."""
    listed = ", ".join(f"'{v}'" for v in values)
    constraint = f"ck_{table.split('.')[1]}_{name}"
    op.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {constraint}")
    op.execute(
        f"ALTER TABLE {table} ADD CONSTRAINT {constraint} CHECK ({column} IN ({listed})) NOT VALID"
    )
    return f"ALTER TABLE {table} VALIDATE CONSTRAINT {constraint}"


def upgrade() -> None:
    validations = [
        _check("content.email_messages", "message_status", "status", MESSAGE_STATUSES),
        _check("content.inbound_messages", "inbound_kind", "kind", INBOUND_KINDS),
    ]
    op.add_column(
        "email_accounts", sa.Column("imap_uidvalidity", sa.BigInteger(), nullable=True),
        schema="app",
    )  # fmt: skip
    run_sql_file("statistics.sql")
    run_sql_file("grants.sql")
    with op.get_context().autocommit_block():  # what the above committed stays committed
        for validation in validations:
            op.execute(validation)
        op.execute(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_jobs_tenant_id_lead_sends ON queue.jobs "
            f"(tenant_id, (payload->>'lead_id')) WHERE {PENDING_JOBS}"
        )


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS app.refresh_statistics(text)")
    op.drop_column("email_accounts", "imap_uidvalidity", schema="app")
    op.execute("DROP INDEX IF EXISTS queue.ix_jobs_tenant_id_lead_sends")
    op.execute("UPDATE content.inbound_messages SET kind = 'UNKNOWN' WHERE kind = 'UNSUBSCRIBE'")
    # Whether a SENDING message went out is unknown: taken as sent, as the retry would have.
    op.execute("UPDATE content.email_messages SET status = 'SENT' WHERE status = 'SENDING'")
    for validation in (
        _check("content.inbound_messages", "inbound_kind", "kind",
               [k for k in INBOUND_KINDS if k != "UNSUBSCRIBE"]),
        _check("content.email_messages", "message_status", "status",
               [s for s in MESSAGE_STATUSES if s != "SENDING"]),
    ):  # fmt: skip
        op.execute(validation)
