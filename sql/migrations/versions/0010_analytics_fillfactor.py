"""analytics: room on each page for the pipelines' updates. Every tick adds its counts to rows
already there (`… ON CONFLICT DO UPDATE`); on a full page the new row version goes to another
page and every index gets a new entry. With free space left on the page, and no indexed column
changed, the update stays on its page (a HOT update) and the indexes are not touched.

The setting applies to pages written from now on: a full rebuild (`pipelines run --full`) lays
the existing rows out again.

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FILLFACTOR = 80
UPDATED_IN_PLACE = (
    "daily_analytics",
    "campaign_analytics",
    "campaign_totals",
    "deliverability_daily",
)


def upgrade() -> None:
    for table in UPDATED_IN_PLACE:
        op.execute(f"ALTER TABLE analytics.{table} SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    for table in UPDATED_IN_PLACE:
        op.execute(f"ALTER TABLE analytics.{table} RESET (fillfactor)")
