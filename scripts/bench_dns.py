"""Benchmark: re-verification of 10,000 domains against an authoritative DNS server on loopback
(tests/dns_server.py, dnslib, the one the tests use), every domain's records published.

(a) baseline: the same lookups (each domain's TXT, DKIM, DMARC, MX and two CNAMEs, and the SPF
    include) made with dnspython directly, as many in flight as the platform allows, nothing
    else: the resolver's and the server's cost alone;
(b) the platform: `services.dns.verify` for each domain, as the `verify_domain` job runs it: the
    domain read, its records looked up and checked, the result written, `DOMAINS_AT_ONCE`
    domains at a time, lookups bounded by PENGUINMAILS_DNS_MAX_IN_FLIGHT.

Prints domains per second for each, the peak number of lookups in flight in (b), and last the
ratio. Runs on a scratch database on the server DATABASE_URL names (the embedded one when
unset), dropped at the end:

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres uv run python scripts/bench_dns.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import threading
import time
import uuid

import asyncpg
import dns.asyncresolver
import dns.nameserver

from bench_common import admin, run_with_servers, with_database
from penguinmails import migrations
from penguinmails.settings import PROJECT_ROOT, Settings

sys.path.insert(0, str(PROJECT_ROOT))  # the tests' DNS server
from tests.dns_server import DnsServer

DOMAINS = 10_000
DOMAINS_AT_ONCE = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", type=int, default=DOMAINS)
    parser.add_argument("--in-flight", type=int, default=Settings().dns_max_in_flight)
    args = parser.parse_args()
    run_with_servers(lambda settings: bench(settings, args.domains, args.in_flight))


async def bench(settings: Settings, count: int, in_flight: int) -> None:
    from models.infrastructure import DomainStatus
    from models.sessions import Database
    from services import dns as platform_dns
    from services.domains import _generate_dkim_key, dns_records

    server_url = settings.require_database_url()
    name = f"pm_bench_dns_{uuid.uuid4().hex[:12]}"
    url = with_database(server_url, name)
    await admin(server_url, f'CREATE DATABASE "{name}"')
    records: list[tuple] = []
    server: multiprocessing.Process | None = None
    try:
        _, public_key = _generate_dkim_key()  # one key for all: 10,000 would take minutes
        domains = [f"d{n:05d}-{uuid.uuid4().hex[:6]}.example" for n in range(count)]
        records = _records(settings, domains, public_key, dns_records)
        server, nameservers = _start_dns_server(records)
        scratch = settings.model_copy(update={
            "database_url": url, "dns_nameservers": nameservers,
            "dns_max_in_flight": in_flight, "dns_timeout_seconds": 10.0,
        })  # fmt: skip
        await asyncio.to_thread(migrations.upgrade, scratch)
        ids = await _insert(url, scratch, domains, public_key, dns_records)
        print(f"{count:,} domains, {len(records):,} records published by a DNS server in a "
              f"process of its own; {in_flight} lookups in flight")  # fmt: skip

        names = [(n, t) for d in domains for n, t in _lookups(scratch, d)]
        names.append((scratch.spf_include, "TXT"))
        raw_seconds = await _raw(nameservers, names, in_flight)
        print(f"(a) raw dnspython, {len(names):,} lookups: {raw_seconds:.2f} s, "
              f"{count / raw_seconds:,.0f} domains/s")  # fmt: skip

        db = Database(scratch)
        at_once = asyncio.Semaphore(DOMAINS_AT_ONCE)
        platform_dns.Resolver.peak = 0

        async def verify(tenant: uuid.UUID, domain_id: uuid.UUID) -> str:
            async with at_once, db.tenant_session(tenant) as session:
                done = await platform_dns.verify(session, scratch, domain_id)
                return done.domain.status if done else "gone"

        began = time.perf_counter()
        statuses = await asyncio.gather(*(verify(t, d) for t, d in ids))
        seconds = time.perf_counter() - began
        await db.dispose()
        verified = sum(s == DomainStatus.VERIFIED for s in statuses)
        print(f"(b) platform re-verification: {seconds:.2f} s, {count / seconds:,.0f} domains/s, "
              f"peak {platform_dns.Resolver.peak} lookups in flight, "
              f"{verified:,} of {count:,} VERIFIED")  # fmt: skip
        print(f"figures: (a) {count / raw_seconds:,.0f} domains/s, (b) {count / seconds:,.0f} "
              f"domains/s, peak in flight {platform_dns.Resolver.peak}")  # fmt: skip
        print(f"ratio (b)/(a): {raw_seconds / seconds:.2f}")
    finally:
        if server is not None:
            server.terminate()
            server.join()
        await admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _insert(url, settings, domains, public_key, dns_records) -> list[tuple]:
    conn = await asyncpg.connect(url)
    try:
        tenant = await conn.fetchval(
            "INSERT INTO app.tenants (id, name, slug) VALUES (gen_random_uuid(), 'Bench', 'bench') RETURNING id"
        )
        rows = [
            (uuid.uuid4(), tenant, d, "VERIFIED", settings.dkim_selector, public_key,
             json.dumps(dns_records(settings, d, settings.dkim_selector, public_key)))
            for d in domains
        ]  # fmt: skip
        await conn.copy_records_to_table(
            "domains", schema_name="app", records=rows,
            columns=["id", "tenant_id", "name", "status", "dkim_selector", "dkim_public_key",
                     "dns_records"],
        )  # fmt: skip
        await conn.execute("ANALYZE app.domains")
    finally:
        await conn.close()
    return [(tenant, row[0]) for row in rows]


def _records(settings, domains, public_key, dns_records) -> list[dict]:
    """Every record the domains publish, and the SPF include's."""
    include = {"host": settings.spf_include, "type": "TXT", "value": "v=spf1 ip4:192.0.2.0/24 -all"}
    return [include] + [
        record
        for domain in domains
        for record in dns_records(settings, domain, settings.dkim_selector, public_key)
    ]


def _serve(records: list[dict], ready: multiprocessing.Queue) -> None:
    server = DnsServer()
    server.zone.publish(records)
    server.start()
    ready.put(server.nameservers)
    threading.Event().wait()


def _start_dns_server(records: list[dict]) -> tuple[multiprocessing.Process, str]:
    """The DNS server in a process of its own (its threads would share the benchmark's)."""
    ready: multiprocessing.Queue = multiprocessing.Queue()
    process = multiprocessing.Process(target=_serve, args=(records, ready), daemon=True)
    process.start()
    return process, ready.get(timeout=120)


def _lookups(settings: Settings, domain: str) -> list[tuple[str, str]]:
    return [
        (domain, "TXT"), (f"{settings.dkim_selector}._domainkey.{domain}", "TXT"),
        (f"_dmarc.{domain}", "TXT"), (domain, "MX"),
        (f"{settings.return_path_label}.{domain}", "CNAME"),
        (f"{settings.tracking_label}.{domain}", "CNAME"),
        (settings.spf_include, "TXT"),
    ]  # fmt: skip


async def _raw(nameservers: str, names: list[tuple[str, str]], in_flight: int) -> float:
    host, port = nameservers.split(":")
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver(host, int(port))]
    resolver.lifetime = resolver.timeout = 10.0
    limit = asyncio.Semaphore(in_flight)

    async def one(name: str, type_: str) -> None:
        async with limit:
            await resolver.resolve(name, type_, raise_on_no_answer=False)

    began = time.perf_counter()
    await asyncio.gather(*(one(n, t) for n, t in names))
    return time.perf_counter() - began


if __name__ == "__main__":
    main()
