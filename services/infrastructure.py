"""VPS instances and sending IPs: requesting a VPS, acquiring an IP for it, and the providers
that supply them (a local one for development; Hostwinds later)."""

from __future__ import annotations

import ipaddress
import random
import re
import uuid
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from jobs.queue import enqueue
from models.infrastructure import IpStatus, SmtpIpAddress, VpsInstance, VpsStatus
from services import plans
from services.errors import DomainError

# A VPS in these states takes no new IPs and does not count against the plan.
GONE = (VpsStatus.FAILED, VpsStatus.DECOMMISSIONED)
NOT_USABLE = (*GONE, VpsStatus.SUSPENDED)
# Provider-neutral region slugs ("dallas", "ams-1"); the provider says at provisioning whether
# it serves the region.
REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
# Addresses tried before giving up; each one taken by some tenant already costs one attempt.
ALLOCATION_ATTEMPTS = 20


class Provider(Protocol):
    """Where VPS instances and their IPs come from."""

    name: str

    async def allocate_ip(self, vps: VpsInstance) -> str:
        """An address for `vps`. It may turn out to be taken already; the caller asks again."""
        ...


class LocalProvider:
    """Development and tests: addresses from the benchmarking range (RFC 2544), never routed."""

    name = "local"
    network = ipaddress.ip_network("198.18.0.0/15")

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()

    async def allocate_ip(self, vps: VpsInstance) -> str:
        # Random rather than the next free one: other tenants' addresses are invisible (RLS).
        offset = self.rng.randrange(1, self.network.num_addresses - 1)
        return str(self.network[offset])


PROVIDERS: dict[str, Provider] = {LocalProvider.name: LocalProvider()}


async def request_vps(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    region: str | None = None,
    *,
    provider: Provider | None = None,
) -> VpsInstance:
    """Record a VPS request and queue its provisioning.

    A VPS exists to carry sending IPs, so the plan's IP limit caps the VPS instances in use too
    (a plan without IPs has none).
    """
    provider = provider or PROVIDERS[LocalProvider.name]
    region = _region(region)
    await plans.lock_usage(session, tenant_id, "ips")
    in_use = await session.scalar(
        select(func.count())
        .select_from(VpsInstance)
        .where(VpsInstance.tenant_id == tenant_id, VpsInstance.status.not_in(GONE))
    )
    await plans.check_limit(session, tenant_id, "ips", in_use or 0)

    vps = VpsInstance(
        tenant_id=tenant_id, provider=provider.name, region=region, status=VpsStatus.REQUESTED
    )
    session.add(vps)
    await session.flush()
    await enqueue(
        session,
        "provision_vps",
        {"vps_id": str(vps.id)},
        tenant_id=tenant_id,
        idempotency_key=f"provision_vps:{vps.id}",
    )
    return vps


async def acquire_ip(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    vps_id: uuid.UUID,
    *,
    provider: Provider | None = None,
) -> SmtpIpAddress:
    """Allocate a sending IP on the tenant's VPS (status PENDING) and queue its configuration."""
    vps = await session.scalar(
        select(VpsInstance).where(VpsInstance.id == vps_id, VpsInstance.tenant_id == tenant_id)
    )
    if vps is None:
        raise DomainError("NOT_FOUND", "No such VPS.", "vpsId")
    if vps.status in NOT_USABLE:
        raise DomainError(
            "VPS_NOT_USABLE",
            f"The VPS is {vps.status.value.lower()}: it takes no new IPs.",
            "vpsId",
        )
    provider = provider or PROVIDERS[vps.provider]

    await plans.lock_usage(session, tenant_id, "ips")
    held = await session.scalar(
        select(func.count())
        .select_from(SmtpIpAddress)
        .where(SmtpIpAddress.tenant_id == tenant_id, SmtpIpAddress.status != IpStatus.RELEASED)
    )
    await plans.check_limit(session, tenant_id, "ips", held or 0)

    ip = await _insert_free_address(session, tenant_id, vps, provider)
    await enqueue(
        session,
        "configure_ip",
        {"ip_id": str(ip.id)},
        tenant_id=tenant_id,
        idempotency_key=f"configure_ip:{ip.id}",
    )
    return ip


async def _insert_free_address(
    session: AsyncSession, tenant_id: uuid.UUID, vps: VpsInstance, provider: Provider
) -> SmtpIpAddress:
    """Addresses are unique across all tenants, most of which this session cannot see: ON
    CONFLICT DO NOTHING tells a taken address apart without an error that would abort the
    transaction (no savepoint needed), and the provider is asked for another."""
    for _ in range(ALLOCATION_ATTEMPTS):
        address = await provider.allocate_ip(vps)
        ip = await session.scalar(
            insert(SmtpIpAddress)
            .values(tenant_id=tenant_id, vps_id=vps.id, address=address, status=IpStatus.PENDING)
            .on_conflict_do_nothing(index_elements=[SmtpIpAddress.address])
            .returning(SmtpIpAddress)
        )
        if ip is not None:
            return ip
    raise DomainError("NO_IP_AVAILABLE", "No free IP address could be allocated; try again later.")


def _region(raw: str | None) -> str | None:
    if raw is None or not raw.strip():
        return None  # the provider's default
    region = raw.strip().lower()
    if not REGION.fullmatch(region):
        raise DomainError(
            "REGION_INVALID",
            "A region is up to 64 lowercase letters, digits and hyphens, like 'dallas'.",
            "region",
        )
    return region
