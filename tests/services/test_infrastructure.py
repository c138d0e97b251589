"""VPS instances and sending IPs: requests, plan limits and address allocation."""

from __future__ import annotations

import ipaddress
import itertools
import random
import uuid

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert

from models.billing import Plan
from models.infrastructure import IpStatus, SmtpIpAddress, VpsInstance, VpsStatus
from models.queue import Job
from models.sessions import Database
from models.tenancy import Tenant
from services import infrastructure
from services.errors import DomainError
from services.infrastructure import LocalProvider, acquire_ip, request_vps
from tests.factories import create_tenant

BENCHMARKING = ipaddress.ip_network("198.18.0.0/15")


async def _tenant_on_plan(db: Database, *, ips: int = 2) -> uuid.UUID:
    async with db.system_session() as s:
        tenant = await create_tenant(s)
        plan = Plan(
            code=f"test-{tenant.hex[:12]}", name="Test", price_cents=0, emails_per_month=1000,
            max_domains=10, max_ips=ips, max_email_accounts=10, max_seats=1,
        )  # fmt: skip
        s.add(plan)
        await s.flush()
        await s.execute(update(Tenant).where(Tenant.id == tenant).values(plan_id=plan.id))
    return tenant


async def _vps(db: Database, tenant: uuid.UUID, status: VpsStatus = VpsStatus.ACTIVE) -> uuid.UUID:
    async with db.system_session() as s:
        vps = VpsInstance(tenant_id=tenant, provider="local", status=status)
        s.add(vps)
        await s.flush()
    return vps.id


async def _request(db: Database, tenant: uuid.UUID, region: str | None = None) -> VpsInstance:
    async with db.tenant_session(tenant) as s:
        return await request_vps(s, tenant_id=tenant, region=region)


async def _acquire(
    db: Database, tenant: uuid.UUID, vps_id: uuid.UUID, provider=None
) -> SmtpIpAddress:
    async with db.tenant_session(tenant) as s:
        return await acquire_ip(s, tenant_id=tenant, vps_id=vps_id, provider=provider)


async def _jobs(db: Database, tenant: uuid.UUID, kind: str) -> list[dict]:
    async with db.tenant_session(tenant) as s:
        return [job.payload for job in await s.scalars(select(Job).where(Job.kind == kind))]


class FixedPool:
    """A provider offering the same few addresses over and over (documentation range)."""

    name = "local"

    def __init__(self, addresses: list[str]) -> None:
        self.offers = itertools.cycle(addresses)
        self.calls = 0

    async def allocate_ip(self, vps: VpsInstance) -> str:
        self.calls += 1
        return next(self.offers)


async def test_requesting_a_vps_records_it_and_queues_its_provisioning(db: Database):
    tenant = await _tenant_on_plan(db)

    vps = await _request(db, tenant, region=" Dallas ")

    async with db.tenant_session(tenant) as s:
        stored = await s.get_one(VpsInstance, vps.id)
    assert (stored.provider, stored.region, stored.status) == ("local", "dallas", "REQUESTED")
    assert await _jobs(db, tenant, "provision_vps") == [{"vps_id": str(vps.id)}]


async def test_a_vps_requested_without_a_region_leaves_it_to_the_provider(db: Database):
    tenant = await _tenant_on_plan(db)

    vps = await _request(db, tenant, region=None)

    assert vps.region is None


@pytest.mark.parametrize("region", ["new york", "dallas/1", "-dallas", "x" * 65])
async def test_a_malformed_region_is_refused(db: Database, region: str):
    tenant = await _tenant_on_plan(db)

    with pytest.raises(DomainError) as raised:
        await _request(db, tenant, region=region)

    assert (raised.value.code, raised.value.field) == ("REGION_INVALID", "region")


async def test_a_plan_without_sending_ips_cannot_have_a_vps(db: Database):
    tenant = await _tenant_on_plan(db, ips=0)

    with pytest.raises(DomainError) as raised:
        await _request(db, tenant)

    assert raised.value.code == "PLAN_LIMIT_IPS"
    assert "Test plan includes no sending IPs" in raised.value.message
    assert await _jobs(db, tenant, "provision_vps") == []


async def test_vps_instances_in_use_are_capped_by_the_ip_limit_and_gone_ones_do_not_count(
    db: Database,
):
    tenant = await _tenant_on_plan(db, ips=1)
    first = await _request(db, tenant)
    with pytest.raises(DomainError) as raised:
        await _request(db, tenant)
    async with db.system_session() as s:
        await s.execute(
            update(VpsInstance)
            .where(VpsInstance.id == first.id)
            .values(status=VpsStatus.DECOMMISSIONED)
        )

    second = await _request(db, tenant)

    assert raised.value.code == "PLAN_LIMIT_IPS"
    assert second.id != first.id


async def test_acquiring_an_ip_allocates_a_pending_address_and_queues_its_configuration(
    db: Database,
):
    tenant = await _tenant_on_plan(db)
    vps_id = await _vps(db, tenant)

    ip = await _acquire(db, tenant, vps_id)  # the VPS's own provider: local

    async with db.tenant_session(tenant) as s:
        stored = await s.get_one(SmtpIpAddress, ip.id)
    assert ipaddress.ip_address(stored.address) in BENCHMARKING
    assert (stored.status, stored.vps_id) == (IpStatus.PENDING, vps_id)
    assert await _jobs(db, tenant, "configure_ip") == [{"ip_id": str(ip.id)}]


async def test_acquiring_an_ip_on_another_tenants_vps_is_refused_as_not_found(db: Database):
    owner = await _tenant_on_plan(db)
    vps_id = await _vps(db, owner)
    other = await _tenant_on_plan(db)

    with pytest.raises(DomainError) as raised:
        await _acquire(db, other, vps_id)

    assert (raised.value.code, raised.value.field) == ("NOT_FOUND", "vpsId")


@pytest.mark.parametrize(
    "status", [VpsStatus.FAILED, VpsStatus.DECOMMISSIONED, VpsStatus.SUSPENDED]
)
async def test_a_vps_that_failed_or_is_gone_or_suspended_takes_no_new_ip(
    db: Database, status: VpsStatus
):
    tenant = await _tenant_on_plan(db)
    vps_id = await _vps(db, tenant, status)

    with pytest.raises(DomainError) as raised:
        await _acquire(db, tenant, vps_id)

    assert (raised.value.code, raised.value.field) == ("VPS_NOT_USABLE", "vpsId")


async def test_the_ip_limit_counts_every_ip_the_tenant_holds_but_released_ones(db: Database):
    tenant = await _tenant_on_plan(db, ips=2)
    vps_id = await _vps(db, tenant)
    first = await _acquire(db, tenant, vps_id)
    await _acquire(db, tenant, vps_id)
    with pytest.raises(DomainError) as raised:
        await _acquire(db, tenant, vps_id)
    async with db.tenant_session(tenant) as s:
        await s.execute(
            update(SmtpIpAddress)
            .where(SmtpIpAddress.id == first.id)
            .values(status=IpStatus.RELEASED)
        )

    third = await _acquire(db, tenant, vps_id)

    assert raised.value.code == "PLAN_LIMIT_IPS"
    assert "Test plan allows 2 sending IPs" in raised.value.message
    assert third.status == IpStatus.PENDING


async def test_an_address_another_tenant_holds_is_skipped(db: Database):
    first_offer = str(BENCHMARKING[random.Random(42).randrange(1, BENCHMARKING.num_addresses - 1)])
    holder = await _tenant_on_plan(db)
    async with db.system_session() as s:
        await s.execute(
            insert(SmtpIpAddress)
            .values(tenant_id=holder, address=first_offer)
            .on_conflict_do_nothing()
        )
    tenant = await _tenant_on_plan(db)
    vps_id = await _vps(db, tenant)

    ip = await _acquire(db, tenant, vps_id, LocalProvider(random.Random(42)))

    assert str(ip.address) != first_offer
    assert ipaddress.ip_address(ip.address) in BENCHMARKING


async def test_addresses_are_never_shared_between_tenants_and_running_out_is_an_error(
    db: Database,
):
    pool = FixedPool(["203.0.113.1", "203.0.113.2", "203.0.113.3"])
    a, b = await _tenant_on_plan(db, ips=5), await _tenant_on_plan(db, ips=5)
    vps_a, vps_b = await _vps(db, a), await _vps(db, b)

    held = [
        await _acquire(db, a, vps_a, pool),
        await _acquire(db, b, vps_b, pool),
        await _acquire(db, a, vps_a, pool),
    ]
    pool.calls = 0
    async with db.tenant_session(b) as s:
        with pytest.raises(DomainError) as raised:
            await acquire_ip(s, tenant_id=b, vps_id=vps_b, provider=pool)
        # The failed attempts did not abort the transaction.
        still_held = await s.scalar(select(func.count()).select_from(SmtpIpAddress))

    assert sorted(str(ip.address) for ip in held) == ["203.0.113.1", "203.0.113.2", "203.0.113.3"]
    assert raised.value.code == "NO_IP_AVAILABLE"
    assert pool.calls == infrastructure.ALLOCATION_ATTEMPTS
    assert still_held == 1
