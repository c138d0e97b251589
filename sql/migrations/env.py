"""Alembic environment: async (asyncpg), all four schemas, version table in public."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

import models
from penguinmails.settings import get_settings

config = context.config
target_metadata = models.Base.metadata


def _include_name(name, type_, parent_names) -> bool:
    if type_ == "schema":
        return name in models.SCHEMAS
    return True


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_schemas=True,
        include_name=_include_name,
        version_table_schema="public",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run() -> None:
    url = config.get_main_option("sqlalchemy.url") or get_settings().require_database_url()
    url = url.replace("postgresql://", "postgresql+asyncpg://", 1)
    engine = create_async_engine(url, poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_configure)
    await engine.dispose()


asyncio.run(_run())
