"""Recipient domains: where each one's mail goes (its MX hosts, or its own address when it has no
MX), looked up through the configured resolvers and kept in Redis, and the mailbox provider
behind it (gmail, outlook, yahoo or other), which the per-provider send limits are keyed by."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from redis.asyncio import Redis

from penguinmails.settings import Settings
from services.dns import Resolver

# Domains looked up together: one cache read, one gather and one cache write each. Bounds the
# tasks held at once (a million-row import may name hundreds of thousands of domains).
CHUNK_DOMAINS = 20_000

# A mail host's own domain or a parent of it -> the provider (protection.outlook.com, Microsoft
# 365's inbound, is under outlook.com).
PROVIDERS = {
    "google.com": "gmail",
    "googlemail.com": "gmail",
    "outlook.com": "outlook",
    "hotmail.com": "outlook",
    "yahoodns.net": "yahoo",
    "yahoo.com": "yahoo",
}


@dataclass(frozen=True)
class MailDomain:
    """A domain's mail hosts, most preferred first. No host: the domain accepts no mail (no MX
    and no address, or a null MX), unless `error` says the resolver could not answer, which is
    never taken as no mail."""

    hosts: tuple[str, ...] = ()
    error: str | None = None  # SERVFAIL or TIMEOUT

    @property
    def accepts_no_mail(self) -> bool:
        return not self.hosts and self.error is None


async def mail_hosts(
    resolver: Resolver, redis: Redis, domains: Iterable[str], ttl_seconds: int
) -> dict[str, MailDomain]:
    """Each domain's mail hosts, by the domain as given. The distinct names (lowercased, without
    a trailing dot) are read from Redis in one round trip (per CHUNK_DOMAINS); the others are
    looked up at once (the resolver bounds the queries in flight), and what DNS answered is kept
    for `ttl_seconds` in one more."""
    names = {domain: domain.lower().rstrip(".") for domain in domains}
    distinct = list(dict.fromkeys(names.values()))
    found: dict[str, MailDomain] = {}
    for start in range(0, len(distinct), CHUNK_DOMAINS):
        found |= await _mail_hosts(
            resolver, redis, distinct[start : start + CHUNK_DOMAINS], ttl_seconds
        )
    return {domain: found[name] for domain, name in names.items()}


async def _mail_hosts(
    resolver: Resolver, redis: Redis, names: list[str], ttl_seconds: int
) -> dict[str, MailDomain]:
    keys = [_key(name) for name in names]
    found = {
        name: MailDomain(tuple(cached.decode().split()))
        for name, cached in zip(names, await redis.mget(keys), strict=True)
        if cached is not None
    }
    missing = [name for name in names if name not in found]
    looked_up = await asyncio.gather(*(_resolve(resolver, name) for name in missing))
    resolved = dict(zip(missing, looked_up, strict=True))
    answered = {name: d for name, d in resolved.items() if d.error is None}  # failures: not kept
    if answered:
        async with redis.pipeline(transaction=False) as pipe:
            for name, mail_domain in answered.items():
                pipe.set(_key(name), " ".join(mail_domain.hosts), ex=ttl_seconds)
            await pipe.execute()
    return found | resolved


async def _resolve(resolver: Resolver, name: str) -> MailDomain:
    mx = await resolver.lookup(name, "MX")
    if mx.error:
        return MailDomain(error=mx.error)
    if mx.values:
        ranked = sorted((int(preference), host) for preference, host in map(str.split, mx.values))
        # A null MX (RFC 7505: `0 .`) names no host: the domain says it accepts no mail.
        return MailDomain(tuple(host.rstrip(".") for _, host in ranked if host != "."))
    # No MX: the domain's own address is its mail host (RFC 5321 5.1, the implicit MX).
    a, aaaa = await asyncio.gather(resolver.lookup(name, "A"), resolver.lookup(name, "AAAA"))
    if a.values or aaaa.values:
        return MailDomain((name,))
    return MailDomain(error=a.error or aaaa.error)


def _key(name: str) -> str:
    # Redis keys never embed what a client sent: the domain comes from a lead's address.
    return f"recipient_domain:{hashlib.sha256(name.encode()).hexdigest()}"


def provider(mail_domain: MailDomain) -> str:
    """gmail, outlook, yahoo or other, by the most preferred mail host; a domain without one
    (no mail, or unknown) is other."""
    if not mail_domain.hosts:
        return "other"
    labels = mail_domain.hosts[0].split(".")
    for start in range(len(labels) - 1):
        if found := PROVIDERS.get(".".join(labels[start:])):
            return found
    return "other"


async def providers(settings: Settings, redis: Redis, domains: Iterable[str]) -> dict[str, str]:
    """The provider of each recipient domain, by the domain as given: one Redis round trip when
    every domain is cached; the others are looked up and kept."""
    hosts = await mail_hosts(
        Resolver(settings), redis, domains, settings.recipient_domain_cache_seconds
    )
    return {domain: provider(found) for domain, found in hosts.items()}
