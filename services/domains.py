"""Sending domains: adding one (its DKIM key and the DNS records to publish) and queueing its
verification."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import uuid
from datetime import UTC, datetime, timedelta
from itertools import chain, count
from typing import Any

import idna
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from email_validator import SPECIAL_USE_DOMAIN_NAMES
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from jobs.queue import enqueue, enqueue_per_tenant
from models.infrastructure import Domain
from penguinmails.settings import Settings
from services import plans, secrets
from services.errors import DomainError

DKIM_KEY_BITS = 2048
MAX_NAME_LENGTH = 253
MAX_LABEL_LENGTH = 63
# A click on "verify" reuses the pending job for at most this long (see _verification_key).
VERIFY_WINDOW_SECONDS = 600
VERIFY_KIND = "verify_domain"
VERIFY_PRIORITY = 50  # someone is waiting for the answer: the high tier
RECHECK_PRIORITY = 200  # the scheduled re-checks: the low tier


async def add_domain(
    session: AsyncSession, settings: Settings, tenant_id: uuid.UUID, name: str
) -> Domain:
    """Add a sending domain with a new DKIM key; its `dns_records` are what to publish."""
    name = normalise_name(name)
    await plans.lock_usage(session, tenant_id, "domains")
    existing = await session.scalar(
        select(Domain.id).where(Domain.tenant_id == tenant_id, Domain.name == name)
    )
    if existing is not None:
        raise DomainError("DOMAIN_EXISTS", f"{name} has been added already.", "name")
    count = await session.scalar(
        select(func.count()).select_from(Domain).where(Domain.tenant_id == tenant_id)
    )
    await plans.check_limit(session, tenant_id, "domains", count or 0)

    public_key, key_id, encrypted = await _new_dkim_key(settings)
    domain = Domain(
        tenant_id=tenant_id,
        name=name,
        dkim_selector=settings.dkim_selector,
        dkim_algorithm="rsa",
        dkim_public_key=public_key,
        dkim_private_key_encrypted=encrypted,
        encryption_key_id=key_id,
        dns_records=dns_records(settings, name, settings.dkim_selector, public_key),
    )
    session.add(domain)
    await session.flush()
    await _queue_verification(session, domain, datetime.now(UTC))
    return domain


async def verify_domain(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    domain_id: uuid.UUID,
    *,
    now: datetime | None = None,
) -> Domain:
    """Queue a check of the domain's records; the result arrives later on the domain."""
    domain = await session.scalar(
        select(Domain).where(Domain.id == domain_id, Domain.tenant_id == tenant_id)
    )
    if domain is None:
        raise DomainError("NOT_FOUND", "No such domain.", "id")
    await _queue_verification(session, domain, now or datetime.now(UTC))
    return domain


async def _queue_verification(session: AsyncSession, domain: Domain, now: datetime) -> None:
    await enqueue(
        session,
        VERIFY_KIND,
        {"domain_id": str(domain.id)},
        tenant_id=domain.tenant_id,
        priority=VERIFY_PRIORITY,
        idempotency_key=_verification_key(domain, now),
    )


async def queue_rechecks(
    session: AsyncSession, settings: Settings, now: datetime | None = None
) -> int:
    """A verification for every domain not checked for `dns_recheck_seconds` (system session)."""
    now = now or datetime.now(UTC)
    due = now - timedelta(seconds=settings.dns_recheck_seconds)
    rows = await session.execute(
        select(Domain.id, Domain.tenant_id).where(
            or_(Domain.last_checked_at.is_(None), Domain.last_checked_at < due)
        )
    )
    window = int(now.timestamp() // settings.dns_recheck_seconds)
    return await enqueue_per_tenant(
        session, VERIFY_KIND,
        ((tenant, {"domain_id": str(d)}, f"{VERIFY_KIND}:{d}:recheck:{window}") for d, tenant in rows),
        priority=RECHECK_PRIORITY,
    )  # fmt: skip


def dkim_private_key(settings: Settings, domain: Domain) -> bytes | None:
    """The domain's DKIM private key (PKCS#1 PEM, as dkimpy signs with), or None for a domain
    that has none (one not added through add_domain)."""
    if domain.dkim_private_key_encrypted is None or domain.encryption_key_id is None:
        return None
    return secrets.decrypt(settings, domain.encryption_key_id, domain.dkim_private_key_encrypted)


def normalise_name(raw: str) -> str:
    """The domain in its ASCII (punycode), lowercase form, or DOMAIN_INVALID."""
    candidate = raw.strip().removesuffix(".")  # a fully qualified "example.com." is the same
    if not candidate or len(candidate) > 4 * MAX_NAME_LENGTH:  # bound the work on nonsense
        raise _invalid(raw, "it is empty or far too long")
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        pass
    else:
        raise _invalid(raw, "an IP address is not a domain")
    try:
        # UTS-46 maps case and compatibility forms; STD3 rules allow letters, digits, hyphens.
        name = idna.encode(candidate, uts46=True, std3_rules=True).decode("ascii")
    except idna.IDNAError as e:
        raise _invalid(raw, str(e)) from e
    labels = name.split(".")
    if len(labels) < 2:
        raise _invalid(raw, "it needs at least two labels, like example.com")
    if len(name) > MAX_NAME_LENGTH:
        raise _invalid(raw, f"it is longer than {MAX_NAME_LENGTH} characters")
    if any(len(label) > MAX_LABEL_LENGTH for label in labels):
        raise _invalid(raw, f"a label is longer than {MAX_LABEL_LENGTH} characters")
    if labels[-1].isdigit():  # RFC 3696: no all-numeric top-level domain
        raise _invalid(raw, "the top-level domain is all digits")
    if labels[-1] in SPECIAL_USE_DOMAIN_NAMES:  # what e-mail addresses cannot use either
        raise _invalid(raw, f".{labels[-1]} is a special-use name that cannot receive mail")
    return name


def dns_records(
    settings: Settings,
    name: str,
    selector: str,
    public_key: str,
    *,
    mx_host: str | None = None,
    spf_ips: list[str] | None = None,
) -> list[dict[str, Any]]:
    """What the tenant publishes. Hosts are fully qualified, without the trailing dot. The DKIM
    value is one logical string: DNS splits it into 255-byte strings, a check joins them. Once
    the domain's accounts send from a VPS of the tenant's, its SPF names the VPS's addresses
    and its MX is the VPS (`spf_ips`, `mx_host`)."""
    addresses = " ".join(f"ip{6 if ':' in ip else 4}:{ip}" for ip in spf_ips or [])
    spf = f"v=spf1 {addresses + ' ' if addresses else ''}include:{settings.spf_include} ~all"
    mx = (mx_host or settings.mx_host).rstrip(".")
    return [
        _record("spf", name, "TXT", spf),
        _record("dkim", f"{selector}._domainkey.{name}", "TXT", f"v=DKIM1; k=rsa; p={public_key}"),
        _record("dmarc", f"_dmarc.{name}", "TXT", f"v=DMARC1; p=none; rua=mailto:dmarc@{name}"),
        # Replies, bounces and complaint reports to the domain reach the platform's inbound host
        # (or the VPS's MailU, which the account's IMAP poll reads).
        _record("mx", name, "MX", f"{settings.mx_preference} {mx}."),
        # The CNAME also answers the return path's MX and SPF lookups with the platform's.
        _record(
            "return_path",
            f"{settings.return_path_label}.{name}",
            "CNAME",
            settings.return_path_host,
        ),
        _record("tracking", f"{settings.tracking_label}.{name}", "CNAME", settings.tracking_host),
    ]


def published_records(settings: Settings, domain: Domain) -> list[dict[str, Any]]:
    """What the domain should publish now: its records, and during a rotation the next key's
    record (`dkim_next`) or the replaced key's, until it is retired (`dkim_retiring`)."""
    records = dns_records(
        settings, domain.name, domain.dkim_selector, domain.dkim_public_key or "",
        mx_host=domain.mx_host, spf_ips=list(domain.spf_ips or []),
    )  # fmt: skip
    for kind, selector, key in (
        ("dkim_next", domain.dkim_next_selector, domain.dkim_next_public_key),
        ("dkim_retiring", domain.dkim_retiring_selector, domain.dkim_retiring_public_key),
    ):
        if selector and key:
            host = f"{selector}._domainkey.{domain.name}"
            records.append(_record(kind, host, "TXT", f"v=DKIM1; k=rsa; p={key}"))
    return records


async def rotate_dkim_key(
    session: AsyncSession,
    settings: Settings,
    tenant_id: uuid.UUID,
    domain_id: uuid.UUID,
    now: datetime | None = None,
) -> Domain:
    """A new DKIM key under a new selector. The current key goes on signing until the new
    record verifies (services/dns.py switches then); a rotation already waiting is replaced."""
    now = now or datetime.now(UTC)
    domain = await session.scalar(
        select(Domain).where(Domain.id == domain_id, Domain.tenant_id == tenant_id)
    )
    if domain is None:
        raise DomainError("NOT_FOUND", "No such domain.", "domainId")
    public_key, key_id, encrypted = await _new_dkim_key(settings)
    taken = {domain.dkim_selector, domain.dkim_next_selector, domain.dkim_retiring_selector}
    base = f"{settings.dkim_selector}{now:%Y%m%d}"
    candidates = chain([base], (f"{base}-{n}" for n in count(2)))
    selector = next(s for s in candidates if s not in taken)
    domain.dkim_next_selector = selector
    domain.dkim_next_public_key = public_key
    domain.dkim_next_private_key_encrypted = encrypted
    domain.dkim_next_encryption_key_id = key_id
    domain.dns_records = [
        *[r for r in domain.dns_records if r["kind"] != "dkim_next"],
        *[r for r in published_records(settings, domain) if r["kind"] == "dkim_next"],
    ]
    await session.flush()
    await _queue_verification(session, domain, now)
    return domain


def _record(kind: str, host: str, type_: str, value: str) -> dict[str, Any]:
    return dict(kind=kind, host=host, type=type_, value=value, status="PENDING", observed=[])


async def _new_dkim_key(settings: Settings) -> tuple[str, str, bytes]:
    """A new key: (public key for the p= tag, encryption key id, private key encrypted)."""
    # RSA key generation takes a noticeable fraction of a second: keep the event loop free.
    private_pem, public_key = await asyncio.to_thread(_generate_dkim_key)
    key_id, encrypted = secrets.encrypt(settings, private_pem)
    return public_key, key_id, encrypted


def _generate_dkim_key() -> tuple[bytes, str]:
    """(private key as PKCS#1 PEM, public key as base64 DER SubjectPublicKeyInfo: the p= tag)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=DKIM_KEY_BITS)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, base64.b64encode(public_der).decode("ascii")


def _verification_key(domain: Domain, now: datetime) -> str:
    """Clicks while a check is pending reuse its job. The check records last_checked_at, so a
    click after it finished starts a new one; the time window bounds how long a job that died
    without checking keeps answering clicks."""
    checked = domain.last_checked_at.isoformat() if domain.last_checked_at else "never"
    window = int(now.timestamp()) // VERIFY_WINDOW_SECONDS
    return f"verify_domain:{domain.id}:{checked}:{window}"


def _invalid(raw: str, reason: str) -> DomainError:
    shown = raw if len(raw) <= 80 else raw[:77] + "..."
    return DomainError("DOMAIN_INVALID", f"{shown!r} is not a valid domain: {reason}.", "name")
