"""Domain verification against real DNS: each record a sending domain publishes (SPF, DKIM,
DMARC, MX, the return-path and tracking CNAMEs) looked up through the configured resolvers
(`PENGUINMAILS_DNS_NAMESERVERS`) and compared with what it should be.

A record is VERIFIED, MISMATCH (published, but not what it should be: the observed value and the
reason are kept), MISSING (no such name or no such record), or PENDING with `error` SERVFAIL or
TIMEOUT: the resolver could not say, which is never taken as MISSING. A domain is VERIFIED when
every record is; one that was verified and then has a record MISSING or MISMATCH is FAILED (an
alert, a deliverability event, its accounts' sends deferred) until it verifies again. A check
that only met resolver errors changes no domain's status."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from models.infrastructure import Domain, DomainStatus, EmailAccount, SmtpIpAddress
from penguinmails.settings import Settings
from services.alerts import raise_alert, resolve_alerts
from services.deliverability_events import Event
from services.domains import published_records

SPF_LOOKUP_LIMIT = 10  # RFC 7208 4.6.4: DNS-querying terms, includes and redirects followed
SPF_QUERYING = ("include", "a", "mx", "ptr", "exists")
DMARC_POLICIES = ("none", "quarantine", "reject")
ALERT_KIND = "domain_unverified"


@dataclass
class Lookup:
    """What DNS answered for one name and type: the values as text, or why there are none."""

    values: list[str] = field(default_factory=list)
    error: str | None = None  # SERVFAIL or TIMEOUT: the resolver could not say


class Resolver:
    """Lookups through the configured nameservers, each bounded by the timeout, and at most
    `dns_max_in_flight` at once per process (a recheck of every domain must not flood the
    resolver). `in_flight` and `peak` count them."""

    _limits: dict[tuple[asyncio.AbstractEventLoop, int], asyncio.Semaphore] = {}
    in_flight = 0
    peak = 0

    def __init__(self, settings: Settings) -> None:
        loop, bound = asyncio.get_running_loop(), settings.dns_max_in_flight
        if (loop, bound) not in Resolver._limits:
            Resolver._limits = {k: v for k, v in Resolver._limits.items() if not k[0].is_closed()}
            Resolver._limits[loop, bound] = asyncio.Semaphore(bound)
        self._limit = Resolver._limits[loop, bound]
        servers = settings.dns_resolvers
        self._resolver = dns.asyncresolver.Resolver(configure=not servers)
        if servers:
            self._resolver.nameservers = [
                dns.nameserver.Do53Nameserver(host, port) for host, port in servers
            ]
        self._resolver.timeout = settings.dns_timeout_seconds
        self._resolver.lifetime = settings.dns_timeout_seconds

    async def lookup(self, name: str, type_: str) -> Lookup:
        async with self._limit:
            Resolver.in_flight += 1
            Resolver.peak = max(Resolver.peak, Resolver.in_flight)
            try:
                return await self._lookup(name, type_)
            finally:
                Resolver.in_flight -= 1

    async def _lookup(self, name: str, type_: str) -> Lookup:
        try:
            answer = await self._resolver.resolve(name, type_, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return Lookup()
        except dns.exception.Timeout:
            return Lookup(error="TIMEOUT")
        except (dns.resolver.NoNameservers, dns.resolver.NoAnswer, dns.resolver.YXDOMAIN):
            return Lookup(error="SERVFAIL")
        if answer.rrset is None:
            return Lookup()
        return Lookup([_text(rdata) for rdata in answer.rrset])


def _text(rdata: Any) -> str:
    if rdata.rdtype == dns.rdatatype.TXT:
        return b"".join(rdata.strings).decode("utf-8", "replace")
    if rdata.rdtype == dns.rdatatype.MX:
        return f"{rdata.preference} {rdata.exchange.to_text().lower()}"
    return rdata.to_text().lower()


# --- the checks: each takes what DNS answered and says what the record's status is ------------


@dataclass
class Verdict:
    status: str  # VERIFIED, MISMATCH, MISSING, PENDING
    observed: list[str]
    reason: str | None = None  # why it is a MISMATCH
    error: str | None = None  # SERVFAIL or TIMEOUT


async def check_spf(resolver: Resolver, name: str, include: str, ips: list[str]) -> Verdict:
    found = await resolver.lookup(name, "TXT")
    if not found.values:
        return _unanswered(found)
    spf = [v for v in found.values if _is_spf(v)]
    if not spf:
        return Verdict("MISSING", found.values)
    if len(spf) > 1:
        return Verdict("MISMATCH", spf, "more than one v=spf1 record (a receiver sees none)")
    try:
        terms = parse_spf(spf[0])
    except ValueError as error:
        return Verdict("MISMATCH", spf, str(error))
    if ("+", "all", None) in terms:
        return Verdict("MISMATCH", spf, "+all lets anyone send as the domain")
    ours = ("+", "include", include.lower()) in terms or any(
        _covers(argument, ip)
        for q, kind, argument in terms
        if q == "+" and kind in ("ip4", "ip6")
        for ip in ips
    )
    if not ours:
        return Verdict("MISMATCH", spf, f"it does not include {include}")
    lookups = await count_spf_lookups(resolver, terms, {name.lower()})
    if lookups > SPF_LOOKUP_LIMIT:
        return Verdict(
            "MISMATCH", spf, f"it needs more than {SPF_LOOKUP_LIMIT} DNS lookups ({lookups})"
        )
    return Verdict("VERIFIED", spf)


def _is_spf(value: str) -> bool:
    return value.lower() == "v=spf1" or value.lower().startswith("v=spf1 ")


_MECHANISM = re.compile(r"^([+\-~?]?)(all|include|a|mx|ptr|ip4|ip6|exists)(?::(.+))?$", re.I)
_MODIFIER = re.compile(r"^([a-z][a-z0-9_.\-]*)=(.*)$", re.I)


def parse_spf(record: str) -> list[tuple[str, str, str | None]]:
    """The terms of an SPF record as (qualifier, mechanism or modifier, argument); ValueError
    with the offending term."""
    terms: list[tuple[str, str, str | None]] = []
    for term in record.split()[1:]:
        if mechanism := _MECHANISM.match(term):
            qualifier, kind, argument = mechanism.groups()
            kind = kind.lower()
            if kind in ("include", "exists", "ip4", "ip6") and not argument:
                raise ValueError(f"{term!r} needs a value")
            if kind == "all" and argument:
                raise ValueError(f"{term!r}: all takes no value")
            terms.append((qualifier or "+", kind, argument.lower() if argument else None))
        elif modifier := _MODIFIER.match(term):
            terms.append(("", modifier.group(1).lower(), modifier.group(2).lower()))
        else:
            raise ValueError(f"{term!r} is not an SPF term")
    return terms


def _covers(network: str | None, ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(network or "", strict=False)
    except ValueError:
        return False


async def count_spf_lookups(
    resolver: Resolver, terms: list[tuple[str, str, str | None]], seen: set[str]
) -> int:
    """The DNS-querying terms of a record, with those of the records its includes and redirect
    name, counted until the limit is passed (a loop counts as over the limit)."""
    count = 0
    for _, kind, argument in terms:
        if kind not in (*SPF_QUERYING, "redirect"):
            continue
        count += 1
        if count > SPF_LOOKUP_LIMIT or kind not in ("include", "redirect") or not argument:
            continue
        if argument in seen:
            return SPF_LOOKUP_LIMIT + 1
        found = await resolver.lookup(argument, "TXT")
        nested = [v for v in found.values if _is_spf(v)]
        if len(nested) != 1:
            continue  # not ours to judge: the receiver's evaluation fails on that include
        try:
            inner = parse_spf(nested[0])
        except ValueError:
            continue
        count += await count_spf_lookups(resolver, inner, seen | {argument})
    return count


async def check_dkim(resolver: Resolver, host: str, public_key: str) -> Verdict:
    found = await resolver.lookup(host, "TXT")
    if not found.values:
        return _unanswered(found)
    for value in found.values:
        tags = _tags(value)
        if tags.get("p", "").replace(" ", "") == public_key:
            return Verdict("VERIFIED", found.values)
    return Verdict("MISMATCH", found.values, "no TXT record there holds the domain's public key")


async def check_dmarc(resolver: Resolver, domain: str) -> Verdict:
    """The DMARC record of the From domain, or of its organisational domain (here: the last two
    labels) when the domain has none, with a policy a receiver can apply."""
    candidates = [domain]
    labels = domain.split(".")
    if len(labels) > 2:
        candidates.append(".".join(labels[-2:]))
    for candidate in candidates:
        found = await resolver.lookup(f"_dmarc.{candidate}", "TXT")
        if found.error:
            return _unanswered(found)
        records = [v for v in found.values if v.replace(" ", "").upper().startswith("V=DMARC1")]
        if not records:
            continue
        if len(records) > 1:
            return Verdict("MISMATCH", records, "more than one v=DMARC1 record")
        tags = _tags(records[0])
        policy = tags.get("p", "").lower()
        if policy not in DMARC_POLICIES:
            return Verdict("MISMATCH", records, f"p= must be one of {', '.join(DMARC_POLICIES)}")
        for tag in ("adkim", "aspf"):
            if tags.get(tag, "r").lower() not in ("r", "s"):
                return Verdict("MISMATCH", records, f"{tag}= must be r or s")
        return Verdict("VERIFIED", records)
    return Verdict("MISSING", [])


async def check_mx(resolver: Resolver, domain: str, host: str) -> Verdict:
    found = await resolver.lookup(domain, "MX")
    if not found.values:
        return _unanswered(found)
    wanted = host.lower().rstrip(".") + "."
    if any(value.split()[-1] == wanted for value in found.values):
        return Verdict("VERIFIED", found.values)
    return Verdict("MISMATCH", found.values, f"no MX names {wanted}")


async def check_cname(resolver: Resolver, host: str, target: str) -> Verdict:
    found = await resolver.lookup(host, "CNAME")
    if not found.values:
        return _unanswered(found)
    if target.lower().rstrip(".") + "." in found.values:
        return Verdict("VERIFIED", found.values)
    return Verdict("MISMATCH", found.values, f"it should point at {target}")


def _tags(value: str) -> dict[str, str]:
    """`k=v; k=v` tags (DKIM, DMARC); the first of a repeated tag."""
    tags: dict[str, str] = {}
    for part in value.split(";"):
        key, sep, tag_value = part.partition("=")
        if sep:
            tags.setdefault(key.strip().lower(), tag_value.strip())
    return tags


def _unanswered(found: Lookup) -> Verdict:
    """No values: the resolver could not say (PENDING with the error), or nothing is there."""
    if found.error:
        return Verdict("PENDING", [], error=found.error)
    return Verdict("MISSING", [])


# --- a domain's check --------------------------------------------------------------------------


async def check_records(
    settings: Settings, resolver: Resolver, domain: Domain, sending_ips: list[str]
) -> list[dict[str, Any]]:
    """The records the domain should publish, each with its status and what DNS holds."""
    checks = {
        "spf": lambda r: check_spf(resolver, r["host"], settings.spf_include, sending_ips),
        "dkim": lambda r: check_dkim(resolver, r["host"], domain.dkim_public_key or ""),
        "dkim_next": lambda r: check_dkim(resolver, r["host"], domain.dkim_next_public_key or ""),
        "dkim_retiring": lambda r: check_dkim(
            resolver, r["host"], domain.dkim_retiring_public_key or ""
        ),
        "dmarc": lambda r: check_dmarc(resolver, domain.name),
        "mx": lambda r: check_mx(resolver, r["host"], domain.mx_host or settings.mx_host),
        "return_path": lambda r: check_cname(resolver, r["host"], r["value"]),
        "tracking": lambda r: check_cname(resolver, r["host"], r["value"]),
    }
    expected = published_records(settings, domain)
    verdicts = await asyncio.gather(*(checks[r["kind"]](r) for r in expected))
    return [
        {**record, "status": v.status, "observed": v.observed, "reason": v.reason, "error": v.error}
        for record, v in zip(expected, verdicts, strict=True)
    ]


# The records a domain's status depends on: a rotation's next and replaced keys are listed and
# checked, but neither makes the domain fail.
REQUIRED = ("spf", "dkim", "dmarc", "mx", "return_path", "tracking")


def domain_status(before: DomainStatus, records: list[dict[str, Any]]) -> DomainStatus:
    """VERIFIED when every record is. A domain that was verified and has a record MISSING or
    MISMATCH fails; resolver errors alone change nothing; one never verified stays PENDING."""
    statuses = {r["status"] for r in records if r["kind"] in REQUIRED}
    if statuses == {"VERIFIED"}:
        return DomainStatus.VERIFIED
    broken = bool(statuses & {"MISSING", "MISMATCH"})
    if before == DomainStatus.VERIFIED:
        return DomainStatus.FAILED if broken else DomainStatus.VERIFIED
    return before


@dataclass
class Verification:
    domain: Domain
    event: Event | None  # to publish once the transaction commits


async def verify(
    session: AsyncSession, settings: Settings, domain_id: uuid.UUID, *, now: datetime | None = None
) -> Verification | None:
    """Checks one domain's records, stores what was found, and acts on a change of status."""
    domain = await session.scalar(select(Domain).where(Domain.id == domain_id))
    if domain is None:
        return None
    ips = [
        str(address)
        for address in await session.scalars(
            select(SmtpIpAddress.address)
            .join(EmailAccount, EmailAccount.ip_id == SmtpIpAddress.id)
            .where(EmailAccount.domain_id == domain.id)
            .distinct()
        )
    ]
    records = await check_records(settings, Resolver(settings), domain, ips)
    now = now or datetime.now(UTC)
    if _rotate(settings, domain, records, now):
        records = _relabelled(settings, domain, records)
    before = domain.status
    domain.dns_records = records
    domain.last_checked_at = now
    domain.status = domain_status(before, records)
    if domain.status == DomainStatus.VERIFIED and before != DomainStatus.VERIFIED:
        domain.verified_at = now
    event = None
    if domain.status != before:
        event = await _status_changed(session, domain, records, now)
    await session.flush()
    return Verification(domain, event)


def _rotate(
    settings: Settings, domain: Domain, records: list[dict[str, Any]], now: datetime
) -> bool:
    """Moves a rotation on: the next key signs once its record verifies (the replaced one is
    kept published for `dkim_retire_days`), and a replaced key past that is retired."""
    moved = False
    if domain.dkim_retire_at is not None and now >= domain.dkim_retire_at:
        domain.dkim_retiring_selector = domain.dkim_retiring_public_key = None
        domain.dkim_retire_at = None
        moved = True
    if any(r["kind"] == "dkim_next" and r["status"] == "VERIFIED" for r in records):
        domain.dkim_retiring_selector = domain.dkim_selector
        domain.dkim_retiring_public_key = domain.dkim_public_key
        domain.dkim_retire_at = now + timedelta(days=settings.dkim_retire_days)
        domain.dkim_selector = domain.dkim_next_selector or domain.dkim_selector
        domain.dkim_public_key = domain.dkim_next_public_key
        domain.dkim_private_key_encrypted = domain.dkim_next_private_key_encrypted
        domain.encryption_key_id = domain.dkim_next_encryption_key_id
        domain.dkim_next_selector = domain.dkim_next_public_key = None
        domain.dkim_next_private_key_encrypted = domain.dkim_next_encryption_key_id = None
        moved = True
    return moved


def _relabelled(
    settings: Settings, domain: Domain, checked: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The records after a rotation moved on, each with what its host's check found."""
    found = {(r["host"], r["type"], r["value"]): r for r in checked}
    return [
        {**found.get((r["host"], r["type"], r["value"]), r), "kind": r["kind"]}
        for r in published_records(settings, domain)
    ]


async def _status_changed(
    session: AsyncSession, domain: Domain, records: list[dict[str, Any]], now: datetime
) -> Event:
    """A domain that fails: an alert, and its accounts show why their sends wait (sending
    defers them while the domain is FAILED). One that verifies again: both cleared."""
    failing = f"its domain {domain.name} stopped verifying"
    if domain.status == DomainStatus.FAILED:
        broken = [
            r for r in records if r["kind"] in REQUIRED and r["status"] in ("MISSING", "MISMATCH")
        ]
        what = ", ".join(f"{r['kind']} {r['status']}" for r in broken)
        raise_alert(
            session, domain.tenant_id, ALERT_KIND, domain.name,
            f"{domain.name} stopped verifying ({what}): its accounts' sends wait",
            {"records": [{k: r[k] for k in ("kind", "status", "observed", "reason")}
                         for r in broken]},
        )  # fmt: skip
        await session.execute(  # an account paused for a reason of its own keeps that one
            update(EmailAccount)
            .where(EmailAccount.domain_id == domain.id, EmailAccount.status_reason.is_(None))
            .values(status_reason=f"{failing} ({what})")
        )
        return Event(domain.tenant_id, "domain_failed", "Domain", domain.id,
                     f"{domain.name} stopped verifying ({what})", now)  # fmt: skip
    await resolve_alerts(session, domain.tenant_id, ALERT_KIND, domain.name, now)
    await session.execute(
        update(EmailAccount)
        .where(EmailAccount.domain_id == domain.id, EmailAccount.status_reason.startswith(failing))
        .values(status_reason=None)
    )
    return Event(domain.tenant_id, "domain_verified", "Domain", domain.id,
                 f"{domain.name} is verified", now)  # fmt: skip
