"""Migrations: upgrade to head, downgrade to base and back, and models that match them."""

from __future__ import annotations

import asyncio

import asyncpg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

import models
from penguinmails import migrations
from penguinmails.settings import Settings
from tests.conftest import create_database, drop_database

SCHEMAS_SQL = "SELECT count(*) FROM pg_namespace WHERE nspname = ANY($1::text[])"
TABLES_SQL = "SELECT count(*) FROM pg_tables WHERE schemaname = ANY($1::text[])"


async def _count(url: str, sql: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql, list(models.SCHEMAS))
    finally:
        await conn.close()


def test_upgrade_downgrade_round_trip(settings: Settings) -> None:
    url = create_database()
    scratch = settings.model_copy(update={"database_url": url})
    try:
        migrations.upgrade(scratch)
        tables = asyncio.run(_count(url, TABLES_SQL))
        assert tables == len(models.Base.metadata.tables)

        migrations.downgrade(scratch, "base")
        assert asyncio.run(_count(url, SCHEMAS_SQL)) == 0

        migrations.upgrade(scratch)
        assert asyncio.run(_count(url, TABLES_SQL)) == tables
    finally:
        drop_database(url)


async def test_models_and_migrations_describe_the_same_schema(settings: Settings) -> None:
    engine = create_async_engine(settings.role_url("oltp", "owner"))

    def diff(connection) -> list:
        context = MigrationContext.configure(
            connection,
            opts={
                "include_schemas": True,
                "include_name": lambda name, type_, parents: (
                    type_ != "schema" or name in models.SCHEMAS
                ),
                "compare_type": True,
            },
        )
        return compare_metadata(context, models.Base.metadata)

    try:
        async with engine.connect() as conn:
            changes = await conn.run_sync(diff)
    finally:
        await engine.dispose()
    assert changes == [], f"models differ from migrations; write a migration: {changes}"


async def test_an_event_written_without_a_time_gets_the_time_of_its_insert(
    settings: Settings,
) -> None:
    """The default is the expression now(), not the moment the migration ran."""
    owner = settings.role_url("oltp", "owner").set(drivername="postgresql")
    conn = await asyncpg.connect(owner.render_as_string(hide_password=False))
    try:
        default = await conn.fetchval(
            "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d"
            " JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum"
            " WHERE d.adrelid = 'content.email_events'::regclass AND a.attname = 'occurred_at'"
        )
        transaction = conn.transaction()
        await transaction.start()
        await asyncio.sleep(1.1)  # later than any moment the migration could have fixed
        at, now = await conn.fetchrow(
            "INSERT INTO content.email_events (tenant_id, kind)"
            " VALUES (gen_random_uuid(), 'SENT') RETURNING occurred_at, now()"
        )
        await transaction.rollback()
    finally:
        await conn.close()
    assert default == "now()"
    assert at == now
