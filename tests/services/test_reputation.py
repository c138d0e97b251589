"""DNS blocklist monitoring against the loopback DNS server (tests/dns_server.py), its zones
standing in for the blocklists."""

from __future__ import annotations

import ipaddress
import random
import uuid

import pytest
from sqlalchemy import select

from models.infrastructure import Domain, IpStatus, SmtpIpAddress
from models.operations import Alert
from models.sessions import Database
from penguinmails.settings import Settings
from services import reputation
from tests.dns_server import DnsServer
from tests.services.test_domains import _add, _tenant_on_plan

ZONES = "zen.bl.example,dbl.bl.example"


@pytest.fixture
def checking(resolving: Settings) -> Settings:
    return resolving.model_copy(update={"dnsbl_zones": ZONES})


async def _ip(db: Database, tenant: uuid.UUID) -> SmtpIpAddress:
    address = str(
        ipaddress.ip_address(f"198.18.{random.randrange(256)}.{random.randrange(1, 255)}")
    )
    async with db.tenant_session(tenant) as s:
        ip = SmtpIpAddress(tenant_id=tenant, address=address, status=IpStatus.ACTIVE)
        s.add(ip)
        await s.flush()
    return ip


async def _check(db: Database, settings: Settings) -> list:
    async with db.system_session() as s:
        return await reputation.check_all(s, settings)


async def _state(db: Database, tenant: uuid.UUID, ip_id: uuid.UUID):
    async with db.tenant_session(tenant) as s:
        ip = await s.get(SmtpIpAddress, ip_id)
        alerts = list(await s.scalars(select(Alert).where(Alert.kind == "ip_blacklisted")))
    return ip, alerts


def test_an_ip_is_asked_as_its_reversed_octets_and_a_domain_as_itself() -> None:
    assert reputation.query_name("192.0.2.10", "zen.example") == "10.2.0.192.zen.example"
    assert reputation.query_name("2001:db8::1", "z.example").startswith("1.0.0.0.")
    assert reputation.query_name("shop.example", "dbl.example") == "shop.example.dbl.example"


async def test_a_listed_ip_is_blacklisted_and_restored_when_delisted(
    db: Database, checking: Settings, dns_server: DnsServer
) -> None:
    zone = dns_server.zone
    tenant = await _tenant_on_plan(db)
    ip = await _ip(db, tenant)
    listed_name = reputation.query_name(str(ip.address), "zen.bl.example")
    zone.add(listed_name, "A", "127.0.0.2")

    events = [
        e for e in await _check(db, checking) if e.subject_id == ip.id and e.kind.startswith("ip_")
    ]

    stored, alerts = await _state(db, tenant, ip.id)
    assert stored.status == IpStatus.BLACKLISTED and stored.blacklisted_on == ["zen.bl.example"]
    assert [e.kind for e in events] == ["ip_listed"]
    assert "spam source (SBL)" in events[0].message
    assert [(a.subject, a.resolved_at) for a in alerts] == [(str(ip.address), None)]

    zone.remove(listed_name)
    events = [
        e for e in await _check(db, checking) if e.subject_id == ip.id and e.kind.startswith("ip_")
    ]

    stored, alerts = await _state(db, tenant, ip.id)
    assert stored.status == IpStatus.ACTIVE and stored.blacklisted_on == []
    assert [e.kind for e in events] == ["ip_delisted"]
    assert alerts[0].resolved_at is not None


async def test_a_list_refusing_the_query_is_no_listing_and_keeps_the_last_state(
    db: Database, checking: Settings, dns_server: DnsServer
) -> None:
    zone = dns_server.zone
    tenant = await _tenant_on_plan(db)
    clean, listed = await _ip(db, tenant), await _ip(db, tenant)
    zone.add(reputation.query_name(str(clean.address), "zen.bl.example"), "A", "127.255.255.254")
    listed_name = reputation.query_name(str(listed.address), "zen.bl.example")
    zone.add(listed_name, "A", "127.0.0.4")
    await _check(db, checking)
    zone.replace(listed_name, "A", "127.255.255.254")  # then the list stops answering

    events = await _check(db, checking)

    assert not [e for e in events if e.subject_id in (clean.id, listed.id)]
    stored_clean, _ = await _state(db, tenant, clean.id)
    stored_listed, _ = await _state(db, tenant, listed.id)
    assert (stored_clean.status, stored_clean.blacklisted_on) == (IpStatus.ACTIVE, [])
    assert (stored_listed.status, stored_listed.blacklisted_on) == (
        IpStatus.BLACKLISTED, ["zen.bl.example"],
    )  # fmt: skip
    assert reputation.read(["127.255.255.254"], None).unavailable is not None
    assert reputation.read([], "TIMEOUT").unavailable == "resolver TIMEOUT"


async def test_a_listed_domain_raises_an_alert_and_an_event(
    db: Database, checking: Settings, dns_server: DnsServer
) -> None:
    tenant = await _tenant_on_plan(db)
    domain = await _add(db, checking, tenant, f"l{uuid.uuid4().hex[:10]}.example")
    dns_server.zone.add(f"{domain.name}.dbl.bl.example", "A", "127.0.1.4")

    events = [e for e in await _check(db, checking) if e.subject_id == domain.id]

    assert [e.kind for e in events] == ["domain_listed"]
    assert "phishing domain (DBL)" in events[0].message
    async with db.tenant_session(tenant) as s:
        stored = await s.get(Domain, domain.id)
        alert = await s.scalar(select(Alert).where(Alert.kind == "domain_blacklisted"))
    assert stored.blacklisted_on == ["dbl.bl.example"]
    assert alert is not None and alert.subject == domain.name


async def test_reverse_dns_must_resolve_back_and_name_the_helo_host(
    db: Database, checking: Settings, dns_server: DnsServer
) -> None:
    zone = dns_server.zone
    tenant = await _tenant_on_plan(db)
    ip = await _ip(db, tenant)
    address, host = str(ip.address), f"mta-{uuid.uuid4().hex[:6]}.send.example"
    async with db.tenant_session(tenant) as s:
        row = await s.get(SmtpIpAddress, ip.id)
        row.ptr_hostname = host
    reverse = ipaddress.ip_address(address).reverse_pointer

    await _check(db, checking)  # no PTR at all
    assert (await _state(db, tenant, ip.id))[0].ptr_status == "MISSING"

    zone.add(reverse, "PTR", host)  # a PTR whose name does not resolve back
    events = [e for e in await _check(db, checking) if e.subject_id == ip.id]
    stored = (await _state(db, tenant, ip.id))[0]
    assert (stored.ptr_status, stored.ptr) == ("MISMATCH", host)
    assert [e.kind for e in events] == ["ptr_mismatch"]

    zone.add(host, "A", address)  # forward-confirmed, and the HELO name
    events = [e for e in await _check(db, checking) if e.subject_id == ip.id]
    stored = (await _state(db, tenant, ip.id))[0]
    assert (stored.ptr_status, stored.ptr) == ("VERIFIED", host)
    assert [e.kind for e in events] == ["ptr_verified"]
    async with db.tenant_session(tenant) as s:
        alerts = list(await s.scalars(select(Alert).where(Alert.kind == "ptr_mismatch")))
    assert alerts and all(a.resolved_at is not None for a in alerts)

    other = f"other-{uuid.uuid4().hex[:6]}.send.example"  # resolves back, but not the HELO name
    zone.replace(reverse, "PTR", other)
    zone.add(other, "A", address)
    await _check(db, checking)
    assert (await _state(db, tenant, ip.id))[0].ptr_status == "MISMATCH"
