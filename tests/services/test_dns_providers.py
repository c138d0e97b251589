"""Publishing DNS records: zone files answered by the real test DNS server (tests/dns_server.py)
and checked with the platform's resolver, and Cloudflare's v4 API through a local stand-in
(tests/cloudflare_server.py) that records every request."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.rdatatype
import dns.zone
import pytest
from pydantic import SecretStr

from penguinmails.settings import Settings
from services import dns as checks
from services.dns_providers import (
    CloudflareProvider,
    DnsProviderError,
    Record,
    ZoneFileProvider,
    provider,
    ptr_host,
    reverse_zone,
    zone_dir,
)
from services.domains import dns_records
from tests.cloudflare_server import API_TOKEN, FakeCloudflare, running_cloudflare
from tests.dns_server import DnsServer


def _zone() -> str:
    return f"z{uuid.uuid4().hex[:10]}.example"


def _serial(path: Path) -> int:
    master = dns.zone.from_file(str(path), relativize=False)
    return master.find_rdataset(master.origin, dns.rdatatype.SOA)[0].serial


@pytest.fixture
def zones(tmp_path: Path, dns_server: DnsServer) -> Iterator[ZoneFileProvider]:
    """A zone-file provider whose directory the test DNS server answers from."""
    dns_server.zone.serve_files(tmp_path)
    yield ZoneFileProvider(tmp_path)
    dns_server.zone.stop_serving_files(tmp_path)


@pytest.fixture
async def resolver(resolving: Settings) -> checks.Resolver:
    return checks.Resolver(resolving)


# --- zone files -------------------------------------------------------------------------------


async def test_a_domains_records_written_to_a_zone_file_are_served_and_verify(
    zones: ZoneFileProvider, resolver: checks.Resolver, resolving: Settings
) -> None:
    zone = _zone()
    public_key = base64.b64encode(os.urandom(294)).decode()  # a 2048-bit key's length
    published = dns_records(resolving, zone, "pm1", public_key)
    records = [Record(r["host"], r["type"], r["value"]) for r in published]

    await zones.apply(zone, records)

    by_kind = {r["kind"]: r for r in published}
    verdicts = {
        "spf": await checks.check_spf(resolver, zone, resolving.spf_include, []),
        "dkim": await checks.check_dkim(resolver, by_kind["dkim"]["host"], public_key),
        "dmarc": await checks.check_dmarc(resolver, zone),
        "mx": await checks.check_mx(resolver, zone, resolving.mx_host),
        "return_path": await checks.check_cname(
            resolver, by_kind["return_path"]["host"], by_kind["return_path"]["value"]
        ),
        "tracking": await checks.check_cname(
            resolver, by_kind["tracking"]["host"], by_kind["tracking"]["value"]
        ),
    }
    assert {kind: v.status for kind, v in verdicts.items()} == dict.fromkeys(verdicts, "VERIFIED")
    # The DKIM record, over 255 bytes, is published as several character-strings.
    master = dns.zone.from_file(str(zones.path(zone)), relativize=False)
    dkim = master.find_rdataset(by_kind["dkim"]["host"] + ".", "TXT")[0]
    assert len(dkim.strings) == 2 and max(len(s) for s in dkim.strings) == 255
    assert b"".join(dkim.strings).decode() == by_kind["dkim"]["value"]
    # A new zone has its SOA and NS.
    assert (await resolver.lookup(zone, "NS")).values == [f"ns.{zone}."]
    assert _serial(zones.path(zone)) == 1


async def test_a_vps_name_and_its_ptr_in_a_reverse_zone_are_served(
    zones: ZoneFileProvider, resolver: checks.Resolver
) -> None:
    zone = _zone()
    host = f"vps-7.{zone}"
    address = "127.77.0.5"
    assert (reverse_zone(address), ptr_host(address)) == (
        "0.77.127.in-addr.arpa",
        "5.0.77.127.in-addr.arpa",
    )

    await zones.apply(zone, [Record(host, "A", address), Record(host, "A", "127.77.0.6")])
    await zones.apply(reverse_zone(address), [Record(ptr_host(address), "PTR", host)])

    assert sorted((await resolver.lookup(host, "A")).values) == ["127.77.0.5", "127.77.0.6"]
    assert (await resolver.lookup(ptr_host(address), "PTR")).values == [f"{host}."]
    # Its addresses are the ones the last call gave.
    await zones.apply(zone, [Record(host, "A", "127.77.0.9")])
    assert (await resolver.lookup(host, "A")).values == ["127.77.0.9"]


async def test_ipv6_reverse_names_are_the_nibble_form_in_a_64() -> None:
    address = "2001:db8::5"
    assert ptr_host(address) == ".".join(reversed("20010db8" + "0" * 23 + "5")) + ".ip6.arpa"
    assert reverse_zone(address) == ".".join(reversed("20010db8" + "0" * 8)) + ".ip6.arpa"


async def test_a_second_apply_leaves_the_zone_file_as_it_was(
    zones: ZoneFileProvider,
) -> None:
    zone = _zone()
    records = [
        Record(zone, "TXT", f"v=spf1 include:spf.{zone} ~all"),
        Record(zone, "MX", f"10 mx.{zone}."),
        Record(f"bounces.{zone}", "CNAME", "return.penguinmails.test"),
    ]
    await zones.apply(zone, records)
    path = zones.path(zone)
    before, stat = path.read_bytes(), path.stat()

    await zones.apply(zone, records)
    await zones.apply(zone, [Record(zone.upper() + ".", "mx", f"10 MX.{zone}")])  # same record

    assert path.read_bytes() == before
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert _serial(path) == 1


async def test_a_new_spf_replaces_the_old_one_and_other_txt_records_stay(
    zones: ZoneFileProvider, resolver: checks.Resolver
) -> None:
    zone = _zone()
    verification = "google-site-verification=abc123"
    await zones.apply(zone, [Record(zone, "TXT", "v=spf1 ip4:192.0.2.1 -all")])
    await zones.apply(zone, [Record(zone, "TXT", verification)])
    assert sorted((await resolver.lookup(zone, "TXT")).values) == [
        verification,
        "v=spf1 ip4:192.0.2.1 -all",
    ]

    await zones.apply(zone, [Record(zone, "TXT", "V=SPF1 ip4:192.0.2.7 include:x.test ~all")])

    assert sorted((await resolver.lookup(zone, "TXT")).values) == [
        "V=SPF1 ip4:192.0.2.7 include:x.test ~all",
        verification,
    ]
    assert _serial(zones.path(zone)) == 3


async def test_remove_takes_away_exactly_the_records_named(
    zones: ZoneFileProvider, resolver: checks.Resolver
) -> None:
    zone = _zone()
    spf, dmarc = f"v=spf1 include:spf.{zone} ~all", "v=DMARC1; p=none"
    await zones.apply(
        zone,
        [
            Record(zone, "TXT", spf),
            Record(zone, "TXT", "other"),
            Record(f"_dmarc.{zone}", "TXT", dmarc),
        ],
    )

    await zones.remove(zone, [Record(zone, "TXT", spf), Record(f"_dmarc.{zone}", "TXT", dmarc)])

    assert (await resolver.lookup(zone, "TXT")).values == ["other"]
    assert (await resolver.lookup(f"_dmarc.{zone}", "TXT")).values == []
    serial = _serial(zones.path(zone))
    await zones.remove(zone, [Record(zone, "TXT", spf), Record(f"gone.{zone}", "A", "192.0.2.1")])
    assert _serial(zones.path(zone)) == serial
    nowhere = _zone()
    await zones.remove(nowhere, [Record(f"x.{nowhere}", "A", "192.0.2.1")])
    assert not zones.path(nowhere).exists()


async def test_writers_at_once_each_get_their_records_in(zones: ZoneFileProvider) -> None:
    zone = _zone()
    writers = [ZoneFileProvider(zones.directory) for _ in range(8)]

    await asyncio.gather(
        *(
            w.apply(zone, [Record(f"vps-{i}.{zone}", "A", f"192.0.2.{i}")])
            for i, w in enumerate(writers)
        )
    )

    master = dns.zone.from_file(str(zones.path(zone)), relativize=False)
    names = {name.to_text() for name, _, _ in master.iterate_rdatas("A")}
    assert names == {f"vps-{i}.{zone}." for i in range(8)}
    assert _serial(zones.path(zone)) == 8


async def test_a_record_outside_the_zone_or_of_another_type_is_refused(
    zones: ZoneFileProvider,
) -> None:
    for record in (Record("a.other.example", "A", "192.0.2.1"), Record("x.z.example", "SRV", "1")):
        with pytest.raises(DnsProviderError) as refused:
            await zones.apply("z.example", [record])
        assert refused.value.retryable is False
    with pytest.raises(DnsProviderError):
        await zones.apply("../elsewhere", [])


def test_the_settings_choose_the_provider_and_the_zone_directory(settings: Settings) -> None:
    assert (
        zone_dir(settings.model_copy(update={"dns_zone_dir": None})) == settings.data_dir / "zones"
    )
    chosen = provider(
        settings.model_copy(update={"dns_provider": "zonefile", "dns_zone_dir": Path("/z")})
    )
    assert isinstance(chosen, ZoneFileProvider) and chosen.directory == Path("/z")
    assert isinstance(
        provider(settings.model_copy(update={"dns_provider": "cloudflare"})), CloudflareProvider
    )


# --- Cloudflare ---------------------------------------------------------------------------------


@dataclass
class Cloudflare:
    fake: FakeCloudflare
    settings: Settings  # pointing at the fake, with its token
    client: CloudflareProvider


@pytest.fixture
async def cloudflare(settings: Settings) -> AsyncIterator[Cloudflare]:
    async with running_cloudflare() as (url, fake):
        configured = settings.model_copy(
            update={"cloudflare_api_base": url, "cloudflare_api_token": SecretStr(API_TOKEN)}
        )
        client = CloudflareProvider(configured)
        yield Cloudflare(fake, configured, client)
        await client.aclose()


async def test_cloudflare_creates_the_records_then_a_second_apply_writes_nothing(
    cloudflare: Cloudflare,
) -> None:
    fake, client = cloudflare.fake, cloudflare.client
    zone = _zone()
    zone_id = fake.add_zone(zone)
    dkim = "v=DKIM1; k=rsa; p=" + "A" * 300
    records = [
        Record(zone, "TXT", "v=spf1 include:spf.penguinmails.test ~all"),
        Record(f"pm1._domainkey.{zone}", "TXT", dkim),
        Record(zone, "MX", "10 mx.penguinmails.test."),
        Record(f"bounces.{zone}", "CNAME", "return.penguinmails.test"),
        Record(f"vps-1.{zone}", "A", "192.0.2.10"),
    ]

    await client.apply(zone, records)

    writes = fake.writes()
    assert [(w.method, w.path) for w in writes] == [("POST", f"/zones/{zone_id}/dns_records")] * 5
    assert all(w.authorization == f"Bearer {API_TOKEN}" for w in fake.requests)
    bodies = {(w.body["name"], w.body["type"]): w.body for w in writes}
    assert bodies[zone, "MX"] == {
        "type": "MX", "name": zone, "content": "mx.penguinmails.test", "priority": 10, "ttl": 1,
    }  # fmt: skip
    assert bodies[f"pm1._domainkey.{zone}", "TXT"]["content"] == f'"{dkim[:255]}" "{dkim[255:]}"'
    assert bodies[f"vps-1.{zone}", "A"]["proxied"] is False
    lists = [r for r in fake.requests if r.method == "GET" and r.path.endswith("/dns_records")]
    assert {(r.query["name"], r.query["type"]) for r in lists} == {
        (r.host, r.type) for r in records
    }

    before = len(fake.requests)
    await client.apply(zone, records)

    assert len(fake.writes()) == 5
    again = fake.requests[before:]
    assert {r.method for r in again} == {"GET"}
    assert not any(r.path == "/zones" for r in again)  # the zone id is kept


async def test_cloudflare_updates_a_changed_record_and_leaves_other_txt_alone(
    cloudflare: Cloudflare,
) -> None:
    fake, client = cloudflare.fake, cloudflare.client
    zone = _zone()
    zone_id = fake.add_zone(zone)
    # Made in the dashboard: bare TXT content, one SPF twice over.
    fake.add_record(zone_id, zone, "TXT", "google-site-verification=abc")
    spf_id = fake.add_record(zone_id, zone, "TXT", "v=spf1 include:old.example ~all")
    fake.add_record(zone_id, zone, "TXT", "v=spf1 include:older.example ~all")
    fake.add_record(zone_id, f"_dmarc.{zone}", "TXT", "v=DMARC1; p=none")

    await client.apply(
        zone,
        [
            Record(zone, "TXT", "v=spf1 include:spf.penguinmails.test ~all"),
            Record(f"_dmarc.{zone}", "TXT", "v=DMARC1; p=none"),  # as it is: untouched
        ],
    )

    writes = [(w.method, w.path, w.body) for w in fake.writes()]
    assert writes[0] == (
        "PUT", f"/zones/{zone_id}/dns_records/{spf_id}",
        {"type": "TXT", "name": zone, "content": '"v=spf1 include:spf.penguinmails.test ~all"', "ttl": 1},
    )  # fmt: skip
    assert [(m, p.rsplit("/", 1)[0]) for m, p, _ in writes[1:]] == [
        ("DELETE", f"/zones/{zone_id}/dns_records")
    ]
    assert fake.zone_records(zone_id) == [
        (f"_dmarc.{zone}", "TXT", "v=DMARC1; p=none", None),
        (zone, "TXT", '"v=spf1 include:spf.penguinmails.test ~all"', None),
        (zone, "TXT", "google-site-verification=abc", None),
    ]


async def test_cloudflare_reads_every_page_of_a_listing(
    cloudflare: Cloudflare,
) -> None:
    fake, client = cloudflare.fake, cloudflare.client
    zone = _zone()
    zone_id = fake.add_zone(zone)
    host = f"vps-1.{zone}"
    for i in range(120):
        fake.add_record(zone_id, host, "A", f"192.0.2.{i}")

    await client.apply(zone, [Record(host, "A", "192.0.2.119")])

    pages = [
        r.query["page"]
        for r in fake.requests
        if r.path.endswith("/dns_records") and r.method == "GET"
    ]
    assert pages == ["1", "2"]
    assert [c for _, _, c, _ in fake.zone_records(zone_id)] == ["192.0.2.119"]


async def test_cloudflare_removes_exactly_the_records_named(
    cloudflare: Cloudflare,
) -> None:
    fake, client = cloudflare.fake, cloudflare.client
    zone = _zone()
    zone_id = fake.add_zone(zone)
    await client.apply(
        zone, [Record(zone, "MX", "10 mx.a.test"), Record(zone, "TXT", "v=spf1 -all")]
    )
    fake.add_record(zone_id, zone, "TXT", "keep me")

    await client.remove(
        zone,
        [
            Record(zone, "TXT", "v=spf1 -all"),
            Record(zone, "MX", "20 mx.b.test"),
            Record(zone, "A", "192.0.2.1"),
        ],
    )

    assert fake.zone_records(zone_id) == [
        (zone, "MX", "mx.a.test", 10),
        (zone, "TXT", "keep me", None),
    ]
    assert [w.method for w in fake.writes()] == ["POST", "POST", "DELETE"]


async def test_cloudflare_errors_carry_the_apis_message_and_whether_to_retry(
    cloudflare: Cloudflare,
) -> None:
    fake, client = cloudflare.fake, cloudflare.client
    zone = _zone()
    fake.add_zone(zone)
    record = [Record(zone, "A", "192.0.2.1")]

    fake.fail_next(503, 10001, "Service temporarily unavailable")
    with pytest.raises(DnsProviderError) as outage:
        await client.apply(zone, record)
    assert outage.value.retryable is True
    assert "Service temporarily unavailable (code 10001)" in outage.value.reason

    fake.fail_next(429, 971, "Please wait and consider throttling your request speed")
    with pytest.raises(DnsProviderError) as throttled:
        await client.apply(zone, record)
    assert throttled.value.retryable is True

    with pytest.raises(DnsProviderError) as unknown:
        await client.apply("nowhere.example", [Record("nowhere.example", "A", "192.0.2.1")])
    assert unknown.value.retryable is False
    assert "no zone nowhere.example" in unknown.value.reason

    bad = CloudflareProvider(
        cloudflare.settings.model_copy(update={"cloudflare_api_token": SecretStr("wrong")})
    )
    with pytest.raises(DnsProviderError) as refused:
        await bad.apply(zone, record)
    await bad.aclose()
    assert refused.value.retryable is False
    assert refused.value.reason == "Cloudflare GET /zones: 403 Authentication error (code 10000)"
    assert fake.requests[-1].authorization == "Bearer wrong"
    assert fake.writes() == []


async def test_cloudflare_out_of_reach_is_worth_a_retry(settings: Settings) -> None:
    client = CloudflareProvider(
        settings.model_copy(
            update={
                "cloudflare_api_base": "http://127.0.0.1:9",
                "cloudflare_api_token": SecretStr("t"),
            }
        )
    )
    with pytest.raises(DnsProviderError) as unreachable:
        await client.apply("z.example", [Record("z.example", "A", "192.0.2.1")])
    await client.aclose()
    assert unreachable.value.retryable is True
