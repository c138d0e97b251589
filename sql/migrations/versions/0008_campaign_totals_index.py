"""analytics.campaign_analytics: an index that holds the counts Campaign.stats adds up, so a
page of campaigns reads their totals from the index alone. From the table, it read one heap page
per (campaign, step, day) row: the pipelines' upserts leave a campaign's rows one to a page.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.get_context().autocommit_block():  # the pipelines go on writing while it is built
        op.execute(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_campaign_analytics_tenant_id_campaign_id "
            "ON analytics.campaign_analytics (tenant_id, campaign_id) INCLUDE (sent, delivered, "
            "first_opened, first_clicked, replied, bounced, complained, unsubscribed)"
        )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS analytics.ix_campaign_analytics_tenant_id_campaign_id")
