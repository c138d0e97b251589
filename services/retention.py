"""Content retention: a sent message's body is kept `content_retention_days`, then dropped. The
message row and its events stay, so who was sent what and when, and what came of it, still
counts; only the rendered MIME is gone."""

from __future__ import annotations

from dataclasses import dataclass

from models.sessions import Database, driver_connection
from models.sqlfiles import statement

BATCH_ROWS = 5_000


@dataclass(frozen=True)
class Dropped:
    bodies: int
    batches: int  # statements run, each in its own transaction


async def drop_old_bodies(db: Database, days: int, *, batch_rows: int = BATCH_ROWS) -> Dropped:
    """Sets the bodies of messages older than `days` to NULL across all tenants, oldest first,
    `batch_rows` a statement, until a batch comes back short. Each batch commits on its own: no
    transaction holds many rows locked or keeps vacuum waiting."""
    bodies = batches = 0
    while True:
        async with db.system_session("content") as session:
            conn = await driver_connection(session)
            dropped = await conn.fetchval(
                statement("retention.sql", "drop_message_bodies"), days, batch_rows
            )
        bodies, batches = bodies + dropped, batches + 1
        if dropped < batch_rows:
            return Dropped(bodies, batches)
