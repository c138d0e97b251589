"""Campaign totals: a page of them read from analytics.campaign_totals by primary key, the
tenant's own only."""

from __future__ import annotations

import uuid

from sqlalchemy import event, insert

from models.analytics import CampaignTotals
from models.sessions import Database
from services.analytics import COUNTS, campaign_totals
from tests.factories import create_tenant

COUNTED = {
    "sent": 60,
    "delivered": 54,
    "opened": 12,
    "clicked": 6,
    "replied": 6,
    "bounced": 6,
    "complained": 0,
    "unsubscribed": 6,
}


async def test_campaign_totals_are_the_tenants_rows_read_by_primary_key(db: Database) -> None:
    campaign, silent, elsewhere = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with db.system_session() as session:
        tenant = await create_tenant(session, "Totals")
        other = await create_tenant(session, "Other")
        await session.execute(
            insert(CampaignTotals),
            [
                {"tenant_id": tenant, "campaign_id": campaign, **COUNTED},
                {"tenant_id": other, "campaign_id": elsewhere, **COUNTED},
            ],
        )
    statements: list[tuple[str, tuple]] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        if "campaign_totals" in statement:
            statements.append((statement, parameters))

    engine = db.engine().sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        async with db.tenant_session(tenant) as session:
            totals = await campaign_totals(session, [campaign, silent, elsewhere])
    finally:
        event.remove(engine, "before_cursor_execute", record)

    assert totals[campaign] == COUNTED
    assert totals[silent] == dict.fromkeys(COUNTS, 0)
    assert totals[elsewhere] == dict.fromkeys(COUNTS, 0)  # another tenant's campaign: not seen

    [(statement, parameters)] = statements
    async with db.tenant_session(tenant) as session:
        conn = await session.connection()
        # A two-row table is read faster whole: plans that would not use the key are set aside.
        await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        plan = "\n".join(
            row[0] for row in await conn.exec_driver_sql(f"EXPLAIN {statement}", parameters)
        )
    assert "pk_campaign_totals" in plan, plan
