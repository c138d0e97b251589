"""app.suppressions: a reason for addresses suppressed after repeated soft bounces
(services/bounces.py: three within seven days).

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = ("HARD_BOUNCE", "COMPLAINT", "UNSUBSCRIBE", "MANUAL")
AFTER = (*BEFORE, "REPEATED_SOFT_BOUNCE")


def _allow(values: tuple[str, ...]) -> None:
    listed = ", ".join(f"'{v}'" for v in values)
    op.execute("ALTER TABLE app.suppressions DROP CONSTRAINT ck_suppressions_suppression_reason")
    op.execute(
        "ALTER TABLE app.suppressions ADD CONSTRAINT ck_suppressions_suppression_reason "
        f"CHECK (reason IN ({listed}))"
    )


def upgrade() -> None:
    _allow(AFTER)


def downgrade() -> None:
    op.execute("DELETE FROM app.suppressions WHERE reason = 'REPEATED_SOFT_BOUNCE'")
    _allow(BEFORE)
