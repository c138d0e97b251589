"""Sending domains: adding one (name, DKIM key, records) and queueing its verification."""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import UTC, datetime, timedelta

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select, update

from models.billing import Plan
from models.infrastructure import Domain
from models.queue import Job
from models.sessions import Database
from models.tenancy import Tenant
from penguinmails.settings import Settings
from services.domains import add_domain, dkim_private_key, verify_domain
from services.errors import DomainError
from tests.factories import create_tenant


async def _tenant_on_plan(db: Database, *, domains: int = 10) -> uuid.UUID:
    async with db.system_session() as s:
        tenant = await create_tenant(s)
        plan = Plan(
            code=f"test-{tenant.hex[:12]}", name="Test", price_cents=0, emails_per_month=1000,
            max_domains=domains, max_ips=0, max_email_accounts=10, max_seats=1,
        )  # fmt: skip
        s.add(plan)
        await s.flush()
        await s.execute(update(Tenant).where(Tenant.id == tenant).values(plan_id=plan.id))
    return tenant


async def _add(db: Database, settings: Settings, tenant: uuid.UUID, name: str) -> Domain:
    async with db.tenant_session(tenant) as s:
        return await add_domain(s, settings, tenant_id=tenant, name=name)


async def _refused(db: Database, settings: Settings, tenant: uuid.UUID, name: str) -> DomainError:
    with pytest.raises(DomainError) as raised:
        await _add(db, settings, tenant, name)
    return raised.value


def _dkim_value(domain: Domain) -> str:
    (record,) = [r for r in domain.dns_records if r["kind"] == "dkim"]
    return record["value"]


async def test_an_international_domain_is_stored_in_its_lowercase_punycode_form(
    db: Database, settings: Settings
):
    tenant = await _tenant_on_plan(db)

    domain = await _add(db, settings, tenant, "  Bücher.EXAMPLE. ")

    async with db.tenant_session(tenant) as s:
        stored = await s.scalar(select(Domain.name).where(Domain.id == domain.id))
    assert stored == "xn--bcher-kva.example"


async def test_a_new_domain_lists_the_records_to_publish_all_pending(
    db: Database, settings: Settings
):
    tenant = await _tenant_on_plan(db)

    domain = await _add(db, settings, tenant, "example.com")

    records = {r["kind"]: r for r in domain.dns_records}
    assert [r["kind"] for r in domain.dns_records] == [
        "spf", "dkim", "dmarc", "mx", "return_path", "tracking",
    ]  # fmt: skip
    assert {(r["host"], r["type"], r["value"]) for k, r in records.items() if k != "dkim"} == {
        ("example.com", "TXT", f"v=spf1 include:{settings.spf_include} ~all"),
        ("_dmarc.example.com", "TXT", "v=DMARC1; p=none; rua=mailto:dmarc@example.com"),
        ("example.com", "MX", f"{settings.mx_preference} {settings.mx_host}."),
        (f"{settings.return_path_label}.example.com", "CNAME", settings.return_path_host),
        (f"{settings.tracking_label}.example.com", "CNAME", settings.tracking_host),
    }
    assert records["dkim"]["host"] == f"{settings.dkim_selector}._domainkey.example.com"
    assert records["dkim"]["type"] == "TXT"
    assert records["dkim"]["value"] == f"v=DKIM1; k=rsa; p={domain.dkim_public_key}"
    assert all(r["status"] == "PENDING" and r["observed"] == [] for r in domain.dns_records)
    assert domain.dkim_selector == settings.dkim_selector
    assert domain.status == "PENDING"


async def test_the_dkim_record_publishes_the_public_half_of_the_stored_private_key(
    db: Database, settings: Settings
):
    tenant = await _tenant_on_plan(db)
    added = await _add(db, settings, tenant, "signed.example")
    async with db.tenant_session(tenant) as s:
        domain = await s.get_one(Domain, added.id)

    pem = dkim_private_key(settings, domain)
    assert pem is not None
    private_key = serialization.load_pem_private_key(pem, password=None)
    published = _dkim_value(domain).split("p=", 1)[1]
    public_key = serialization.load_der_public_key(base64.b64decode(published))
    assert public_key.public_numbers() == private_key.public_key().public_numbers()
    assert private_key.key_size == 2048

    # And a message signed with the stored key verifies against the published record.
    message = b"From: hello@signed.example\r\nTo: lead@example.org\r\nSubject: Hi\r\n\r\nHello\r\n"
    signature = dkim.sign(message, domain.dkim_selector.encode(), domain.name.encode(), pem)
    record_host = f"{domain.dkim_selector}._domainkey.{domain.name}."

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return _dkim_value(domain).encode() if name.decode() == record_host else b""

    assert dkim.verify(signature + message, dnsfunc=dns)


async def test_the_dkim_private_key_is_stored_encrypted_with_its_key_id(
    db: Database, settings: Settings
):
    tenant = await _tenant_on_plan(db)
    added = await _add(db, settings, tenant, "secret.example")

    async with db.tenant_session(tenant) as s:
        domain = await s.get_one(Domain, added.id)
    assert domain.dkim_private_key_encrypted is not None
    assert b"PRIVATE KEY" not in domain.dkim_private_key_encrypted
    assert domain.encryption_key_id == settings.encryption_key_id


@pytest.mark.parametrize(
    "name",
    [
        "",
        "   ",
        "localhost",
        "192.168.0.1",
        "2001:db8::1",
        "under_score.example",
        "-leading.example",
        "double..dot.example",
        "with space.example",
        "user@example.com",
        "x.123",
        "a" * 64 + ".example",
        ".".join(["a" * 63] * 4) + ".example",
        "x" * 2000 + ".example",
    ],
)
async def test_an_invalid_domain_name_is_refused(db: Database, settings: Settings, name: str):
    tenant = await _tenant_on_plan(db)

    error = await _refused(db, settings, tenant, name)

    assert (error.code, error.field) == ("DOMAIN_INVALID", "name")


async def test_a_domain_already_added_is_refused_in_any_spelling(db: Database, settings: Settings):
    tenant = await _tenant_on_plan(db)
    await _add(db, settings, tenant, "Bücher.example")

    error = await _refused(db, settings, tenant, "xn--BCHER-kva.example.")

    assert (error.code, error.field) == ("DOMAIN_EXISTS", "name")


async def test_a_tenant_cannot_add_more_domains_than_its_plan_allows(
    db: Database, settings: Settings
):
    tenant = await _tenant_on_plan(db, domains=2)
    await _add(db, settings, tenant, "one.example")
    await _add(db, settings, tenant, "two.example")

    error = await _refused(db, settings, tenant, "three.example")

    assert error.code == "PLAN_LIMIT_DOMAINS"
    assert "Test plan allows 2 domains" in error.message


async def test_a_tenant_without_a_plan_cannot_add_a_domain(db: Database, settings: Settings):
    async with db.system_session() as s:
        tenant = await create_tenant(s)

    error = await _refused(db, settings, tenant, "example.com")

    assert error.code == "NO_PLAN"


async def test_concurrent_adds_cannot_together_exceed_the_plan_limit(
    db: Database, settings: Settings
):
    tenant = await _tenant_on_plan(db, domains=1)
    async with db.tenant_session(tenant) as first:
        await add_domain(first, settings, tenant_id=tenant, name="first.example")
        second = asyncio.create_task(_add(db, settings, tenant, "second.example"))
        done, _ = await asyncio.wait({second}, timeout=0.5)
        assert not done  # it waits for the first transaction to finish

    with pytest.raises(DomainError) as raised:
        await second
    assert raised.value.code == "PLAN_LIMIT_DOMAINS"


async def _verification_jobs(db: Database, tenant: uuid.UUID) -> list[Job]:
    async with db.tenant_session(tenant) as s:
        return list(
            await s.scalars(select(Job).where(Job.kind == "verify_domain").order_by(Job.created_at))
        )


async def _click_jobs(db: Database, tenant: uuid.UUID) -> list[Job]:
    """The verification jobs after the one adding the domain queued."""
    first, *clicks = await _verification_jobs(db, tenant)
    assert ":never:" in first.idempotency_key  # queued at add, before any check
    return clicks


async def test_adding_a_domain_queues_its_verification(db: Database, settings: Settings):
    tenant = await _tenant_on_plan(db)

    domain = await _add(db, settings, tenant, "queued.example")

    (job,) = await _verification_jobs(db, tenant)
    assert job.payload == {"domain_id": str(domain.id)} and job.tenant_id == tenant


async def _verify(db: Database, tenant: uuid.UUID, domain_id: uuid.UUID, now: datetime) -> Domain:
    async with db.tenant_session(tenant) as s:
        return await verify_domain(s, tenant_id=tenant, domain_id=domain_id, now=now)


async def test_repeated_verify_clicks_while_a_check_is_pending_queue_one_job(
    db: Database, settings: Settings
):
    tenant = await _tenant_on_plan(db)
    domain = await _add(db, settings, tenant, "verify.example")
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    for seconds in (0, 1, 30):
        returned = await _verify(db, tenant, domain.id, now + timedelta(seconds=seconds))

    jobs = await _click_jobs(db, tenant)
    assert returned.id == domain.id
    assert [job.payload for job in jobs] == [{"domain_id": str(domain.id)}]


async def test_a_verify_click_after_a_finished_check_queues_a_new_job(
    db: Database, settings: Settings
):
    tenant = await _tenant_on_plan(db)
    domain = await _add(db, settings, tenant, "recheck.example")
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    await _verify(db, tenant, domain.id, now)
    async with db.tenant_session(tenant) as s:  # what the verification job records
        await s.execute(update(Domain).where(Domain.id == domain.id).values(last_checked_at=now))

    await _verify(db, tenant, domain.id, now + timedelta(seconds=5))

    assert len(await _click_jobs(db, tenant)) == 2


async def test_a_verify_click_is_not_held_forever_by_a_job_that_never_checked(
    db: Database, settings: Settings
):
    tenant = await _tenant_on_plan(db)
    domain = await _add(db, settings, tenant, "stuck.example")
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    await _verify(db, tenant, domain.id, now)

    await _verify(db, tenant, domain.id, now + timedelta(minutes=15))

    assert len(await _click_jobs(db, tenant)) == 2


async def test_verifying_another_tenants_domain_finds_nothing(db: Database, settings: Settings):
    owner = await _tenant_on_plan(db)
    other = await _tenant_on_plan(db)
    domain = await _add(db, settings, owner, "theirs.example")

    with pytest.raises(DomainError) as raised:
        await _verify(db, other, domain.id, datetime.now(UTC))

    assert (raised.value.code, raised.value.field) == ("NOT_FOUND", "id")
    assert await _verification_jobs(db, other) == []


def test_a_domain_without_a_dkim_key_has_no_private_key(settings: Settings):
    domain = Domain(name="seeded.example")

    assert dkim_private_key(settings, domain) is None
