"""Recipient domains: their mail hosts looked up through a real authoritative DNS server on
loopback (tests/dns_server.py) and kept in a real Redis, and the provider behind them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from penguinmails.settings import Settings
from services.dns import Resolver
from services.recipients import MailDomain, mail_hosts, provider, providers
from tests.dns_server import DnsServer, Zone


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url)
    yield client
    await client.aclose()


def _domain() -> str:
    """A name no other test, nor an earlier run against the same Redis, has cached."""
    return f"r{uuid.uuid4().hex[:10]}.example"


async def _hosts(settings: Settings, redis: Redis, *domains: str) -> dict[str, MailDomain]:
    return await mail_hosts(
        Resolver(settings), redis, domains, settings.recipient_domain_cache_seconds
    )


def _queried(zone: Zone, domain: str) -> list[str]:
    return [type_ for name, type_ in zone.queries if name == f"{domain}."]


async def test_a_domain_with_mx_records_has_its_hosts_most_preferred_first(
    resolving: Settings, dns_server: DnsServer, redis: Redis
) -> None:
    domain = _domain()
    dns_server.zone.add(domain, "MX", (20, f"backup.{domain}"))
    dns_server.zone.add(domain, "MX", (10, f"mx1.{domain}"))
    dns_server.zone.add(domain, "A", "192.0.2.1")  # an MX makes the address irrelevant

    found = (await _hosts(resolving, redis, domain))[domain]

    assert found == MailDomain((f"mx1.{domain}", f"backup.{domain}"))
    assert not found.accepts_no_mail
    assert _queried(dns_server.zone, domain) == ["MX"]


@pytest.mark.parametrize(("type_", "address"), [("A", "192.0.2.1"), ("AAAA", "2001:db8::1")])
async def test_a_domain_with_an_address_but_no_mx_is_its_own_mail_host(
    resolving: Settings, dns_server: DnsServer, redis: Redis, type_: str, address: str
) -> None:
    domain = _domain()
    dns_server.zone.add(domain, type_, address)

    found = (await _hosts(resolving, redis, domain))[domain]

    assert found == MailDomain((domain,))
    assert not found.accepts_no_mail


async def test_a_null_mx_says_the_domain_accepts_no_mail_even_with_an_address(
    resolving: Settings, dns_server: DnsServer, redis: Redis
) -> None:
    domain = _domain()
    dns_server.zone.add(domain, "MX", (0, "."))
    dns_server.zone.add(domain, "A", "192.0.2.1")

    found = (await _hosts(resolving, redis, domain))[domain]

    assert found == MailDomain(())
    assert found.accepts_no_mail


async def test_a_domain_that_does_not_exist_or_has_neither_mx_nor_address_accepts_no_mail(
    resolving: Settings, dns_server: DnsServer, redis: Redis
) -> None:
    missing, bare = _domain(), _domain()
    dns_server.zone.add(bare, "TXT", "v=spf1 -all")  # the name exists, with no mail host

    found = await _hosts(resolving, redis, missing, bare)

    assert found[missing].accepts_no_mail and found[bare].accepts_no_mail
    assert sorted(_queried(dns_server.zone, missing)) == ["A", "AAAA", "MX"]


@pytest.mark.parametrize("failure", ["servfail", "silent"])
async def test_a_lookup_the_resolver_cannot_answer_is_unknown_and_not_kept(
    resolving: Settings, dns_server: DnsServer, redis: Redis, failure: str
) -> None:
    zone, domain = dns_server.zone, _domain()
    zone.add(domain, "MX", (10, "aspmx.l.google.com"))
    getattr(zone, failure).add(f"{domain}.")
    try:
        failed = (await _hosts(resolving, redis, domain))[domain]
    finally:
        getattr(zone, failure).discard(f"{domain}.")

    assert failed.error == {"servfail": "SERVFAIL", "silent": "TIMEOUT"}[failure]
    assert not failed.accepts_no_mail  # unknown is never "no mail"
    assert provider(failed) == "other"
    again = (await _hosts(resolving, redis, domain))[domain]
    assert again == MailDomain(("aspmx.l.google.com",))  # asked again: the failure was not kept


async def test_a_cached_answer_is_served_without_asking_dns(
    resolving: Settings, dns_server: DnsServer, redis: Redis
) -> None:
    zone, with_mx, without = dns_server.zone, _domain(), _domain()
    zone.add(with_mx, "MX", (10, f"mx.{with_mx}"))
    first = await _hosts(resolving, redis, with_mx, without)
    zone.remove(with_mx)
    zone.add(without, "MX", (10, f"mx.{without}"))
    asked = len(zone.queries)

    second = await _hosts(resolving, redis, with_mx.upper(), f"{without}.")

    assert second == {with_mx.upper(): first[with_mx], f"{without}.": first[without]}
    assert second[f"{without}."].accepts_no_mail  # "no mail" is kept too, for the TTL
    assert len(zone.queries) == asked


async def test_a_cached_answer_is_asked_again_once_the_cache_time_is_over(
    resolving: Settings, dns_server: DnsServer, redis: Redis
) -> None:
    briefly = resolving.model_copy(update={"recipient_domain_cache_seconds": 1})
    zone, domain = dns_server.zone, _domain()
    zone.add(domain, "MX", (10, f"old.{domain}"))
    await _hosts(briefly, redis, domain)
    zone.replace(domain, "MX", (10, f"new.{domain}"))

    assert (await _hosts(briefly, redis, domain))[domain].hosts == (f"old.{domain}",)
    await asyncio.sleep(1.2)
    assert (await _hosts(briefly, redis, domain))[domain].hosts == (f"new.{domain}",)


async def test_providers_are_told_by_the_most_preferred_mail_host(
    resolving: Settings, dns_server: DnsServer, redis: Redis
) -> None:
    zone = dns_server.zone
    hosts = {
        "gmail": ["gmail-smtp-in.l.google.com", "aspmx.l.google.com", "mx.googlemail.com"],
        "outlook": ["contoso-com.mail.protection.outlook.com", "mx1.hotmail.com", "outlook.com"],
        "yahoo": ["mta5.am0.yahoodns.net", "mx-eu.mail.yahoo.com"],
        "other": ["mx.example.net", "google.com.mx.example.net", "notgoogle.com"],
    }
    expected = {}
    for name, mail_hosts_of in hosts.items():
        for host in mail_hosts_of:
            domain = _domain()
            zone.add(domain, "MX", (10, host))
            zone.add(domain, "MX", (20, "backup.mx.example.net"))
            expected[domain] = name
    google_backup = _domain()  # a gateway in front, Google behind: the gateway receives
    zone.add(google_backup, "MX", (5, "mx1.gateway.example.net"))
    zone.add(google_backup, "MX", (10, "aspmx.l.google.com"))
    no_mail, unknown = _domain(), _domain()
    zone.servfail.add(f"{unknown}.")
    expected |= {google_backup: "other", no_mail: "other", unknown: "other"}

    try:
        found = await providers(resolving, redis, [*expected, no_mail.upper()])
    finally:
        zone.servfail.discard(f"{unknown}.")

    assert found == expected | {no_mail.upper(): "other"}
