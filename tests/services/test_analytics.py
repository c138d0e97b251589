"""Campaign totals: what they add up, and that a page of them is read from one index alone."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import asyncpg
from sqlalchemy import event, insert

from models.analytics import CampaignAnalytics
from models.sessions import Database
from penguinmails.settings import Settings
from services.analytics import COUNTS, campaign_totals
from tests.factories import create_tenant


async def _vacuum(settings: Settings) -> None:
    """What autovacuum does in time: the table's pages marked all-visible, its statistics new
    (an index-only scan reads no heap page only once its pages are marked)."""
    owner = settings.role_url("oltp", "owner").set(drivername="postgresql")
    conn = await asyncpg.connect(owner.render_as_string(hide_password=False))
    try:
        await conn.execute("VACUUM ANALYZE analytics.campaign_analytics")
    finally:
        await conn.close()


async def test_campaign_totals_add_up_steps_and_days_and_come_from_the_index_alone(
    db: Database, settings: Settings
) -> None:
    campaign, silent = uuid.uuid4(), uuid.uuid4()
    first = date(2025, 3, 1)
    async with db.system_session() as session:
        tenant = await create_tenant(session, "Totals")
        await session.execute(
            insert(CampaignAnalytics),
            [
                {
                    "tenant_id": tenant,
                    "campaign_id": campaign,
                    "step": step,
                    "day": first + timedelta(days=n),
                    "sent": 10,
                    "delivered": 9,
                    "opened": 5,  # distinct that day; the lifetime figure is first_opened's sum
                    "first_opened": 2,
                    "clicked": 3,
                    "first_clicked": 1,
                    "replied": 1,
                    "bounced": 1,
                    "complained": 0,
                    "unsubscribed": 1,
                }
                for step in (1, 2)
                for n in range(3)
            ],
        )
    await _vacuum(settings)
    statements: list[tuple[str, tuple]] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        if "campaign_analytics" in statement:
            statements.append((statement, parameters))

    engine = db.engine().sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        async with db.tenant_session(tenant) as session:
            totals = await campaign_totals(session, [campaign, silent])
    finally:
        event.remove(engine, "before_cursor_execute", record)

    assert totals[campaign] == {
        "sent": 60,
        "delivered": 54,
        "opened": 12,
        "clicked": 6,
        "replied": 6,
        "bounced": 6,
        "complained": 0,
        "unsubscribed": 6,
    }
    assert totals[silent] == dict.fromkeys(COUNTS, 0)

    [(statement, parameters)] = statements
    async with db.tenant_session(tenant) as session:
        conn = await session.connection()
        # A six-row table is read faster whole: plans that would read the heap are set aside.
        await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        await conn.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
        plan = "\n".join(
            row[0] for row in await conn.exec_driver_sql(f"EXPLAIN {statement}", parameters)
        )
    assert "Index Only Scan using ix_campaign_analytics_tenant_id_campaign_id" in plan, plan
