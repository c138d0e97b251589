"""Domain verification against a real authoritative DNS server on loopback (tests/dns_server.py):
the platform resolves through PENGUINMAILS_DNS_NAMESERVERS pointing at it."""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest
from sqlalchemy import select

from models.infrastructure import Domain, DomainStatus, EmailAccount
from models.operations import Alert
from models.sessions import Database
from penguinmails.settings import Settings
from services import dns
from services.domains import normalise_name
from services.errors import DomainError
from tests.dns_server import DnsServer, Zone
from tests.services.test_domains import _add, _tenant_on_plan


def publish(zone: Zone, domain: Domain, settings: Settings) -> None:
    """Every record the domain should publish, as a tenant following the instructions would."""
    zone.add(settings.spf_include, "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    zone.publish(domain.dns_records)


async def _domain(db: Database, settings: Settings, zone: Zone) -> Domain:
    tenant = await _tenant_on_plan(db)
    domain = await _add(db, settings, tenant, f"d{uuid.uuid4().hex[:10]}.example")
    publish(zone, domain, settings)
    return domain


async def _verify(db: Database, settings: Settings, domain: Domain) -> dns.Verification:
    async with db.tenant_session(domain.tenant_id) as session:
        done = await dns.verify(session, settings, domain.id)
    assert done is not None
    return done


def _records(done: dns.Verification) -> dict[str, dict]:
    return {r["kind"]: r for r in done.domain.dns_records}


async def test_a_domain_whose_records_are_published_verifies(
    db: Database, resolving: Settings, dns_server: DnsServer
) -> None:
    domain = await _domain(db, resolving, dns_server.zone)

    done = await _verify(db, resolving, domain)

    records = _records(done)
    assert set(records) == {"spf", "dkim", "dmarc", "mx", "return_path", "tracking"}
    assert {r["status"] for r in records.values()} == {"VERIFIED"}, records
    assert records["mx"]["value"] == f"10 {resolving.mx_host}."
    assert records["mx"]["observed"] == [f"10 {resolving.mx_host}."]
    assert records["return_path"]["observed"] == [f"{resolving.return_path_host}."]
    assert done.domain.status == DomainStatus.VERIFIED
    assert done.domain.verified_at is not None and done.domain.last_checked_at is not None
    assert done.event is not None and done.event.kind == "domain_verified"


async def test_a_record_removed_or_altered_is_missing_or_a_mismatch_with_what_was_seen(
    db: Database, resolving: Settings, dns_server: DnsServer
) -> None:
    zone = dns_server.zone
    domain = await _domain(db, resolving, zone)
    await _verify(db, resolving, domain)
    dkim_host = _records(await _verify(db, resolving, domain))["dkim"]["host"]
    zone.remove(dkim_host)
    zone.replace(domain.name, "TXT", "v=spf1 include:elsewhere.example ~all")
    zone.replace(f"track.{domain.name}", "CNAME", "other.example")

    done = await _verify(db, resolving, domain)

    records = _records(done)
    assert records["dkim"]["status"] == "MISSING" and records["dkim"]["observed"] == []
    assert records["spf"]["status"] == "MISMATCH"
    assert records["spf"]["observed"] == ["v=spf1 include:elsewhere.example ~all"]
    assert resolving.spf_include in records["spf"]["reason"]
    assert records["tracking"] == {**records["tracking"], "status": "MISMATCH",
                                   "observed": ["other.example."]}  # fmt: skip
    assert done.domain.status == DomainStatus.FAILED


async def test_a_verified_domain_that_stops_verifying_alerts_and_holds_its_accounts(
    db: Database, resolving: Settings, dns_server: DnsServer
) -> None:
    zone = dns_server.zone
    domain = await _domain(db, resolving, zone)
    async with db.tenant_session(domain.tenant_id) as s:
        row = EmailAccount(tenant_id=domain.tenant_id, domain_id=domain.id,
                           address=f"hello@{domain.name}")  # fmt: skip
        s.add(row)
        await s.flush()
        account = row.id
    assert (await _verify(db, resolving, domain)).domain.status == DomainStatus.VERIFIED
    zone.remove(f"_dmarc.{domain.name}")

    failed = await _verify(db, resolving, domain)

    assert failed.domain.status == DomainStatus.FAILED
    assert failed.event is not None and failed.event.kind == "domain_failed"
    assert "dmarc MISSING" in failed.event.message
    async with db.tenant_session(domain.tenant_id) as s:
        alert = await s.scalar(select(Alert).where(Alert.subject == domain.name))
        reason = await s.scalar(
            select(EmailAccount.status_reason).where(EmailAccount.id == account)
        )
    assert alert is not None and alert.kind == "domain_unverified" and alert.resolved_at is None
    assert reason == f"its domain {domain.name} stopped verifying (dmarc MISSING)"

    zone.add(f"_dmarc.{domain.name}", "TXT", f"v=DMARC1; p=none; rua=mailto:dmarc@{domain.name}")
    again = await _verify(db, resolving, domain)

    assert again.domain.status == DomainStatus.VERIFIED
    assert again.event is not None and again.event.kind == "domain_verified"
    async with db.tenant_session(domain.tenant_id) as s:
        alert = await s.scalar(select(Alert).where(Alert.subject == domain.name))
        reason = await s.scalar(
            select(EmailAccount.status_reason).where(EmailAccount.id == account)
        )
    assert alert is not None and alert.resolved_at is not None
    assert reason is None


async def test_servfail_and_timeouts_stay_pending_with_the_error_and_change_no_status(
    db: Database, resolving: Settings, dns_server: DnsServer
) -> None:
    zone = dns_server.zone
    domain = await _domain(db, resolving, zone)
    await _verify(db, resolving, domain)
    zone.servfail.add(f"pm._domainkey.{domain.name}.")
    zone.silent.add(f"_dmarc.{domain.name}.")
    try:
        began = time.monotonic()
        done = await _verify(db, resolving, domain)
        took = time.monotonic() - began
    finally:
        zone.servfail.clear()
        zone.silent.clear()

    records = _records(done)
    assert (records["dkim"]["status"], records["dkim"]["error"]) == ("PENDING", "SERVFAIL")
    assert (records["dmarc"]["status"], records["dmarc"]["error"]) == ("PENDING", "TIMEOUT")
    assert records["spf"]["status"] == "VERIFIED"
    assert done.domain.status == DomainStatus.VERIFIED  # a resolver's trouble is no verdict
    assert done.event is None
    assert took < 3 * resolving.dns_timeout_seconds  # lookups run together, each bounded


async def test_spf_needing_more_than_ten_lookups_or_allowing_all_is_refused(
    db: Database, resolving: Settings, dns_server: DnsServer
) -> None:
    zone = dns_server.zone
    domain = await _domain(db, resolving, zone)
    chain = [f"spf{n}.{domain.name}" for n in range(4)]
    for name, following in zip(chain, [*chain[1:], None], strict=True):
        tail = f" include:{following}" if following else ""
        zone.add(name, "TXT", f"v=spf1 a mx{tail} -all")
    zone.replace(
        domain.name, "TXT", f"v=spf1 include:{resolving.spf_include} include:{chain[0]} ~all"
    )

    too_many = _records(await _verify(db, resolving, domain))["spf"]

    assert too_many["status"] == "MISMATCH"
    assert "more than 10 DNS lookups (13)" in too_many["reason"]

    zone.replace(domain.name, "TXT", f"v=spf1 include:{resolving.spf_include} +all")
    assert "+all" in _records(await _verify(db, resolving, domain))["spf"]["reason"]
    zone.replace(domain.name, "TXT", f"v=spf1 include:{resolving.spf_include} bogus:x ~all")
    malformed = _records(await _verify(db, resolving, domain))["spf"]
    assert (
        malformed["status"] == "MISMATCH" and "'bogus:x' is not an SPF term" in malformed["reason"]
    )
    zone.add(domain.name, "TXT", f"v=spf1 include:{resolving.spf_include} ~all")
    assert "more than one" in _records(await _verify(db, resolving, domain))["spf"]["reason"]


async def test_a_malformed_dmarc_record_is_a_mismatch_with_the_reason(
    db: Database, resolving: Settings, dns_server: DnsServer
) -> None:
    zone = dns_server.zone
    domain = await _domain(db, resolving, zone)
    zone.replace(f"_dmarc.{domain.name}", "TXT", "v=DMARC1; p=sometimes")

    dmarc = _records(await _verify(db, resolving, domain))["dmarc"]

    assert dmarc["status"] == "MISMATCH"
    assert dmarc["observed"] == ["v=DMARC1; p=sometimes"]
    assert "p= must be one of none, quarantine, reject" in dmarc["reason"]


async def test_a_subdomain_is_covered_by_its_organisational_domains_dmarc(
    db: Database, resolving: Settings, dns_server: DnsServer
) -> None:
    zone = dns_server.zone
    tenant = await _tenant_on_plan(db)
    parent = f"o{uuid.uuid4().hex[:10]}.example"
    domain = await _add(db, resolving, tenant, f"mail.{parent}")
    publish(zone, domain, resolving)
    zone.remove(f"_dmarc.{domain.name}")
    zone.add(f"_dmarc.{parent}", "TXT", "v=DMARC1; p=reject; adkim=s")

    dmarc = _records(await _verify(db, resolving, domain))["dmarc"]

    assert dmarc["status"] == "VERIFIED"
    assert dmarc["observed"] == ["v=DMARC1; p=reject; adkim=s"]


@pytest.mark.parametrize("name", ["a.example.test", "shop.local", "x.localhost", "a.invalid",
                                  "abc.onion", "1.2.in-addr.arpa"])  # fmt: skip
def test_special_use_names_that_cannot_receive_mail_are_refused(name: str) -> None:
    with pytest.raises(DomainError) as refused:
        normalise_name(name)
    assert refused.value.code == "DOMAIN_INVALID"
    assert "special-use" in refused.value.message


@pytest.mark.parametrize("value", ["8.8.8.8:99999", "resolver.example", "1.2.3.4:x"])
def test_a_nameserver_setting_that_is_not_an_address_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="is not a nameserver"):
        Settings(dns_nameservers=value)


def test_nameservers_parse_with_and_without_ports() -> None:
    parsed = Settings(dns_nameservers="127.0.0.1:5353, 192.0.2.1,[::1]:53").dns_resolvers
    assert parsed == [("127.0.0.1", 5353), ("192.0.2.1", 53), ("::1", 53)]


async def test_a_domain_added_is_verified_by_a_worker_and_the_change_is_published(
    db: Database, resolving: Settings, dns_server: DnsServer, start_worker, run_queuer
) -> None:
    """addDomain's queued job, run by a real worker resolving through the DNS server."""
    from redis.asyncio import Redis

    from services import deliverability_events
    from tests.jobs.helpers import quiet_queue

    await quiet_queue(db, resolving)
    tenant = await _tenant_on_plan(db)
    redis = Redis.from_url(resolving.redis_url)
    listening = redis.pubsub()
    await listening.subscribe(deliverability_events.channel(tenant))
    try:
        domain = await _add(db, resolving, tenant, f"w{uuid.uuid4().hex[:10]}.example")
        publish(dns_server.zone, domain, resolving)
        start_worker(processes=1, threads=2, dns_nameservers=dns_server.nameservers)
        run_queuer()
        message = None
        deadline = time.monotonic() + 30
        while message is None and time.monotonic() < deadline:
            message = await listening.get_message(ignore_subscribe_messages=True, timeout=1)
    finally:
        await listening.aclose()
        await redis.aclose()

    assert message is not None, "no deliverability event within 30 s"
    event = json.loads(message["data"])
    assert (event["kind"], event["subjectType"]) == ("domain_verified", "Domain")
    assert event["subjectId"] == str(domain.id)
    async with db.tenant_session(tenant) as s:
        stored = await s.scalar(select(Domain).where(Domain.id == domain.id))
    assert stored.status == DomainStatus.VERIFIED
    assert {r["status"] for r in stored.dns_records} == {"VERIFIED"}


async def test_domains_not_checked_for_the_recheck_interval_are_queued_again(
    db: Database, settings: Settings
) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from models.queue import Job
    from services.domains import queue_rechecks

    tenant = await _tenant_on_plan(db)
    now = datetime(2031, 6, 1, 12, 0, tzinfo=UTC)
    ages = {"fresh": timedelta(hours=1), "stale": timedelta(hours=7), "never": None}
    ids = {}
    for label, age in ages.items():
        domain = await _add(db, settings, tenant, f"{label}-{uuid.uuid4().hex[:8]}.example")
        ids[label] = domain.id
        async with db.tenant_session(tenant) as s:
            await s.execute(
                update(Domain)
                .where(Domain.id == domain.id)
                .values(last_checked_at=None if age is None else now - age)
            )

    for _ in range(2):  # a second tick in the same interval queues nothing more
        async with db.system_session() as s:
            await queue_rechecks(s, settings, now)

    async with db.tenant_session(tenant) as s:
        queued = list(
            await s.scalars(
                select(Job.payload).where(Job.idempotency_key.like("verify_domain:%:recheck:%"))
            )
        )
    assert sorted(p["domain_id"] for p in queued) == sorted(
        str(ids[label]) for label in ("stale", "never")
    )


async def test_a_dkim_rotation_lists_both_keys_switches_once_verified_and_retires_the_old(
    db: Database, resolving: Settings, dns_server: DnsServer
) -> None:
    from datetime import UTC, datetime, timedelta

    from cryptography.hazmat.primitives import serialization

    from services.domains import dkim_private_key, rotate_dkim_key

    zone = dns_server.zone
    domain = await _domain(db, resolving, zone)
    assert (await _verify(db, resolving, domain)).domain.status == DomainStatus.VERIFIED
    old_selector, old_key = domain.dkim_selector, domain.dkim_public_key
    now = datetime(2031, 3, 1, 9, 0, tzinfo=UTC)
    async with db.tenant_session(domain.tenant_id) as s:
        rotated = await rotate_dkim_key(s, resolving, domain.tenant_id, domain.id, now)
    new_selector = rotated.dkim_next_selector
    kinds = {r["kind"]: r for r in rotated.dns_records}
    assert new_selector == f"{resolving.dkim_selector}20310301"
    assert kinds["dkim"]["host"] == f"{old_selector}._domainkey.{domain.name}"
    assert kinds["dkim_next"]["host"] == f"{new_selector}._domainkey.{domain.name}"
    assert kinds["dkim_next"]["value"] != kinds["dkim"]["value"]

    waiting = await _verify(db, resolving, domain)  # the new record is not published yet

    assert waiting.domain.status == DomainStatus.VERIFIED  # signed by the old key meanwhile
    assert waiting.domain.dkim_selector == old_selector
    assert _records(waiting)["dkim_next"]["status"] == "MISSING"

    zone.add(kinds["dkim_next"]["host"], "TXT", kinds["dkim_next"]["value"])
    switched = await _verify(db, resolving, domain)

    records = _records(switched)
    assert switched.domain.status == DomainStatus.VERIFIED
    assert switched.domain.dkim_selector == new_selector
    assert (records["dkim"]["host"], records["dkim"]["status"]) == (
        kinds["dkim_next"]["host"], "VERIFIED",
    )  # fmt: skip
    assert (records["dkim_retiring"]["host"], records["dkim_retiring"]["status"]) == (
        kinds["dkim"]["host"], "VERIFIED",
    )  # fmt: skip
    assert "dkim_next" not in records
    signing = serialization.load_pem_private_key(dkim_private_key(resolving, switched.domain), None)
    public = signing.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert f"p={base64.b64encode(public).decode()}" in records["dkim"]["value"]
    assert switched.domain.dkim_public_key != old_key
    retire_at = switched.domain.dkim_retire_at
    assert retire_at is not None

    async with db.tenant_session(domain.tenant_id) as s:
        kept = await dns.verify(s, resolving, domain.id, now=retire_at - timedelta(minutes=1))
        assert kept is not None and "dkim_retiring" in _records(kept)
        retired = await dns.verify(s, resolving, domain.id, now=retire_at)
    assert retired is not None
    assert set(_records(retired)) == {"spf", "dkim", "dmarc", "mx", "return_path", "tracking"}
    assert retired.domain.dkim_retiring_selector is None
    assert retired.domain.status == DomainStatus.VERIFIED

    async with db.tenant_session(domain.tenant_id) as s:  # again the same day: a new selector
        again = await rotate_dkim_key(s, resolving, domain.tenant_id, domain.id, now)
    assert again.dkim_selector == new_selector
    assert again.dkim_next_selector == f"{new_selector}-2"


async def test_lookups_in_flight_stay_within_the_bound(
    db: Database, resolving: Settings, dns_server: DnsServer
) -> None:
    import asyncio

    bounded = resolving.model_copy(update={"dns_max_in_flight": 3})
    dns_server.zone.silent.add("slow.bound.example.")  # each lookup waits for its timeout
    try:
        dns.Resolver.peak = 0
        resolver = dns.Resolver(bounded)
        found = await asyncio.gather(
            *(resolver.lookup("slow.bound.example", "A") for _ in range(9))
        )
    finally:
        dns_server.zone.silent.clear()
    assert dns.Resolver.peak == 3
    assert {f.error for f in found} == {"TIMEOUT"}
