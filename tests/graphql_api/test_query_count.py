"""DataLoaders: a page of campaigns with their steps, accounts and stats costs the same number
of SQL statements whether it holds 10 campaigns or 100."""

from __future__ import annotations

from contextlib import contextmanager

from sqlalchemy import event, insert

from graphql_api.ids import parse_id
from models.campaigns import Campaign, CampaignAccount, CampaignSequenceStep
from models.infrastructure import Domain, EmailAccount
from models.sessions import Database
from tests.graphql_api.conftest import Api, sign_up

PAGE = """query($first: Int!) { campaigns(first: $first) { edges { node {
  name status window { timezone }
  steps { position subject template { name } }
  accounts { address sentToday warmup { enabled } }
  stats { sent openRate }
} } } }"""


@contextmanager
def counting(api: Api):
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    engines = [e.sync_engine for e in api.app.state.db._engines.values()]
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


async def _campaigns(db: Database, tenant_id, count: int) -> None:
    async with db.system_session() as s:
        domain = await s.scalar(
            insert(Domain).values(tenant_id=tenant_id, name="qc.example").returning(Domain.id)
        )
        accounts = [
            await s.scalar(
                insert(EmailAccount)
                .values(tenant_id=tenant_id, domain_id=domain, address=f"a{n}@qc.example")
                .returning(EmailAccount.id)
            )
            for n in range(3)
        ]
        ids = list(
            await s.scalars(
                insert(Campaign).returning(Campaign.id),
                [{"tenant_id": tenant_id, "name": f"c{n}"} for n in range(count)],
            )
        )
        await s.execute(
            insert(CampaignSequenceStep),
            [
                {
                    "tenant_id": tenant_id,
                    "campaign_id": c,
                    "position": p,
                    "subject": "s",
                    "text": "t",
                }
                for c in ids
                for p in (1, 2, 3)
            ],
        )
        await s.execute(
            insert(CampaignAccount),
            [
                {"tenant_id": tenant_id, "campaign_id": c, "account_id": a}
                for c in ids
                for a in accounts
            ],
        )


async def test_a_page_of_campaigns_costs_a_constant_number_of_statements(
    api: Api, db: Database
) -> None:
    account = await sign_up(api, "Counted")
    await _campaigns(db, parse_id(account.tenant)[1], 100)
    await api.gql(PAGE, {"first": 1}, token=account.token)  # warm up: engines and caches exist
    counts = {}
    for size in (10, 100):
        with counting(api) as statements:
            body = await api.gql(PAGE, {"first": size}, token=account.token)
        edges = body["data"]["campaigns"]["edges"]
        assert len(edges) == size
        assert all(len(e["node"]["steps"]) == 3 and len(e["node"]["accounts"]) == 3 for e in edges)
        counts[size] = len(statements)
    assert counts[10] == counts[100], counts
    assert counts[100] <= 40, counts


STATS_BY_FRAGMENT = """query($first: Int!) { campaigns(first: $first) { edges { ...E } } }
fragment E on CampaignEdge { node { name ... on Campaign { stats { sent openRate } } } }"""
NO_STATS = "query($first: Int!) { campaigns(first: $first) { edges { node { name } } } }"


async def test_a_page_reads_its_stats_once_and_only_when_asked(api: Api, db: Database) -> None:
    account = await sign_up(api, "Stats once")
    await _campaigns(db, parse_id(account.tenant)[1], 30)
    for query, reads in ((STATS_BY_FRAGMENT, 1), (NO_STATS, 0)):
        with counting(api) as statements:
            body = await api.gql(query, {"first": 30}, token=account.token)
        edges = body["data"]["campaigns"]["edges"]
        assert len(edges) == 30
        assert sum("campaign_totals" in s for s in statements) == reads, query
        if reads:
            assert all(e["node"]["stats"] == {"sent": 0, "openRate": 0.0} for e in edges)
