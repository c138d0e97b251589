"""Content retention: message bodies past the retention are dropped in batches, the message rows
and their events kept."""

from __future__ import annotations

import uuid
import zlib

from sqlalchemy import select

from models.content import EmailEvent, EmailMessage, EventKind
from models.sessions import Database
from services import retention
from tests.factories import written_messages

DAYS = 90


async def _stored(db: Database, ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple]:
    """What is left of each message: (body, subject, status, updated_at, its events' kinds)."""
    async with db.system_session("content") as s:
        messages = {
            m.id: m for m in await s.scalars(select(EmailMessage).where(EmailMessage.id.in_(ids)))
        }
        events = (
            await s.execute(
                select(EmailEvent.message_id, EmailEvent.kind).where(EmailEvent.message_id.in_(ids))
            )
        ).all()
    return {
        id_: (m.body_compressed, m.subject, m.status, m.updated_at,
              [kind for message_id, kind in events if message_id == id_])
        for id_, m in messages.items()
    }  # fmt: skip


async def test_bodies_past_the_retention_are_dropped_and_the_rows_and_events_kept(
    db: Database,
) -> None:
    old = await written_messages(db, [DAYS + 1, DAYS + 30, 400])
    recent = await written_messages(db, [0, 1, DAYS - 1])
    before = await _stored(db, old + recent)

    await retention.drop_old_bodies(db, DAYS)

    after = await _stored(db, old + recent)
    assert after.keys() == before.keys()  # every row is still there
    for id_ in old:
        body, *rest = after[id_]
        assert body is None
        assert rest == [*before[id_][1:]]  # subject, status, updated_at and the SENT event
        assert rest[-1] == [EventKind.SENT]
    for id_ in recent:
        assert after[id_] == before[id_]
        assert zlib.decompress(after[id_][0]).startswith(b"body ")


async def test_old_bodies_go_in_batches_until_none_is_left(db: Database) -> None:
    await retention.drop_old_bodies(db, DAYS)  # other tests' old bodies out of the count
    old = await written_messages(db, [DAYS + n for n in range(1, 6)])
    recent = await written_messages(db, [1])

    dropped = await retention.drop_old_bodies(db, DAYS, batch_rows=2)

    assert dropped == retention.Dropped(bodies=5, batches=3)  # 2 + 2 + 1
    after = await _stored(db, old + recent)
    assert [after[id_][0] for id_ in old] == [None] * 5
    assert after[recent[0]][0] is not None


async def test_running_it_again_changes_nothing(db: Database) -> None:
    ids = await written_messages(db, [DAYS + 5, DAYS + 6, 3])
    await retention.drop_old_bodies(db, DAYS)
    once = await _stored(db, ids)

    again = await retention.drop_old_bodies(db, DAYS, batch_rows=2)

    assert again == retention.Dropped(bodies=0, batches=1)
    assert await _stored(db, ids) == once
