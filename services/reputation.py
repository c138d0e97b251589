"""DNS blocklist (DNSBL) monitoring: every sending IP that is not RELEASED and every domain is
looked up in each zone of `PENGUINMAILS_DNSBL_ZONES` every `PENGUINMAILS_DNSBL_CHECK_SECONDS`.

An IP is asked as its reversed octets under the zone (192.0.2.10 → 10.2.0.192.<zone>), a domain
as itself (<domain>.<zone>). An answer in 127.0.0.2–127.0.0.99 (the IP lists) or 127.0.1.2–
127.0.1.255 (Spamhaus DBL's domain range) is a listing, with the zone's meaning where known.
127.255.255.x is the list refusing the query (a public resolver, a rate limit): "check
unavailable", never a listing. So is a resolver's SERVFAIL or timeout. A zone that could not be
checked keeps what it said last time.

Each IP's reverse DNS is checked on the same round: its PTR name must resolve back to the address
(forward-confirmed) and be the HELO name its server uses; otherwise an alert.

A listed IP is BLACKLISTED: its accounts' sends wait (services/sending.py), an alert is raised
and a deliverability event published; delisted, it is ACTIVE again, the alert resolved. A listed
domain gets the alert and the event."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models.infrastructure import Domain, IpStatus, SmtpIpAddress
from penguinmails.settings import Settings
from services.alerts import raise_alert, resolve_alerts
from services.deliverability_events import Event
from services.dns import Resolver

log = logging.getLogger("penguinmails.reputation")
PTR_ALERT = "ptr_mismatch"  # and <ip|domain>_blacklisted (_relisted)
# What the answers mean, for the lists whose codes are published (others: "listed").
MEANINGS = {
    "127.0.0.2": "spam source (SBL)", "127.0.0.3": "snowshoe spam (CSS)",
    "127.0.0.4": "exploited or infected (XBL)", "127.0.0.9": "hijacked network (DROP)",
    "127.0.0.10": "dynamic address, not for direct mail (PBL)",
    "127.0.0.11": "dynamic address, not for direct mail (PBL)",
    "127.0.1.2": "spam domain (DBL)", "127.0.1.4": "phishing domain (DBL)",
    "127.0.1.5": "malware domain (DBL)", "127.0.1.6": "botnet C&C domain (DBL)",
}  # fmt: skip


@dataclass
class Answer:
    """What one zone said about one subject."""

    listed: bool = False
    meaning: str = ""
    unavailable: str | None = None  # why the zone could not say


@dataclass
class Outcome:
    listed: dict[str, str] = field(default_factory=dict)  # zone -> meaning
    unavailable: dict[str, str] = field(default_factory=dict)  # zone -> why


def zones(settings: Settings) -> list[str]:
    return [z.strip().lower().strip(".") for z in settings.dnsbl_zones.split(",") if z.strip()]


def query_name(subject: str, zone: str) -> str:
    """The name asked: an IP's reversed octets (nibbles for IPv6), or a domain, under the zone."""
    try:
        address = ipaddress.ip_address(subject)
    except ValueError:
        return f"{subject}.{zone}"
    labels = address.reverse_pointer.split(".")[:-2]  # without in-addr.arpa / ip6.arpa
    return ".".join([*labels, zone])


def read(values: list[str], error: str | None) -> Answer:
    if error:
        return Answer(unavailable=f"resolver {error}")
    if not values:
        return Answer()  # NXDOMAIN: not listed
    listings = []
    for value in values:
        if value.startswith("127.255.255."):
            return Answer(unavailable=f"the list refused the query ({value})")
        octets = value.split(".")
        if len(octets) == 4 and octets[:2] == ["127", "0"] and octets[2] in ("0", "1"):
            last = int(octets[3])
            if (octets[2] == "0" and 2 <= last <= 99) or (octets[2] == "1" and last >= 2):
                listings.append(MEANINGS.get(value, f"listed ({value})"))
                continue
        return Answer(unavailable=f"an answer that is not a listing ({value})")
    return Answer(listed=True, meaning="; ".join(listings))


async def check(resolver: Resolver, subject: str, zone_names: list[str]) -> Outcome:
    async def one(zone: str) -> tuple[str, Answer]:
        found = await resolver.lookup(query_name(subject, zone), "A")  # in-flight bounded
        return zone, read(found.values, found.error)

    outcome = Outcome()
    for zone, answer in await asyncio.gather(*(one(z) for z in zone_names)):
        if answer.unavailable:
            log.info(
                "blocklist check of %s on %s unavailable: %s", subject, zone, answer.unavailable
            )
            outcome.unavailable[zone] = answer.unavailable
        elif answer.listed:
            outcome.listed[zone] = answer.meaning
    return outcome


async def check_ptr(resolver: Resolver, address: str, helo: str | None) -> tuple[str, str | None]:
    """(status, the PTR name seen): VERIFIED when the address's PTR name resolves back to it
    (forward-confirmed) and is the HELO name its server uses (when one is set)."""
    reverse = await resolver.lookup(ipaddress.ip_address(address).reverse_pointer, "PTR")
    if reverse.error:
        return "PENDING", None
    if not reverse.values:
        return "MISSING", None
    name = reverse.values[0].rstrip(".")
    forward = await resolver.lookup(name, "AAAA" if ":" in address else "A")
    if forward.error:
        return "PENDING", name
    confirmed = str(ipaddress.ip_address(address)) in forward.values
    matches_helo = helo is None or name == helo.lower().rstrip(".")
    return ("VERIFIED" if confirmed and matches_helo else "MISMATCH"), name


def listings(before: list[str], outcome: Outcome) -> list[str]:
    """The zones listing the subject now: those that said so, and those that could not be
    asked and listed it last time."""
    kept = [z for z in before if z in outcome.unavailable]
    return sorted({*outcome.listed, *kept})


async def check_all(session: AsyncSession, settings: Settings, now: datetime | None = None):
    """Every IP not RELEASED and every domain, on a system session; the events to publish once
    committed."""
    now = now or datetime.now(UTC)
    zone_names = zones(settings)
    resolver = Resolver(settings)
    ips = list(
        await session.scalars(
            select(SmtpIpAddress).where(SmtpIpAddress.status != IpStatus.RELEASED)
        )
    )
    domains = list(await session.scalars(select(Domain)))
    ip_checks = asyncio.gather(*(check(resolver, str(ip.address), zone_names) for ip in ips))
    ptr_checks = asyncio.gather(
        *(check_ptr(resolver, str(ip.address), ip.ptr_hostname) for ip in ips)
    )
    domain_checks = asyncio.gather(*(check(resolver, d.name, zone_names) for d in domains))
    listed, ptrs, domains_listed = await asyncio.gather(ip_checks, ptr_checks, domain_checks)
    events: list[Event] = []
    for ip, outcome, ptr in zip(ips, listed, ptrs, strict=True):
        events += await _apply_ip(session, ip, outcome, now)
        events += await _apply_ptr(session, ip, *ptr, now)
    for domain, outcome in zip(domains, domains_listed, strict=True):
        events += await _apply_domain(session, domain, outcome, now)
    await session.flush()
    return events


async def _apply_ip(session, ip: SmtpIpAddress, outcome: Outcome, now: datetime) -> list[Event]:
    """A listed IP is BLACKLISTED (sending holds its sends); delisted, ACTIVE again."""
    ip.last_checked_at = now
    listed, events = await _relisted(
        session, outcome, now, ip.tenant_id, "ip", "SendingIp", ip.id, str(ip.address),
        before=list(ip.blacklisted_on), consequence="its sends",
    )  # fmt: skip
    ip.blacklisted_on = listed
    if events:
        ip.status = IpStatus.BLACKLISTED if listed else IpStatus.ACTIVE
    return events


async def _apply_ptr(
    session, ip: SmtpIpAddress, status: str, name: str | None, now: datetime
) -> list[Event]:
    """A PTR that stops verifying raises an alert (once) for an IP in use (one being set up has
    none yet); one that verifies resolves it."""
    before = ip.ptr_status
    if status == "PENDING":  # the resolver could not say: nothing changes
        return []
    ip.ptr, ip.ptr_status = name, status
    address = str(ip.address)
    in_use = ip.ptr_hostname is not None or ip.status in (IpStatus.ACTIVE, IpStatus.WARMING_UP)
    if status != "VERIFIED" and before != status and in_use:
        expected = f" and name {ip.ptr_hostname}" if ip.ptr_hostname else ""
        message = (f"the reverse DNS of {address} is {status} (seen: {name or 'none'}): it must "
                   f"resolve back to the address{expected}")  # fmt: skip
        raise_alert(session, ip.tenant_id, PTR_ALERT, address, message)
        return [Event(ip.tenant_id, "ptr_mismatch", "SendingIp", ip.id, message, now)]
    if status == "VERIFIED" and before in ("MISMATCH", "MISSING"):
        await resolve_alerts(session, ip.tenant_id, PTR_ALERT, address, now)
        return [Event(ip.tenant_id, "ptr_verified", "SendingIp", ip.id,
                      f"the reverse DNS of {address} is verified", now)]  # fmt: skip
    return []


async def _apply_domain(session, domain: Domain, outcome: Outcome, now: datetime) -> list[Event]:
    listed, events = await _relisted(
        session, outcome, now, domain.tenant_id, "domain", "Domain", domain.id, domain.name,
        before=list(domain.blacklisted_on),
    )  # fmt: skip
    domain.blacklisted_on = listed
    return events


async def _relisted(
    session,
    outcome: Outcome,
    now: datetime,
    tenant_id: uuid.UUID,
    kind: str,
    subject_type: str,
    subject_id: uuid.UUID,
    name: str,
    *,
    before: list[str],
    consequence: str | None = None,
) -> tuple[list[str], list[Event]]:
    """The zones listing a subject after this check, and what changed: listed (an alert and a
    `<kind>_listed` event) or delisted (the alert resolved, `<kind>_delisted`). A change of
    zones while still listed is no event."""
    listed = listings(before, outcome)
    alert = f"{kind}_blacklisted"
    if bool(listed) == bool(before):
        return listed, []
    if listed:
        held = f": {consequence} are paused" if consequence else ""
        message = f"{name} is listed on {_describe(listed, outcome)}{held}"
        raise_alert(session, tenant_id, alert, name, message)
        return listed, [Event(tenant_id, f"{kind}_listed", subject_type, subject_id, message, now)]
    await resolve_alerts(session, tenant_id, alert, name, now)
    resumed = f": {consequence} resume" if consequence else ""
    message = f"{name} is no longer listed{resumed}"
    return listed, [Event(tenant_id, f"{kind}_delisted", subject_type, subject_id, message, now)]


def _describe(listed: list[str], outcome: Outcome) -> str:
    return ", ".join(f"{z} ({outcome.listed[z]})" if z in outcome.listed else z for z in listed)
