"""Tenant isolation enforced by PostgreSQL row-level security, for every tenant-scoped table.

The tables are found by introspecting the migrated database (every table with a tenant_id
column), so a table added later is covered without touching this file.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from functools import cache

import asyncpg
import pytest
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import DBAPIError, ProgrammingError

from models.sessions import Database
from tests.factories import build_row, create_row, create_tenant, table

TENANT_TABLES_SQL = """
SELECT c.table_schema || '.' || c.table_name
FROM information_schema.columns c
JOIN information_schema.tables t USING (table_schema, table_name)
WHERE c.column_name = 'tenant_id' AND t.table_type = 'BASE TABLE'
  AND c.table_schema IN ('app', 'content', 'queue', 'analytics')
ORDER BY 1
"""


@cache
def tenant_tables() -> list[str]:
    """Read once, at collection (before any event loop runs)."""

    async def fetch() -> list[str]:
        url = os.environ["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")
        conn = await asyncpg.connect(url)
        try:
            return [r[0] for r in await conn.fetch(TENANT_TABLES_SQL)]
        finally:
            await conn.close()

    return asyncio.run(fetch())


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "tenant_table" in metafunc.fixturenames:
        metafunc.parametrize("tenant_table", tenant_tables())


@pytest.fixture
async def two_tenants(db: Database, tenant_table: str):
    """Tenants A and B, each with one row in the table under test (set up as the system role)."""
    tbl = table(tenant_table)
    async with db.system_session() as s:
        a, b = await create_tenant(s, "A"), await create_tenant(s, "B")
        await create_row(s, tbl, a)
        b_row = await create_row(s, tbl, b)
        b_again = await build_row(s, tbl, b)  # parents for a second B row, not yet inserted
    return tbl, a, b, b_row, b_again


async def test_every_tenant_table_has_a_model_and_forced_rls(db: Database) -> None:
    async with db.system_session() as s:
        rows = await s.execute(
            text(
                "SELECT n.nspname || '.' || c.relname, c.relrowsecurity, c.relforcerowsecurity "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind = 'r' AND n.nspname || '.' || c.relname = ANY(:names)"
            ),
            {"names": tenant_tables()},
        )
        found = {name: (enabled, forced) for name, enabled, forced in rows}
    assert len(found) >= 25
    for name, flags in found.items():
        table(name)  # a KeyError names a table that migrations created without a model
        assert flags == (True, True), f"{name}: RLS enabled/forced = {flags}"


async def test_rows_of_another_tenant_are_invisible(db: Database, two_tenants) -> None:
    tbl, a, b, _, _ = two_tenants
    async with db.tenant_session(a) as s:
        tenants_seen = set(await s.scalars(select(tbl.c.tenant_id)))
        b_count = await s.scalar(select(func.count()).select_from(tbl).where(tbl.c.tenant_id == b))
    assert tenants_seen == {a}
    assert b_count == 0


async def app_role_may(db: Database, tbl, privilege: str) -> bool:
    """Some tables are read-only to the application (rollups, append-only audit): there the
    refusal comes from privileges before RLS is consulted."""
    async with db.anonymous_session() as s:
        return await s.scalar(
            text("SELECT has_table_privilege(current_user, :t, :p)"),
            {"t": tbl.fullname, "p": privilege},
        )


REFUSED = "row-level security|permission denied"


@pytest.mark.parametrize("statement", ["update", "delete"])
async def test_rows_of_another_tenant_cannot_be_updated_or_deleted(
    db: Database, two_tenants, statement: str
) -> None:
    tbl, a, b, _, _ = two_tenants
    if statement == "update":
        stmt = update(tbl).where(tbl.c.tenant_id == b).values(tenant_id=tbl.c.tenant_id)
    else:
        stmt = delete(tbl).where(tbl.c.tenant_id == b)
    if await app_role_may(db, tbl, statement.upper()):
        async with db.tenant_session(a) as s:
            assert (await s.execute(stmt)).rowcount == 0
    else:
        with pytest.raises((ProgrammingError, DBAPIError), match="permission denied"):
            async with db.tenant_session(a) as s:
                await s.execute(stmt)
    async with db.system_session() as s:
        left = await s.scalar(select(func.count()).select_from(tbl).where(tbl.c.tenant_id == b))
    assert left == 1


async def test_inserting_a_row_for_another_tenant_is_refused(db: Database, two_tenants) -> None:
    tbl, a, _b, _, b_again = two_tenants
    with pytest.raises((ProgrammingError, DBAPIError), match=REFUSED):
        async with db.tenant_session(a) as s:
            await s.execute(tbl.insert().values(b_again))


async def test_moving_an_own_row_to_another_tenant_is_refused(db: Database, two_tenants) -> None:
    tbl, a, b, _, _ = two_tenants
    with pytest.raises((ProgrammingError, DBAPIError), match=REFUSED):
        async with db.tenant_session(a) as s:
            await s.execute(update(tbl).where(tbl.c.tenant_id == a).values(tenant_id=b))


async def test_nothing_is_visible_without_a_bound_tenant(db: Database, two_tenants) -> None:
    tbl, *_ = two_tenants
    async with db.anonymous_session() as s:
        assert await s.scalar(select(func.count()).select_from(tbl)) == 0


async def test_a_pooled_connection_carries_no_tenant_into_the_next_transaction(
    settings, two_tenants
) -> None:
    tbl, a, *_ = two_tenants
    single = Database(settings.model_copy(update={"db_pool_size": 1}))
    single.engine("oltp", "app").pool._max_overflow = 0  # one connection, reused
    try:
        async with single.tenant_session(a) as s:
            assert await s.scalar(select(func.count()).select_from(tbl)) >= 1
        async with single.anonymous_session() as s:
            bound = await s.scalar(text("SELECT current_setting('app.tenant_id', true)"))
            visible = await s.scalar(select(func.count()).select_from(tbl))
            backend_pids = await s.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = current_user AND application_name = 'penguinmails-app' AND pid = pg_backend_pid()"
                )
            )
        assert (bound or "", visible, backend_pids) == ("", 0, 1)
    finally:
        await single.dispose()


async def test_tenants_table_shows_only_the_bound_tenant_and_the_users_own(db: Database) -> None:
    from models.tenancy import Role, Tenant, TenantUser, User

    async with db.system_session() as s:
        a, b, c = (
            await create_tenant(s, "A"),
            await create_tenant(s, "B"),
            await create_tenant(s, "C"),
        )
        user_id = uuid.uuid4()
        await s.execute(
            User.__table__.insert().values(
                id=user_id, email=f"u{user_id.hex[:8]}@example.com", password_hash="x"
            )
        )
        await s.execute(
            TenantUser.__table__.insert().values(
                [
                    {"tenant_id": a, "user_id": user_id, "role": Role.OWNER},
                    {"tenant_id": b, "user_id": user_id, "role": Role.MEMBER},
                ]
            )
        )
    async with db.tenant_session(a) as s:
        assert set(await s.scalars(select(Tenant.id))) == {a}
        assert set(await s.scalars(select(User.id))) == {user_id}  # a colleague in A
    async with db.tenant_session(c) as s:
        assert set(await s.scalars(select(User.id))) == set()
    async with db.user_session(user_id) as s:
        assert set(await s.scalars(select(Tenant.id))) == {a, b}
        assert set(await s.scalars(select(TenantUser.tenant_id))) == {a, b}


async def test_an_invitee_reads_their_invitations_and_the_tenant_name_nothing_else(
    db: Database,
) -> None:
    from models.tenancy import Invitation, Role, Tenant, User

    async with db.system_session() as s:
        inviting, other = await create_tenant(s, "Inviting"), await create_tenant(s, "Other")
        user_id, email = uuid.uuid4(), f"u{uuid.uuid4().hex[:8]}@example.com"
        await s.execute(User.__table__.insert().values(id=user_id, email=email, password_hash="x"))
        in_a_week = func.now() + text("interval '7 days'")
        mine, expired, theirs = [
            await s.scalar(
                Invitation.__table__.insert()
                .values(tenant_id=tenant, email=to, role=Role.MEMBER, expires_at=expires)
                .returning(Invitation.id)
            )
            for tenant, to, expires in [
                (inviting, email, in_a_week),
                (other, email, func.now() - text("interval '1 hour'")),
                (inviting, "someone-else@example.com", in_a_week),
            ]
        ]
    async with db.user_session(user_id) as s:
        assert set(await s.scalars(select(Invitation.id))) == {mine, expired}  # not `theirs`
        assert list(await s.scalars(select(Tenant.id))) == []  # no row of the tenant itself
        names = (await s.execute(text("SELECT * FROM app.invited_tenant_names()"))).all()
        assert [tuple(row) for row in names] == [(inviting, "Inviting")]  # pending ones only
        # reading is all: the answer is written in the invitation's tenant session
        changed = await s.execute(
            update(Invitation).where(Invitation.id == mine).values(role=Role.OWNER)
        )
        assert changed.rowcount == 0
    async with db.anonymous_session() as s:
        assert (await s.execute(text("SELECT * FROM app.invited_tenant_names()"))).all() == []
    async with db.tenant_session(inviting) as s:  # the tenant's side: its own, to anyone
        assert set(await s.scalars(select(Invitation.id))) == {mine, theirs}


async def test_the_live_read_functions_bind_their_tenant_for_their_statement_alone(
    db: Database,
) -> None:
    """queue.tenant_queue_status and content.tenant_campaign_progress (the live hub's one-round-
    trip reads) count the named tenant's rows only, under RLS, and outside a transaction leave
    nothing bound for the connection's next statement."""
    from jobs.queue import enqueue
    from jobs.status import queue_status

    async with db.system_session() as s:
        a, b = await create_tenant(s, "A"), await create_tenant(s, "B")
    for tenant, jobs in ((a, 1), (b, 2)):
        async with db.tenant_session(tenant) as s:
            for _ in range(jobs):
                await enqueue(s, "noop", {}, tenant_id=tenant, priority=10)
    engine = db.engine().execution_options(isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        assert (await queue_status(connection, a)).queued == 1
        assert (await queue_status(connection, b)).queued == 2
        bound = await connection.scalar(text("SELECT current_setting('app.tenant_id', true)"))
        visible = await connection.scalar(text("SELECT count(*) FROM queue.jobs"))
        progress = await connection.execute(
            text("SELECT * FROM content.tenant_campaign_progress(:t, :c)"),
            {"t": a, "c": uuid.uuid4()},
        )
    assert bound in (None, "")
    assert visible == 0
    assert progress.one() == (0, 0, 0, 0, 0, 0)
