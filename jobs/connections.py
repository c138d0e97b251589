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


# The queue's statements must find their rows through an index walk: by primary key (start,
# finish) or in ix_jobs_ready order (claim). Right after a bulk enqueue the statistics still
# say "few queued or dispatched jobs", and the planner then prefers bitmap scans that read every
# ready or in-flight row: 15-25 ms per batch of 50 with 60,000 jobs in flight, against 0.5 ms.
QUEUE_SERVER_SETTINGS = {"enable_bitmapscan": "off", "application_name": "penguinmails-queue"}


async def connect(settings: Settings) -> asyncpg.Connection:
    return await asyncpg.connect(system_dsn(settings), server_settings=QUEUE_SERVER_SETTINGS)


async def create_pool(settings: Settings, size: int = 4) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        system_dsn(settings), min_size=1, max_size=size, server_settings=QUEUE_SERVER_SETTINGS
    )
