"""A tenant's own VPS, end to end with the local provider: its instance on a loopback address,
MailU configured and deployed over SSH (a real asyncssh server), its accounts created through
MailU's admin API (a stand-in), its records published to zone files that a real DNS server
answers from and verified through it, its warm-up ramp on a compressed clock, then ACTIVE; a
campaign sent through its own server (STARTTLS, AUTH, the IP's HELO name), DKIM-verified; and
decommissioned, with its IPs and records gone."""

from __future__ import annotations

import email
import uuid
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path

import dkim
import dns.resolver
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy import select, update

from jobs.registry import DeferJob, PermanentJobError
from models.billing import Plan
from models.infrastructure import (
    AccountStatus,
    Domain,
    EmailAccount,
    IpStatus,
    SmtpIpAddress,
    VpsStatus,
    WarmupState,
)
from models.queue import Job
from models.sessions import Database
from models.tenancy import AuditLog, Tenant
from penguinmails.settings import Settings
from services import (
    accounts,
    campaigns,
    domains,
    leads,
    planning,
    provisioning,
    replies,
    sending,
    warmup,
)
from services.dns import Resolver
from services.errors import DomainError
from services.hosting import HostingError, LocalProvider
from tests.dns_server import DnsServer
from tests.factories import create_tenant
from tests.hostwinds_server import API_KEY, running_hostwinds
from tests.imap import free_port, running_dovecot
from tests.mailu_server import running_mailu
from tests.provisioning import queued_job, run_job, run_step, status_of
from tests.ssh_server import ssh_server
from tests.vps_server import running_submission

VPS_COST, IP_COST = 1099, 400


@pytest.fixture
async def infra(settings: Settings, dns_server: DnsServer, tmp_path: Path):
    """Settings for a local provider with an SSH server and a MailU admin API, DNS published to
    this test's zone files and resolved through the loopback DNS server; and the stand-ins."""
    zones = tmp_path / "zones"
    dns_server.zone.serve_files(zones)
    async with ssh_server(tmp_path / "ssh") as ssh, running_mailu() as (mailu_url, mailu):
        # MailU's admin API answers to the token in the mailu.env deployed to its VPS.
        mailu.token = lambda: _env(ssh.files.get("/opt/mailu/mailu.env", "")).get("API_TOKEN")
        target = ssh.target()
        configured = settings.model_copy(
            update={
                "hosting_provider": "local",
                "local_hosting_ssh": f"127.0.0.1:{target.port}",
                "local_hosting_admin_url": f"{mailu_url}/api/v1",
                "local_hosting_vps_monthly_cost_cents": VPS_COST,
                "local_hosting_ip_monthly_cost_cents": IP_COST,
                "vps_ssh_key": target.client_key,
                "vps_ssh_user": target.username,
                "vps_submission_port": free_port(),
                "vps_smtp_ready_seconds": 5.0,
                "dns_provider": "zonefile",
                "dns_zone_dir": zones,
                "dns_nameservers": dns_server.nameservers,
                "dns_timeout_seconds": 1.0,
                "provisioning_poll_seconds": 0.1,
            }
        )
        yield configured, ssh, mailu
    dns_server.zone.stop_serving_files(zones)


async def _bought_since(settings: Settings, before: dict[str, int]) -> dict[str, int]:
    now = await LocalProvider(settings).purchases()
    return {kind: now[kind] - before[kind] for kind in now}


def _env(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


async def _tenant_with_account(
    db: Database, settings: Settings
) -> tuple[uuid.UUID, Domain, EmailAccount]:
    async with db.system_session() as s:
        tenant = await create_tenant(s, "Own servers")
        plan = await s.scalar(select(Plan.id).where(Plan.code == "scale"))
        await s.execute(update(Tenant).where(Tenant.id == tenant).values(plan_id=plan))
    async with db.tenant_session(tenant) as s:
        domain = await domains.add_domain(s, settings, tenant, f"own-{tenant.hex[:8]}.example")
        account = await accounts.create_email_account(s, settings, tenant, domain.id, "rep", "Rep")
    return tenant, domain, account


async def test_a_vps_is_provisioned_to_active_sends_through_its_own_server_and_is_decommissioned(
    db: Database, infra, redis: Redis, tmp_path: Path
) -> None:
    settings, ssh, mailu = infra
    tenant, domain, account = await _tenant_with_account(db, settings)

    bought = await LocalProvider(settings).purchases()  # the session's, before this test

    # Requested: the plan allows it, the provider's default region, the first step queued.
    async with db.tenant_session(tenant) as s:
        vps = await provisioning.request_vps(s, settings, tenant, None)
    assert (vps.status, vps.region, vps.monthly_cost_cents) == ("REQUESTED", "local", VPS_COST)

    # PROVISIONING: an instance at the provider, its address recorded as the first IP.
    assert await run_step(db, settings, redis, tenant, vps.id) == VpsStatus.CONFIGURING_SMTP
    vps = await status_of(db, tenant, vps.id)
    primary = str(vps.primary_ip)
    assert vps.provider_id and primary.startswith("127.77.")
    assert await _bought_since(settings, bought) == {"instances": 1, "ips": 0}

    # A second IP, bought once the server exists; the first one costs nothing extra.
    async with db.tenant_session(tenant) as s:
        extra = await provisioning.acquire_ip(s, settings, tenant, vps.id)
    secondary = str(extra.address)
    assert extra.monthly_cost_cents == IP_COST

    # The VPS's MailU: submission (STARTTLS, AUTH) and its mailboxes (a real IMAP server).
    with (
        running_dovecot(host=primary) as mailboxes,
        running_submission(primary, settings.vps_submission_port, tmp_path, mailu.can_log_in)
        as (submission, ca),
    ):  # fmt: skip
        settings = settings.model_copy(
            update={
                "vps_tls_ca_file": ca, "vps_imap_port": mailboxes.port,
                "imap_allow_plaintext": True,  # the stand-in's IMAP has no TLS
            }
        )  # fmt: skip

        # CONFIGURING_SMTP: MailU rendered, uploaded and started; the account created on it.
        assert await run_step(db, settings, redis, tenant, vps.id) == VpsStatus.CONFIGURING_DNS
        assert "docker compose up -d" in " ".join(ssh.commands)
        env = _env(ssh.files["/opt/mailu/mailu.env"])
        assert env["HOSTNAMES"].startswith(vps.hostname if vps.hostname else "vps-")
        master = ssh.files["/opt/mailu/overrides/postfix/postfix.master"]
        helo = provisioning.helo_name(settings, secondary)
        assert f"smtp_bind_address={secondary}" in master and f"smtp_helo_name={helo}" in master
        async with db.tenant_session(tenant) as s:
            placed = await s.get_one(EmailAccount, account.id)
            ip_of_account = await s.get_one(SmtpIpAddress, placed.ip_id)
        assert placed.smtp_host is None  # it moves to the VPS once the VPS's DNS verifies
        password = accounts.smtp_password(settings, placed)
        assert password and mailu.can_log_in(account.address, password)

        # CONFIGURING_DNS: records and PTRs published, then verified through real DNS.
        assert await run_step(db, settings, redis, tenant, vps.id) == VpsStatus.WARMING_UP
        vps = await status_of(db, tenant, vps.id)
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers, resolver.port = (
            ["127.0.0.1"],
            int(settings.dns_nameservers.split(":")[1]),
        )
        mx = resolver.resolve(domain.name, "MX")
        assert [r.exchange.to_text() for r in mx] == [f"{vps.hostname}."]
        spf = [b"".join(r.strings).decode() for r in resolver.resolve(domain.name, "TXT")]
        assert any(f"ip4:{primary}" in v and f"ip4:{secondary}" in v for v in spf)
        async with db.tenant_session(tenant) as s:
            ips = {str(ip.address): ip for ip in await s.scalars(select(SmtpIpAddress))}
            checked = await s.get_one(Domain, domain.id)
        assert {a: (ip.ptr, ip.ptr_status) for a, ip in ips.items()} == {
            a: (provisioning.helo_name(settings, a), "VERIFIED") for a in (primary, secondary)
        }
        assert checked.status == "VERIFIED"
        async with db.tenant_session(tenant) as s:
            moved = await s.get_one(EmailAccount, account.id)
        assert (moved.smtp_host, moved.smtp_port) == (primary, settings.vps_submission_port)
        assert (moved.imap_host, moved.imap_port) == (primary, settings.vps_imap_port)

        # WARMING_UP: warm-up on for its accounts, then ACTIVE once the ramp is at its maximum
        # (the warm-up clock moved on a day per tick).
        job = await queued_job(db, tenant, provisioning.KIND, vps_id=str(vps.id), step="WARMING_UP")
        assert isinstance(await run_job(db, settings, redis, job), DeferJob)
        async with db.tenant_session(tenant) as s:
            state = await s.get_one(WarmupState, account.id)
            assert (
                state.enabled and (await s.get_one(EmailAccount, account.id)).status == "WARMING_UP"
            )
            ramp_days = (state.max - state.start) // state.daily_increase + 1
        now = datetime.now(UTC)
        for day in range(ramp_days + 1):
            await warmup.tick(db, settings, tenant, now=now + timedelta(days=day))
        assert await run_step(db, settings, redis, tenant, vps.id) == VpsStatus.ACTIVE
        async with db.tenant_session(tenant) as s:
            assert {ip.status for ip in await s.scalars(select(SmtpIpAddress))} == {IpStatus.ACTIVE}
            assert (await s.get_one(EmailAccount, account.id)).status == AccountStatus.ACTIVE
            actions = list(
                await s.scalars(
                    select(AuditLog.action)
                    .where(AuditLog.subject == f"vps:{vps.id}")
                    .order_by(AuditLog.at)
                )
            )
        assert [a for a in actions if a.startswith("vps.")] == [
            "vps.requested", "vps.provisioning", "vps.configuring_smtp", "vps.configuring_dns",
            "vps.warming_up", "vps.active",
        ]  # fmt: skip

        # A campaign from the account goes through its own server, signed, greeting with its
        # IP's HELO name, logged in as the account over TLS.
        sent = await _send_campaign(db, settings, redis, tenant, account.id, leads_n=3)
        assert sent == ["sent"] * 3
        assert len(submission.messages) == 3
        records = {r["host"] + ".": r["value"].encode() for r in checked.dns_records}
        for message in submission.messages:
            assert (message.helo, message.login, message.tls) == (
                ip_of_account.ptr_hostname, account.address, True,
            )  # fmt: skip
            assert dkim.verify(message.data, dnsfunc=lambda name, timeout=5: records.get(
                name.decode() if isinstance(name, bytes) else name))  # fmt: skip
            parsed = email.message_from_bytes(message.data, policy=policy.default)
            assert parsed["From"].addresses[0].addr_spec == account.address

        # A lead's reply lands in the account's mailbox on the VPS; its poll reads it there.
        mailboxes.add_user(account.address, password)
        first = email.message_from_bytes(submission.messages[0].data, policy=policy.default)
        mailboxes.append(account.address, password, _reply_to(first))
        polled = await replies.poll_account(db, settings, redis, tenant, account.id)
        assert (polled.read, polled.replies) == (1, 1)

        # An account added now is placed on the server by a job of its own, and warms up.
        async with db.tenant_session(tenant) as s:
            later = await accounts.create_email_account(s, settings, tenant, domain.id, "later")
        job = await queued_job(db, tenant, provisioning.PLACE_KIND, vps_id=str(vps.id))
        assert await run_job(db, settings, redis, job) is None
        async with db.tenant_session(tenant) as s:
            added = await s.get_one(EmailAccount, later.id)
            warming = await s.get_one(WarmupState, later.id)
        assert added.ip_id is not None and added.smtp_host == primary
        assert mailu.can_log_in(later.address, accounts.smtp_password(settings, added))
        assert (added.status, warming.enabled) == (AccountStatus.WARMING_UP, True)

    # Decommissioned: nothing sends from it, the instance and its IPs are gone at the provider,
    # its names are out of DNS, its domain points at the platform again.
    async with db.tenant_session(tenant) as s:
        gone, _ = await provisioning.decommission_vps(s, settings, tenant, vps.id)
    assert gone.status == VpsStatus.DECOMMISSIONED
    job = await queued_job(db, tenant, provisioning.DECOMMISSION_KIND, vps_id=str(vps.id))
    assert await run_job(db, settings, redis, job) is None
    assert await _bought_since(settings, bought) == {"instances": 1, "ips": 1}  # none twice
    assert await LocalProvider(settings).find_instance(f"pm-{vps.id}") is None
    async with db.tenant_session(tenant) as s:
        detached = await s.get_one(EmailAccount, account.id)
        released = {ip.status for ip in await s.scalars(select(SmtpIpAddress))}
        back = await s.get_one(Domain, domain.id)
    assert (detached.smtp_host, detached.imap_host, detached.ip_id) == (None, None, None)
    assert released == {IpStatus.RELEASED}
    assert back.mx_host is None and back.spf_ips == []
    lookup = await Resolver(settings).lookup(vps.hostname, "A")
    assert lookup.values == [] and lookup.error is None
    assert [r.exchange.to_text() for r in resolver.resolve(domain.name, "MX")] == [
        f"{settings.mx_host}."
    ]


def _on_hostwinds(settings: Settings, url: str) -> Settings:
    """Settings that provision through the Hostwinds client at the stand-in's `url`."""
    return settings.model_copy(
        update={
            "hosting_provider": "hostwinds", "hostwinds_api_key": SecretStr(API_KEY),
            "hostwinds_api_base": url, "provisioning_poll_seconds": 0.1,
        }
    )  # fmt: skip


def _reply_to(message: email.message.EmailMessage) -> bytes:
    return (
        f"From: {message['To']}\r\nTo: {message['From']}\r\nSubject: Re: {message['Subject']}"
        f"\r\nMessage-ID: <reply-{uuid.uuid4().hex}@inbox.example>\r\n"
        f"In-Reply-To: {message['Message-ID']}\r\nReferences: {message['Message-ID']}\r\n"
        "\r\nSounds good, let's talk.\r\n"
    ).encode()


async def _send_campaign(
    db: Database, settings: Settings, redis: Redis, tenant: uuid.UUID, account_id: uuid.UUID,
    leads_n: int,
) -> list[str | BaseException]:  # fmt: skip
    """A campaign of one step to `leads_n` leads from the account, planned and its send jobs
    run by the send handler's batch function in this process."""
    async with db.tenant_session(tenant) as s:
        spec = campaigns.CampaignSpec(
            name="own server",
            account_ids=[account_id],
            steps=[campaigns.StepSpec(delay_days=0, subject="Hi {{ first_name }}", text="Hello")],
            window=campaigns.WindowSpec(
                timezone="UTC", days=[1, 2, 3, 4, 5, 6, 7], start_hour=0, end_hour=24
            ),
        )
        campaign = await campaigns.create_campaign(s, tenant, spec)
        campaign.send_spacing_seconds = 0
        csv = "email,first_name\n" + "".join(
            f"lead{n}@inbox.example,L{n}\n" for n in range(leads_n)
        )
        await leads.import_leads(s, settings, campaign.id, csv)
        await s.flush()
        await campaigns.launch(s, campaign.id)
    async with db.tenant_session(tenant) as s:
        await planning.plan_campaign(s, campaign.id)
        jobs = list(
            await s.scalars(
                select(Job).where(Job.kind == planning.SEND_KIND, Job.campaign_id == campaign.id)
            )
        )
    return await sending.send_batch(db, settings, redis, [(tenant, j.payload, True) for j in jobs])


async def test_an_unknown_region_is_refused_with_the_regions_there_are(
    db: Database, settings: Settings
) -> None:
    tenant, _, _ = await _tenant_with_account(db, settings)
    async with db.tenant_session(tenant) as s:
        with pytest.raises(DomainError) as raised:
            await provisioning.request_vps(s, settings, tenant, "atlantis")
    assert (raised.value.code, raised.value.field) == ("REGION_UNKNOWN", "region")
    assert "regions: local" in raised.value.message


async def test_an_ip_bought_but_not_recorded_is_adopted_not_bought_again(
    db: Database, settings: Settings, redis: Redis
) -> None:
    tenant, _, _ = await _tenant_with_account(db, settings)
    async with db.tenant_session(tenant) as s:
        vps = await provisioning.request_vps(s, settings, tenant, None)
    async with db.tenant_session(tenant) as s:
        with pytest.raises(DomainError) as early:
            await provisioning.acquire_ip(s, settings, tenant, vps.id)
    assert early.value.code == "VPS_NOT_READY"
    await run_step(db, settings, redis, tenant, vps.id)
    vps = await status_of(db, tenant, vps.id)
    local = LocalProvider(settings)
    orphan = await local.add_ip(vps.provider_id)  # bought; the process died before its commit
    bought = await local.purchases()

    async with db.tenant_session(tenant) as s:
        ip = await provisioning.acquire_ip(s, settings, tenant, vps.id)

    assert str(ip.address) == orphan
    assert await _bought_since(settings, bought) == {"instances": 0, "ips": 0}


async def test_a_hostwinds_error_answered_with_http_200_is_the_vps_reason_and_is_retried(
    db: Database, settings: Settings, redis: Redis
) -> None:
    async with running_hostwinds(build_reads=1) as (url, hostwinds):
        configured = _on_hostwinds(settings, url)
        tenant, _, _ = await _tenant_with_account(db, configured)
        async with db.tenant_session(tenant) as s:
            vps = await provisioning.request_vps(s, configured, tenant, "amsterdam")
        job = await queued_job(db, tenant, provisioning.KIND, vps_id=str(vps.id))
        hostwinds.fail_next("add_instance", "Insufficient stock in this location.")

        failed = await run_job(db, configured, redis, job, attempt=1)
        waiting = await status_of(db, tenant, vps.id)
        moved_on = await run_step(db, configured, redis, tenant, vps.id)

    assert failed is not None and not isinstance(failed, PermanentJobError)  # retried
    assert waiting.status == VpsStatus.PROVISIONING
    assert "Insufficient stock in this location." in waiting.failure_reason
    assert moved_on == VpsStatus.CONFIGURING_SMTP
    orders = [(r.action, r.params.get("location_id")) for r in hostwinds.orders()]
    assert orders == [("add_instance", "3"), ("add_instance", "3")]  # refused, then bought
    assert hostwinds.purchases["instances"] == 1
    done = await status_of(db, tenant, vps.id)
    assert (done.provider_id, done.failure_reason) == (str(min(hostwinds.instances)), None)


async def test_an_instance_ordered_but_not_listed_yet_is_waited_for_and_never_ordered_again(
    db: Database, settings: Settings, redis: Redis
) -> None:
    async with running_hostwinds(build_reads=1) as (url, hostwinds):
        hostwinds.list_lag = 3  # the order is taken; the list shows it three listings later
        configured = _on_hostwinds(settings, url)
        tenant, _, _ = await _tenant_with_account(db, configured)
        async with db.tenant_session(tenant) as s:
            vps = await provisioning.request_vps(s, configured, tenant, "dallas")
        job = await queued_job(db, tenant, provisioning.KIND, vps_id=str(vps.id))

        first = await run_job(db, configured, redis, job, attempt=1)
        marked = await status_of(db, tenant, vps.id)
        moved_on = await run_step(db, configured, redis, tenant, vps.id)

    assert isinstance(first, HostingError) and not first.refused  # ordered, maybe bought
    assert "ordered_at" in marked.config and marked.provider_id is None
    assert moved_on == VpsStatus.CONFIGURING_SMTP
    assert [r.action for r in hostwinds.orders()] == ["add_instance"]
    assert hostwinds.purchases["instances"] == 1
