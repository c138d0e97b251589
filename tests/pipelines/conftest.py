"""A database of their own for the pipeline tests: they rebuild whole tables and compare them,
so no other test's events may land in between."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import polars as pl
import pytest
from adbc_driver_postgresql import dbapi
from sqlalchemy.engine import make_url

from penguinmails import migrations
from penguinmails.settings import Settings
from tests.conftest import create_database, drop_database


@dataclass
class Olap:
    """Plain SQL on the scratch database as its owner, each statement committed on its own
    (one connection for them all: an ADBC connection takes about 0.2 s to open)."""

    url: str
    _conn: dbapi.Connection | None = field(default=None, repr=False)

    def _cursor(self) -> dbapi.Cursor:
        if self._conn is None:
            self._conn = dbapi.connect(self.url, autocommit=True)
        return self._conn.cursor()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def execute(self, sql: str, *params) -> None:
        with self._cursor() as cur:
            cur.execute(sql, parameters=params or None)

    def frame(self, sql: str, *params) -> pl.DataFrame:
        with self._cursor() as cur:
            cur.execute(sql, parameters=params or None)
            return pl.from_arrow(cur.fetch_arrow_table())  # type: ignore[return-value]

    def tenant(self, zone: str = "UTC") -> uuid.UUID:
        tenant_id = uuid.uuid4()
        self.execute(
            "INSERT INTO app.tenants (id, name, slug, timezone) VALUES ($1::uuid, 'T', $2, $3)",
            str(tenant_id), f"t-{tenant_id.hex[:12]}", zone,
        )  # fmt: skip
        return tenant_id

    def event(
        self,
        tenant: uuid.UUID,
        kind: str,
        at: datetime,
        *,
        message: uuid.UUID | None = None,
        campaign: uuid.UUID | None = None,
        step: int | None = 1,
        machine: bool = False,
        details: str = "{}",
    ) -> uuid.UUID:
        message = message or uuid.uuid4()
        self.execute(
            "INSERT INTO content.email_events (tenant_id, kind, message_id, campaign_id,"
            " step_position, machine, details, occurred_at) VALUES ($1::uuid, $2, $3::uuid,"
            " $4::uuid, $5::int2, $6, $7::jsonb, $8::timestamptz)",
            str(tenant), kind, str(message), str(campaign) if campaign else None, step,
            machine, details, at.isoformat(),
        )  # fmt: skip
        return message

    def bulk(self, tenants: list[uuid.UUID], count: int, *, seed: float = 0.5) -> None:
        """`count` events of every kind over the last 20 days, spread over `tenants`, three
        campaigns each, and repeat opens and clicks of the same messages (a message belongs to one
        tenant, campaign and step)."""
        self.execute("SELECT setseed($1::float8)", seed)
        self.execute(
            """
            INSERT INTO content.email_events (tenant_id, kind, message_id, campaign_id,
                step_position, machine, details, occurred_at)
            SELECT t.ids[1 + m % cardinality(t.ids)],
                   (ARRAY['SENT','SENT','SENT','OPEN','OPEN','CLICK','REPLY','BOUNCE',
                          'COMPLAINT','UNSUBSCRIBE'])[1 + (i * 7) % 10],
                   md5(t.ids[1 + m % cardinality(t.ids)]::text || m)::uuid,
                   CASE WHEN m % 4 = 0 THEN NULL ELSE md5('c' || (m % 3))::uuid END,
                   1 + m % 3, i % 6 = 0,
                   CASE WHEN i % 2 = 0 THEN '{"hard": true}' ELSE '{"hard": false}' END::jsonb,
                   now() - (i % 480) * interval '1 hour' - (i % 60) * interval '1 minute'
            FROM generate_series(1, $2::int) AS i,
                 LATERAL (SELECT i % 5000 AS m) AS message,
                 (SELECT string_to_array($1::text, ',')::uuid[] AS ids) AS t
            """,
            ",".join(map(str, tenants)), count,
        )  # fmt: skip


@pytest.fixture(scope="module")
def scratch(settings: Settings) -> Iterator[tuple[Settings, Olap]]:
    url = create_database("pm_pipelines")
    own = settings.model_copy(update={"database_url": url})
    migrations.upgrade(own)
    olap = Olap(make_url(url).set(drivername="postgresql").render_as_string(False))
    try:
        yield own, olap
    finally:
        olap.close()
        drop_database(url)
