"""content.email_events.occurred_at defaults to the time of the insert: the first migration
declared the default as the string 'now()', which PostgreSQL evaluated once, when the table was
created, so every event written without a time (all of them) carried the migration's moment.
SENT events get their message's sent_at back; the others have no second record of their time.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        DO $$
        DECLARE
            expression text;
            stuck timestamptz;
        BEGIN
            SELECT pg_get_expr(d.adbin, d.adrelid) INTO expression
            FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
            WHERE d.adrelid = 'content.email_events'::regclass AND a.attname = 'occurred_at';
            IF expression IS NOT NULL AND expression NOT LIKE 'now()%' THEN
                EXECUTE 'SELECT ' || expression INTO stuck;  -- the constant it became
            END IF;
            ALTER TABLE content.email_events ALTER COLUMN occurred_at SET DEFAULT now();
            UPDATE content.email_events e SET occurred_at = m.sent_at
            FROM content.email_messages m
            WHERE e.kind = 'SENT' AND e.occurred_at = stuck AND m.tenant_id = e.tenant_id
              AND m.id = e.message_id AND m.sent_at IS NOT NULL;
        END
        $$
        """
    )


def downgrade() -> None:
    pass  # the constant default was a mistake; there is nothing to go back to
