"""VPS instances and sending IPs: requests, plan limits, buying and releasing IPs, and how a
step's failure is recorded, retried, ends the VPS FAILED and is resumed by hand."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from redis.asyncio import Redis
from sqlalchemy import select, update

from jobs.registry import PermanentJobError
from models.billing import Plan, Subscription, SubscriptionStatus
from models.infrastructure import (
    AccountStatus,
    EmailAccount,
    IpStatus,
    SmtpIpAddress,
    VpsInstance,
    VpsStatus,
)
from models.operations import Alert
from models.queue import Job
from models.sessions import Database
from models.tenancy import Tenant
from penguinmails.settings import Settings
from services import accounts, billing, domains, provisioning
from services.errors import DomainError
from services.hosting import LocalProvider
from tests.dns_server import DnsServer
from tests.factories import create_tenant
from tests.imap import free_port
from tests.provisioning import queued_job, run_job, run_step, status_of
from tests.smtp import Sink
from tests.ssh_server import Failure, ssh_server


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


async def _request(db: Database, settings: Settings, tenant: uuid.UUID, region=None):
    async with db.tenant_session(tenant) as s:
        return await provisioning.request_vps(s, settings, tenant, region)


async def _acquire(db: Database, settings: Settings, tenant: uuid.UUID, vps_id: uuid.UUID):
    async with db.tenant_session(tenant) as s:
        return await provisioning.acquire_ip(s, settings, tenant, vps_id)


async def _provisioned(
    db: Database, settings: Settings, redis: Redis, tenant: uuid.UUID
) -> VpsInstance:
    """A VPS whose instance exists (CONFIGURING_SMTP), with the local provider."""
    vps = await _request(db, settings, tenant)
    assert await run_step(db, settings, redis, tenant, vps.id) == VpsStatus.CONFIGURING_SMTP
    return await status_of(db, tenant, vps.id)


async def _jobs(db: Database, tenant: uuid.UUID, kind: str) -> list[dict]:
    async with db.tenant_session(tenant) as s:
        return [job.payload for job in await s.scalars(select(Job).where(Job.kind == kind))]


async def _set_status(db: Database, vps_id: uuid.UUID, status: VpsStatus) -> None:
    async with db.system_session() as s:
        await s.execute(update(VpsInstance).where(VpsInstance.id == vps_id).values(status=status))


async def test_requesting_a_vps_records_it_and_queues_its_first_step(
    db: Database, settings: Settings
):
    tenant = await _tenant_on_plan(db)

    vps = await _request(db, settings, tenant, region=" Local ")

    async with db.tenant_session(tenant) as s:
        stored = await s.get_one(VpsInstance, vps.id)
    assert (stored.provider, stored.region, stored.status) == ("local", "local", "REQUESTED")
    assert await _jobs(db, tenant, "provision_vps") == [
        {"vps_id": str(vps.id), "step": "PROVISIONING"}
    ]


@pytest.mark.parametrize("region", ["new york", "dallas/1", "x" * 65])
async def test_a_region_the_provider_does_not_serve_is_refused(
    db: Database, settings: Settings, region: str
):
    tenant = await _tenant_on_plan(db)

    with pytest.raises(DomainError) as raised:
        await _request(db, settings, tenant, region=region)

    assert (raised.value.code, raised.value.field) == ("REGION_UNKNOWN", "region")
    assert await _jobs(db, tenant, "provision_vps") == []


async def test_a_plan_without_sending_ips_cannot_have_a_vps(db: Database, settings: Settings):
    tenant = await _tenant_on_plan(db, ips=0)

    with pytest.raises(DomainError) as raised:
        await _request(db, settings, tenant)

    assert raised.value.code == "PLAN_LIMIT_IPS"
    assert "Test plan includes no sending IPs" in raised.value.message
    assert await _jobs(db, tenant, "provision_vps") == []


async def test_vps_instances_in_use_are_capped_by_the_ip_limit_and_gone_ones_do_not_count(
    db: Database, settings: Settings
):
    tenant = await _tenant_on_plan(db, ips=1)
    first = await _request(db, settings, tenant)
    with pytest.raises(DomainError) as raised:
        await _request(db, settings, tenant)
    await _set_status(db, first.id, VpsStatus.DECOMMISSIONED)

    second = await _request(db, settings, tenant)

    assert raised.value.code == "PLAN_LIMIT_IPS"
    assert second.id != first.id


async def test_an_ip_is_bought_for_a_vps_whose_server_exists_and_its_configuration_queued(
    db: Database, settings: Settings, redis: Redis
):
    tenant = await _tenant_on_plan(db, ips=3)
    vps = await _provisioned(db, settings, redis, tenant)

    ip = await _acquire(db, settings, tenant, vps.id)

    listed = await LocalProvider(settings).list_ips(vps.provider_id)
    assert listed == [str(vps.primary_ip), str(ip.address)]
    assert (ip.status, ip.vps_id) == (IpStatus.PENDING, vps.id)
    assert ip.ptr_hostname == provisioning.helo_name(settings, str(ip.address))
    assert await _jobs(db, tenant, "configure_ip") == [{"vps_id": str(vps.id), "ip_id": str(ip.id)}]


async def test_an_ip_on_another_tenants_vps_is_refused_as_not_found(
    db: Database, settings: Settings, redis: Redis
):
    vps = await _provisioned(db, settings, redis, await _tenant_on_plan(db))
    other = await _tenant_on_plan(db)

    with pytest.raises(DomainError) as raised:
        await _acquire(db, settings, other, vps.id)

    assert (raised.value.code, raised.value.field) == ("NOT_FOUND", "vpsId")


@pytest.mark.parametrize(
    "status", [VpsStatus.FAILED, VpsStatus.DECOMMISSIONED, VpsStatus.SUSPENDED]
)
async def test_a_vps_that_failed_or_is_gone_or_suspended_takes_no_new_ip(
    db: Database, settings: Settings, redis: Redis, status: VpsStatus
):
    tenant = await _tenant_on_plan(db)
    vps = await _provisioned(db, settings, redis, tenant)
    await _set_status(db, vps.id, status)

    with pytest.raises(DomainError) as raised:
        await _acquire(db, settings, tenant, vps.id)

    assert (raised.value.code, raised.value.field) == ("VPS_NOT_READY", "vpsId")


async def test_the_ip_limit_counts_every_ip_held_the_vps_address_too_but_not_released_ones(
    db: Database, settings: Settings, redis: Redis
):
    tenant = await _tenant_on_plan(db, ips=2)
    vps = await _provisioned(db, settings, redis, tenant)  # its own address is the first
    second = await _acquire(db, settings, tenant, vps.id)
    with pytest.raises(DomainError) as raised:
        await _acquire(db, settings, tenant, vps.id)
    async with db.tenant_session(tenant) as s:
        await provisioning.release_ip(s, settings, tenant, second.id)

    third = await _acquire(db, settings, tenant, vps.id)

    assert raised.value.code == "PLAN_LIMIT_IPS"
    assert "Test plan allows 2 sending IPs" in raised.value.message
    assert third.status == IpStatus.PENDING


async def test_releasing_an_ip_moves_its_accounts_to_the_vps_address_and_gives_it_back(
    db: Database, settings: Settings, redis: Redis
):
    tenant = await _tenant_on_plan(db, ips=3)
    vps = await _provisioned(db, settings, redis, tenant)
    ip = await _acquire(db, settings, tenant, vps.id)
    async with db.tenant_session(tenant) as s:
        domain = await domains.add_domain(s, settings, tenant, f"r{tenant.hex[:8]}.example")
        account = await accounts.create_email_account(s, settings, tenant, domain.id, "a")
        account.ip_id = ip.id
        primary = await s.scalar(
            select(SmtpIpAddress).where(SmtpIpAddress.address == str(vps.primary_ip))
        )
    async with db.tenant_session(tenant) as s:
        with pytest.raises(DomainError) as own:
            await provisioning.release_ip(s, settings, tenant, primary.id)
        released = await provisioning.release_ip(s, settings, tenant, ip.id)
    job = await queued_job(db, tenant, provisioning.RELEASE_KIND, ip_id=str(ip.id))

    assert await run_job(db, settings, redis, job) is None

    assert own.value.code == "IP_IS_PRIMARY"
    assert released.status == IpStatus.RELEASED
    async with db.tenant_session(tenant) as s:
        assert (await s.get_one(EmailAccount, account.id)).ip_id == primary.id
    assert await LocalProvider(settings).list_ips(vps.provider_id) == [str(vps.primary_ip)]


async def test_a_step_that_fails_is_retried_then_fails_the_vps_which_resumes_from_that_step(
    db: Database, settings: Settings, redis: Redis, tmp_path: Path
):
    tenant = await _tenant_on_plan(db)
    vps = await _provisioned(db, settings, redis, tenant)
    async with ssh_server(tmp_path) as ssh:
        target = ssh.target()
        deploying = settings.model_copy(
            update={
                "local_hosting_ssh": f"127.0.0.1:{target.port}",
                "vps_ssh_key": target.client_key,
                "vps_ssh_user": target.username,
            }
        )
        ssh.compose_failure = Failure(1, "Error response from daemon: pull access denied")
        job = await queued_job(
            db, tenant, provisioning.KIND, vps_id=str(vps.id), step="CONFIGURING_SMTP"
        )

        first = await run_job(db, deploying, redis, job, attempt=1)
        waiting = await status_of(db, tenant, vps.id)
        last = await run_job(db, deploying, redis, job, attempt=job.max_attempts)
        failed = await status_of(db, tenant, vps.id)

        assert first is not None and not isinstance(first, PermanentJobError)  # retried
        assert waiting.status == VpsStatus.CONFIGURING_SMTP
        assert "pull access denied" in (waiting.failure_reason or "")
        assert isinstance(last, PermanentJobError)
        assert (failed.status, failed.failed_step) == (VpsStatus.FAILED, "CONFIGURING_SMTP")
        assert "pull access denied" in (failed.failure_reason or "")

        ssh.compose_failure = None
        async with db.tenant_session(tenant) as s:
            resumed, _ = await provisioning.retry(s, deploying, tenant, vps.id)
            with pytest.raises(DomainError) as again:
                await provisioning.retry(s, deploying, tenant, vps.id)
        assert (resumed.status, resumed.failed_step, resumed.failure_reason) == (
            VpsStatus.CONFIGURING_SMTP, None, None,
        )  # fmt: skip
        assert again.value.code == "NOT_FAILED"
    # The step's new job runs it again (here with nothing to deploy to) and it moves on.
    assert await run_step(db, settings, redis, tenant, vps.id) == VpsStatus.CONFIGURING_DNS


async def test_dns_that_never_verifies_fails_the_vps_with_what_did_not_verify(
    db: Database, settings: Settings, redis: Redis, dns_server: DnsServer
):
    tenant = await _tenant_on_plan(db)
    async with db.tenant_session(tenant) as s:
        domain = await domains.add_domain(s, settings, tenant, f"n{tenant.hex[:8]}.example")
        await accounts.create_email_account(s, settings, tenant, domain.id, "a")
    # Published to zone files the DNS server asked does not serve: nothing ever verifies.
    unserved = settings.model_copy(
        update={
            "dns_nameservers": dns_server.nameservers,
            "dns_timeout_seconds": 1.0,
            "provisioning_dns_wait_seconds": 0.5,
            "provisioning_poll_seconds": 0.1,
        }
    )
    vps = await _provisioned(db, unserved, redis, tenant)
    assert await run_step(db, unserved, redis, tenant, vps.id) == VpsStatus.CONFIGURING_DNS
    job = await queued_job(
        db, tenant, provisioning.KIND, vps_id=str(vps.id), step="CONFIGURING_DNS"
    )

    waited = await run_job(db, unserved, redis, job)
    reason_while_waiting = (await status_of(db, tenant, vps.id)).failure_reason
    await asyncio.sleep(0.6)
    ended = await run_job(db, unserved, redis, job)
    failed = await status_of(db, tenant, vps.id)

    assert type(waited).__name__ == "DeferJob"
    assert reason_while_waiting.startswith(f"waiting for DNS: {domain.name} (")
    assert isinstance(ended, PermanentJobError)
    assert (failed.status, failed.failed_step) == (VpsStatus.FAILED, "CONFIGURING_DNS")
    assert failed.failure_reason.startswith("DNS did not verify: ")
    assert "mx MISSING" in failed.failure_reason and "PTR of" in failed.failure_reason


async def test_an_unreachable_vps_pauses_its_accounts_with_an_alert_until_it_answers_again(
    db: Database, settings: Settings
):
    tenant = await _tenant_on_plan(db)
    port = free_port()
    name = f"vps-{tenant.hex[:12]}.mta.example.test"
    async with db.tenant_session(tenant) as s:
        vps = VpsInstance(
            tenant_id=tenant, provider="local", status=VpsStatus.ACTIVE, hostname=name,
            smtp_host="127.0.0.1", smtp_port=port,
        )  # fmt: skip
        s.add(vps)
        await s.flush()
        ip = SmtpIpAddress(
            tenant_id=tenant, vps_id=vps.id, address=f"198.18.{port % 250}.{port % 199 + 1}",
            status=IpStatus.ACTIVE,
        )  # fmt: skip
        s.add(ip)
        await s.flush()
        domain = await domains.add_domain(s, settings, tenant, f"h{tenant.hex[:8]}.example")
        account = await accounts.create_email_account(s, settings, tenant, domain.id, "a")
        account.ip_id, account.status = ip.id, AccountStatus.WARMING_UP
        guarded = await accounts.create_email_account(s, settings, tenant, domain.id, "b")
        guarded.ip_id, guarded.status = ip.id, AccountStatus.PAUSED
        guarded.status_reason = "complaints 0.4 % (guard)"

    once, once_events = await provisioning.check_health(db, settings)
    async with db.tenant_session(tenant) as s:
        after_one = (await s.get_one(EmailAccount, account.id)).status
    down, down_events = await provisioning.check_health(db, settings)
    still, still_events = await provisioning.check_health(db, settings)
    async with db.tenant_session(tenant) as s:
        paused = await s.get_one(EmailAccount, account.id)
        raised = list(await s.scalars(select(Alert).where(Alert.kind == "vps_unreachable")))
    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        up, up_events = await provisioning.check_health(db, settings)
    finally:
        controller.stop()
    async with db.tenant_session(tenant) as s:
        resumed = await s.get_one(EmailAccount, account.id)
        untouched = await s.get_one(EmailAccount, guarded.id)
        alert = await s.get_one(Alert, raised[0].id)

    assert once[f"vps {name}"].startswith("ConnectionRefusedError")
    assert after_one == "WARMING_UP" and [e for e in once_events if e.tenant_id == tenant] == []
    assert down[f"vps {name}"].startswith("ConnectionRefusedError")
    assert (paused.status, paused.status_reason.split(" (")[0]) == (
        "PAUSED", f"its server {name} is unreachable",
    )  # fmt: skip
    assert [(a.subject, a.resolved_at) for a in raised] == [(name, None)]
    assert [e.kind for e in down_events if e.tenant_id == tenant] == ["vps_unreachable"]
    assert still[f"vps {name}"] != "ok" and [e for e in still_events if e.tenant_id == tenant] == []
    assert up[f"vps {name}"] == "ok"
    assert (resumed.status, resumed.status_reason) == ("WARMING_UP", None)  # as it was
    assert (untouched.status, untouched.status_reason) == ("PAUSED", "complaints 0.4 % (guard)")
    assert alert.resolved_at is not None
    assert [e.kind for e in up_events if e.tenant_id == tenant] == ["vps_reachable"]


async def test_a_suspended_tenants_servers_are_suspended_and_come_back_where_they_were(
    db: Database, settings: Settings
):
    tenant = await _tenant_on_plan(db)
    async with db.system_session() as s:
        plan_id = await s.scalar(select(Tenant.plan_id).where(Tenant.id == tenant))
        subscription = Subscription(tenant_id=tenant, plan_id=plan_id, status="ACTIVE")
        s.add(subscription)
        active = VpsInstance(tenant_id=tenant, provider="local", status=VpsStatus.ACTIVE)
        warming = VpsInstance(tenant_id=tenant, provider="local", status=VpsStatus.WARMING_UP)
        s.add_all([active, warming])
    async with db.system_session() as s:
        held = await s.get_one(Subscription, subscription.id)
        await billing.set_status(s, held, SubscriptionStatus.SUSPENDED, reason="payment overdue")
        suspended_events = billing.take_events(s)
    suspended = [await status_of(db, tenant, v.id) for v in (active, warming)]
    async with db.system_session() as s:
        held = await s.get_one(Subscription, subscription.id)
        await billing.set_status(s, held, SubscriptionStatus.ACTIVE, reason="payment received")
        restored_events = billing.take_events(s)
    restored = [await status_of(db, tenant, v.id) for v in (active, warming)]

    assert [v.status for v in suspended] == [VpsStatus.SUSPENDED] * 2
    assert [v.status for v in restored] == [VpsStatus.ACTIVE, VpsStatus.WARMING_UP]
    assert sorted(e.kind for e in suspended_events if e.subject_type == "VpsInstance") == [
        "vps_suspended", "vps_suspended",
    ]  # fmt: skip
    assert sorted(e.kind for e in restored_events if e.subject_type == "VpsInstance") == [
        "vps_active", "vps_warming_up",
    ]  # fmt: skip
    # The warm-up step's job ended while the server was suspended: it is queued again.
    assert await queued_job(
        db, tenant, provisioning.KIND, vps_id=str(warming.id), step="WARMING_UP"
    )


async def test_a_vps_whose_step_job_died_can_be_resumed_and_one_whose_job_lives_cannot(
    db: Database, settings: Settings, redis: Redis
):
    tenant = await _tenant_on_plan(db)
    vps = await _provisioned(db, settings, redis, tenant)
    async with db.tenant_session(tenant) as s:
        with pytest.raises(DomainError) as alive:
            await provisioning.retry(s, settings, tenant, vps.id)
    job = await queued_job(db, tenant, provisioning.KIND, vps_id=str(vps.id))
    async with db.system_session("queue") as s:  # its worker died on its last attempt
        await s.execute(update(Job).where(Job.id == job.id).values(status="dead"))

    async with db.tenant_session(tenant) as s:
        resumed, _ = await provisioning.retry(s, settings, tenant, vps.id)

    assert alive.value.code == "NOT_FAILED"
    assert (resumed.status, resumed.retries) == (VpsStatus.CONFIGURING_SMTP, 1)
    again = await queued_job(db, tenant, provisioning.KIND, vps_id=str(vps.id))
    assert again.id != job.id and again.payload["step"] == "CONFIGURING_SMTP"
