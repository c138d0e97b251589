"""The send rate limits, nested: tenant → sending domain → sending IP (or the relay) → email
account → recipient provider. Each is a sliding window of sends per minute in Redis
(services/ratelimit.py); a send takes a slot in all of its windows or in none, and a batch's
sends take theirs in one Redis call. The recipient-provider window is per sending IP and
provider (gmail, outlook, yahoo, other: services/recipients.py), as the providers count mail
per connecting IP.

A throttled domain or IP (services/guards.py) sends at THROTTLED_SHARE of every limit. A send
that finds one of its windows full is deferred (DeferJob) until it has room."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from redis.asyncio import Redis

from jobs.registry import DeferJob
from models.infrastructure import Domain, Guard, SmtpIpAddress
from penguinmails.settings import Settings
from services import ratelimit, recipients, smtp

log = logging.getLogger("penguinmails.send_limits")

WINDOW_SECONDS = 60
THROTTLED_SHARE = 0.5
# A batch waits this long for the providers of recipient domains it has not seen before; the
# lookups go on after it, and are kept for the next batches (those sends count as "other").
PROVIDER_WAIT_SECONDS = 0.5
_lookups: set[asyncio.Task] = set()  # lookups still running after their batch moved on


@dataclass(frozen=True)
class Route:
    """Whose windows one send takes a slot in: its tenant, sending domain, IP (see ip_key) and
    account, its recipient's domain (for the provider), and its share of the limits."""

    tenant: uuid.UUID
    domain: uuid.UUID
    ip_key: str
    account: uuid.UUID
    recipient_domain: str
    share: float = 1.0


async def take_slots(
    settings: Settings, redis: Redis, routes: list[Route]
) -> list[DeferJob | None]:
    """A slot in each of its windows for each send, in one Redis call; for a send that gets none
    (it takes no slot then), the DeferJob that waits until its windows have room."""
    if not routes:
        return []
    found = await providers(settings, redis, {r.recipient_domain for r in routes})
    waits = await ratelimit.acquire_many(
        redis,
        [
            windows(
                settings, tenant=r.tenant, domain=r.domain, ip_key=r.ip_key, account=r.account,
                provider=found.get(r.recipient_domain, "other"), share=r.share,
            )
            for r in routes
        ],
        WINDOW_SECONDS,
    )  # fmt: skip
    return [DeferJob(wait, "send rate full") if wait else None for wait in waits]


def share(domain: Domain, ip: SmtpIpAddress | None) -> float:
    """The share of every limit a send from this domain and IP has: less while either one is
    throttled."""
    return THROTTLED_SHARE if Guard.THROTTLED in (domain.guard, ip.guard if ip else None) else 1.0


def windows(
    settings: Settings,
    *,
    tenant: uuid.UUID,
    domain: uuid.UUID,
    ip_key: str,
    account: uuid.UUID,
    provider: str,
    share: float = 1.0,
) -> list[tuple[str, int]]:
    """The (key, sends per minute) windows one send takes a slot in."""
    provider_limit = settings.provider_sends_per_minute.get(
        provider, settings.provider_sends_per_minute.get("other", settings.ip_sends_per_minute)
    )
    levels = [
        (f"rate:tenant:{tenant}", settings.tenant_sends_per_minute),
        (f"rate:domain:{domain}", settings.domain_sends_per_minute),
        (f"rate:ip:{ip_key}", settings.ip_sends_per_minute),
        (f"rate:account:{account}", settings.account_sends_per_minute),
        (f"rate:provider:{ip_key}:{provider}", provider_limit),
    ]
    return [(key, _share(limit, share)) for key, limit in levels]


def ip_key(server: smtp.Server, ip: SmtpIpAddress | None) -> str:
    """Whose IP windows a send takes: its sending IP's, or (without one) its relay's."""
    return str(ip.address) if ip else f"relay:{server.host}:{server.port}"


def _share(limit: int, share: float) -> int:
    """A share of a limit, at least one send a window."""
    return max(1, int(limit * share)) if share < 1 else limit


async def providers(settings: Settings, redis: Redis, domains: Iterable[str]) -> dict[str, str]:
    """The provider of each recipient domain: from Redis when known (one round trip); a domain
    not looked up yet is waited for up to PROVIDER_WAIT_SECONDS, then counted as "other" while
    its lookup finishes in the background."""
    lookup = asyncio.ensure_future(recipients.providers(settings, redis, domains))
    try:
        return await asyncio.wait_for(asyncio.shield(lookup), PROVIDER_WAIT_SECONDS)
    except TimeoutError:
        _lookups.add(lookup)
        lookup.add_done_callback(_finished)
        return {}


def _finished(lookup: asyncio.Task) -> None:
    _lookups.discard(lookup)
    if not lookup.cancelled() and lookup.exception() is not None:
        log.warning("recipient providers could not be looked up", exc_info=lookup.exception())
