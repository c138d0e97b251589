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

    def account(self, tenant: uuid.UUID, address: str, ip: str | None = None) -> uuid.UUID:
        """A sending account (and its domain), on the sending IP `ip` when given."""
        account_id, domain = uuid.uuid4(), address.rsplit("@", 1)[1]
        self.execute(
            "INSERT INTO app.domains (tenant_id, name) VALUES ($1::uuid, $2) ON CONFLICT DO NOTHING",
            str(tenant), domain,
        )  # fmt: skip
        self.execute(
            "INSERT INTO app.email_accounts (id, tenant_id, domain_id, address)"
            " SELECT $1::uuid, $2::uuid, id, $3 FROM app.domains"
            " WHERE tenant_id = $2::uuid AND name = $4",
            str(account_id), str(tenant), address, domain,
        )  # fmt: skip
        if ip is not None:
            self.move(account_id, ip)
        return account_id

    def move(self, account: uuid.UUID, ip: str | None) -> None:
        """Puts the account on the sending IP `ip` (made when new), or on none."""
        if ip is not None:
            self.execute(
                "INSERT INTO app.smtp_ip_addresses (tenant_id, address)"
                " SELECT tenant_id, $2::inet FROM app.email_accounts WHERE id = $1::uuid"
                " ON CONFLICT (address) WHERE status <> 'RELEASED' DO NOTHING",
                str(account), ip,
            )  # fmt: skip
        self.execute(
            "UPDATE app.email_accounts SET ip_id ="
            " (SELECT id FROM app.smtp_ip_addresses WHERE address = $2::inet)"
            " WHERE id = $1::uuid",
            str(account), ip,
        )  # fmt: skip

    def message(
        self, tenant: uuid.UUID, to: str, *, account: uuid.UUID | None = None,
        sender: str | None = None,
    ) -> uuid.UUID:  # fmt: skip
        """A message to `to` from the account (its address) or from `sender`."""
        message_id = uuid.uuid4()
        self.execute(
            "INSERT INTO content.email_messages (id, tenant_id, account_id, idempotency_key,"
            " message_id_header, verp_token, from_address, to_address, subject)"
            " SELECT $1::uuid, $2::uuid, $3::uuid, $1, $1, $1,"
            " coalesce($4, (SELECT address FROM app.email_accounts WHERE id = $3::uuid)), $5, 's'",
            str(message_id), str(tenant), str(account) if account else None, sender, to,
        )  # fmt: skip
        return message_id

    def bulk_messages(self, tenants: list[uuid.UUID]) -> None:
        """The messages `bulk` sends events about, each from one of its tenant's accounts (in
        turn) to one of a few recipient domains."""
        self.execute(
            """
            INSERT INTO content.email_messages (id, tenant_id, account_id, idempotency_key,
                message_id_header, verp_token, from_address, to_address, subject)
            SELECT md5(t.ids[1 + m % cardinality(t.ids)]::text || m)::uuid,
                   t.ids[1 + m % cardinality(t.ids)], a.ids[1 + (m / 5) % cardinality(a.ids)],
                   gen_random_uuid()::text, gen_random_uuid()::text, gen_random_uuid()::text,
                   a.addresses[1 + (m / 5) % cardinality(a.ids)],
                   'lead' || m || '@' || (ARRAY['gmail.com', 'Hotmail.co.uk', 'yahoo.fr',
                                               'aol.com', 'example.org'])[1 + m % 5],
                   's'
            FROM generate_series(0, 4999) AS m,
                 (SELECT string_to_array($1::text, ',')::uuid[] AS ids) AS t,
                 LATERAL (SELECT array_agg(id ORDER BY address) AS ids,
                                 array_agg(address ORDER BY address) AS addresses
                          FROM app.email_accounts
                          WHERE tenant_id = t.ids[1 + m % cardinality(t.ids)]) AS a
            """,
            ",".join(map(str, tenants)),
        )  # fmt: skip

    def plan(self, price_cents: int, interval: str = "month") -> uuid.UUID:
        plan_id = uuid.uuid4()
        self.execute(
            "INSERT INTO app.plans (id, code, name, price_cents, interval, emails_per_month,"
            " max_domains, max_ips, max_email_accounts, max_seats)"
            " VALUES ($1::uuid, $2, 'P', $3::int, $4, 1000, 1, 1, 1, 1)",
            str(plan_id), plan_id.hex[:32], price_cents, interval,
        )  # fmt: skip
        return plan_id

    def subscription(
        self, plan: uuid.UUID, status: str, created_at: datetime,
        canceled_at: datetime | None = None,
    ) -> uuid.UUID:  # fmt: skip
        """A subscription of a tenant of its own."""
        subscription_id = uuid.uuid4()
        self.execute(
            "INSERT INTO app.subscriptions (id, tenant_id, plan_id, status, created_at,"
            " canceled_at) VALUES ($1::uuid, $2::uuid, $3::uuid, $4, $5::timestamptz,"
            " $6::timestamptz)",
            str(subscription_id), str(self.tenant()), str(plan), status, created_at.isoformat(),
            canceled_at.isoformat() if canceled_at else None,
        )  # fmt: skip
        return subscription_id

    def payment(
        self, subscription: uuid.UUID | None, amount_cents: int, status: str,
        created_at: datetime, paid_at: datetime | None = None,
    ) -> uuid.UUID:  # fmt: skip
        """A payment of the subscription (its tenant's), or of a tenant of its own."""
        payment_id = uuid.uuid4()
        self.execute(
            "INSERT INTO app.payments (id, tenant_id, subscription_id, amount_cents, status,"
            " created_at, paid_at)"
            " SELECT $1::uuid, coalesce((SELECT tenant_id FROM app.subscriptions"
            " WHERE id = $2::uuid), $3::uuid), $2::uuid, $4::bigint, $5, $6::timestamptz,"
            " $7::timestamptz",
            str(payment_id), str(subscription) if subscription else None,
            None if subscription else str(self.tenant()),
            amount_cents, status, created_at.isoformat(), paid_at.isoformat() if paid_at else None,
        )  # fmt: skip
        return payment_id

    def job(self, priority: int, run_at: datetime, attempts: int = 1) -> uuid.UUID:
        """A job (its status does not matter here) at its `attempts`-th attempt."""
        job_id = uuid.uuid4()
        self.execute(
            "INSERT INTO queue.jobs (id, kind, priority, run_at, attempts)"
            " VALUES ($1::uuid, 'test', $2::int2, $3::timestamptz, $4::int)",
            str(job_id), priority, run_at.isoformat(), attempts,
        )  # fmt: skip
        return job_id

    def job_log(
        self, job: uuid.UUID, attempt: int, status: str, at: datetime,
        duration_ms: int | None = None,
    ) -> None:  # fmt: skip
        self.execute(
            "INSERT INTO queue.job_logs (job_id, attempt, status, duration_ms, at)"
            " VALUES ($1::uuid, $2::int, $3, $4::int, $5::timestamptz)",
            str(job), attempt, status, duration_ms, at.isoformat(),
        )  # fmt: skip

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
