"""Raw asyncpg access to the queue tier as the system role: the queue's hot statements are
few, named (sql/queue.sql) and batched, so they skip the ORM."""

from __future__ import annotations

import asyncpg
from sqlalchemy.engine import URL

from penguinmails.settings import Settings, Tier


def system_dsn(settings: Settings, tier: Tier = "queue") -> str:
    """The plain asyncpg DSN of a tier as the system role."""
    url: URL = settings.role_url(tier, "system").set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


async def create_pool(settings: Settings, size: int = 4) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        system_dsn(settings), min_size=1, max_size=size,
        server_settings={"application_name": "penguinmails-queue"},
    )  # fmt: skip
