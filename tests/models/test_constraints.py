"""Unique keys where a duplicate would be a bug, and check constraints on enum columns."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import insert, text
from sqlalchemy.exc import IntegrityError

from models.campaigns import Lead
from models.content import EmailMessage
from models.queue import Job
from models.sessions import Database
from tests.factories import create_row, create_tenant, table


async def test_a_lead_email_is_unique_per_campaign(db: Database) -> None:
    async with db.system_session() as s:
        tenant = await create_tenant(s)
        campaign = await create_row(s, table("app.campaigns"), tenant)
        other = await create_row(s, table("app.campaigns"), tenant)
        lead = dict(tenant_id=tenant, campaign_id=campaign["id"], email="ada@example.com")
        await s.execute(insert(Lead).values(lead))
        # the same address in another campaign is fine
        await s.execute(insert(Lead).values({**lead, "campaign_id": other["id"]}))
    with pytest.raises(IntegrityError, match="uq_leads_campaign_id_email"):
        async with db.tenant_session(tenant) as s:
            await s.execute(insert(Lead).values(lead))


async def test_lead_emails_must_be_stored_lowercase(db: Database) -> None:
    async with db.system_session() as s:
        tenant = await create_tenant(s)
        campaign = await create_row(s, table("app.campaigns"), tenant)
    with pytest.raises(IntegrityError, match="email_lowercase"):
        async with db.tenant_session(tenant) as s:
            await s.execute(
                insert(Lead).values(tenant_id=tenant, campaign_id=campaign["id"], email="Ada@X.com")
            )


def _message(tenant: uuid.UUID, key: str) -> dict:
    token = uuid.uuid4().hex
    return dict(
        tenant_id=tenant, idempotency_key=key, message_id_header=f"<{token}@pm>",
        verp_token=token, from_address="a@x.com", to_address="b@y.com", subject="s",
    )  # fmt: skip


async def test_a_message_idempotency_key_is_unique_per_tenant(db: Database) -> None:
    async with db.system_session() as s:
        a, b = await create_tenant(s), await create_tenant(s)
    async with db.tenant_session(a) as s:
        await s.execute(insert(EmailMessage).values(_message(a, "campaign:lead:1")))
    async with db.tenant_session(b) as s:  # another tenant may use the same key
        await s.execute(insert(EmailMessage).values(_message(b, "campaign:lead:1")))
    with pytest.raises(IntegrityError, match="uq_email_messages_tenant_id_idempotency_key"):
        async with db.tenant_session(a) as s:
            await s.execute(insert(EmailMessage).values(_message(a, "campaign:lead:1")))


async def test_a_job_idempotency_key_is_unique_per_tenant_and_among_platform_jobs(
    db: Database,
) -> None:
    async with db.system_session() as s:
        tenant = await create_tenant(s)
        await s.execute(insert(Job).values(tenant_id=tenant, kind="noop", idempotency_key="k"))
        await s.execute(insert(Job).values(tenant_id=None, kind="noop", idempotency_key="k"))
        # jobs without a key never clash
        await s.execute(insert(Job).values([{"tenant_id": tenant, "kind": "noop"}] * 2))
    for owner in (tenant, None):
        with pytest.raises(IntegrityError, match="uq_jobs_tenant_id_idempotency_key"):
            async with db.system_session() as s:
                await s.execute(
                    insert(Job).values(tenant_id=owner, kind="noop", idempotency_key="k")
                )


async def test_a_stripe_event_is_recorded_once(db: Database) -> None:
    event = dict(
        id=f"evt_{uuid.uuid4().hex}", type="invoice.paid", stripe_created_at=_now(), payload={}
    )
    async with db.system_session() as s:
        await s.execute(insert(table("app.stripe_events")).values(event))
    with pytest.raises(IntegrityError, match="pk_stripe_events"):
        async with db.system_session() as s:
            await s.execute(insert(table("app.stripe_events")).values(event))


async def test_an_unknown_enum_value_is_refused_by_the_database(db: Database) -> None:
    async with db.system_session() as s:
        tenant = await create_tenant(s)
    with pytest.raises(IntegrityError, match="ck_jobs_job_status"):
        async with db.tenant_session(tenant) as s:
            await s.execute(
                text(
                    "INSERT INTO queue.jobs (tenant_id, kind, status) VALUES (:t, 'noop', 'bogus')"
                ),
                {"t": tenant},
            )


def _now():
    import datetime as dt

    return dt.datetime.now(dt.UTC)
