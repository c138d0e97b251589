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
