"""A tenant's own sending infrastructure: the VPS state machine, and its IPs.

    REQUESTED → PROVISIONING → CONFIGURING_SMTP → CONFIGURING_DNS → WARMING_UP → ACTIVE
    any step → FAILED (the step and the reason kept; `retry` resumes from that step)
    ACTIVE → SUSPENDED (billing) → back;  any → DECOMMISSIONED

Each step is one job on the durable queue (`provision_vps`, payload: the VPS and the step),
retried with the queue's backoff, `provisioning_attempts` times, before the VPS is FAILED. A
step is safe to run again: it does nothing unless the VPS is in that step, it asks the provider
what exists before it buys (an instance is found by its label, an IP the provider lists but
nothing here records is adopted), and what it bought is committed before it goes on. A step
that waits (an instance booting, DNS verifying, a warm-up ramp growing) defers its job, which
uses no attempt, until its deadline. Every transition writes an audit-log row and publishes a
deliverability event once committed.

What each step does:
- PROVISIONING: the instance at the hosting provider (`services.hosting`), then its primary
  address, which sends too.
- CONFIGURING_SMTP: MailU's configuration rendered for the VPS (`services.mailu`: its names, each
  IP's bindings and HELO name, which account sends from which IP), stored with the instance,
  deployed over SSH; the tenant's accounts not on a VPS yet are placed on its IPs, created on
  its MailU with their passwords, and from then on submit through it and are polled there.
- CONFIGURING_DNS: A records of the VPS's names, each served domain's records (SPF with the
  VPS's addresses, DKIM, DMARC, MX to the VPS, return-path and tracking CNAMEs) through the DNS
  provider (`services.dns_providers`), each IP's PTR through the hosting provider; then waits
  until every domain verifies and every PTR is forward-confirmed.
- WARMING_UP: warm-up on for its accounts; ACTIVE once each ramp is at its maximum and every
  account and IP scores at least `provisioning_active_reputation`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets as token_source
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from jobs.queue import enqueue
from jobs.registry import DeferJob, JobContext, PermanentJobError
from models.infrastructure import (
    AccountStatus,
    Domain,
    EmailAccount,
    IpStatus,
    SmtpIpAddress,
    VpsInstance,
    VpsStatus,
    WarmupState,
)
from models.queue import Job
from models.sessions import Database
from models.tenancy import AuditLog
from penguinmails.settings import Settings, get_settings
from services import (
    accounts,
    alerts,
    deliverability_events,
    dns,
    dns_providers,
    hosting,
    mailu,
    plans,
)
from services import secrets as vault
from services.deliverability_events import Event
from services.domains import dns_records, published_records
from services.errors import DomainError
from services.reputation import check_ptr

log = logging.getLogger("penguinmails.provisioning")

KIND = "provision_vps"
IP_KIND = "configure_ip"
RELEASE_KIND = "release_ip"
DECOMMISSION_KIND = "decommission_vps"
PRIORITY = 50  # someone is waiting for it: the high tier

# The steps, in order: each is the status the VPS is in while its job works.
STEPS = (
    VpsStatus.PROVISIONING,
    VpsStatus.CONFIGURING_SMTP,
    VpsStatus.CONFIGURING_DNS,
    VpsStatus.WARMING_UP,
)
AFTER = {step: after for step, after in zip(STEPS, (*STEPS[1:], VpsStatus.ACTIVE), strict=True)}
# A VPS in these states is not worked on (no deployment, no DNS, no new IPs). A FAILED one
# still counts against the plan and in the costs: its server may exist until decommissioned.
GONE = (VpsStatus.FAILED, VpsStatus.DECOMMISSIONED)
# Where an IP can be bought: the instance exists.
TAKES_IPS = (*STEPS[1:], VpsStatus.ACTIVE)
# Whose SMTP server is checked by the health check.
SERVING = (VpsStatus.WARMING_UP, VpsStatus.ACTIVE)
# What a billing suspension holds: every state with work going on or mail going out.
HELD = (VpsStatus.REQUESTED, *STEPS, VpsStatus.ACTIVE)
UNREACHABLE_ALERT = "vps_unreachable"
UNREACHABLE_AFTER = 2  # checks in a row that found the server not answering


class StepFailed(Exception):
    """A step cannot go on: `reason` is shown on the VPS. retryable=False: fail now."""

    def __init__(self, reason: str, *, retryable: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


# What a step fails with when a provider, SSH or DNS says no: each carries a readable reason.
FAILURES = (
    StepFailed,
    hosting.HostingError,
    dns_providers.DnsProviderError,
    mailu.MailuError,
)


def _reason(error: Exception) -> str:
    """The line shown on the VPS: a provider's own reason, else the error's type and text."""
    if isinstance(error, FAILURES):
        return str(getattr(error, "reason", error))
    return f"{type(error).__name__}: {error}".rstrip(": ")


# --- what the tenant asks for ------------------------------------------------------------------


async def request_vps(
    session: AsyncSession,
    settings: Settings,
    tenant_id: uuid.UUID,
    region: str | None = None,
    *,
    actor_user_id: uuid.UUID | None = None,
) -> VpsInstance:
    """Records a VPS request and queues its first step (its event is left in
    `session.info[EVENTS]`, to publish once committed).

    A VPS's own address is a sending IP, so the plan's IP limit counts the IPs held and every
    VPS not decommissioned that has no address yet (a plan without IPs has no VPS)."""
    provider = hosting_provider(settings)
    try:
        region = _region(provider, region)
    finally:
        await provider.aclose()
    await _check_ip_limit(session, tenant_id, with_vps_to_come=True)
    vps = VpsInstance(
        tenant_id=tenant_id,
        provider=provider.name,
        region=region,
        status=VpsStatus.REQUESTED,
        monthly_cost_cents=provider.vps_monthly_cost_cents,
        step_started_at=_now(),
    )
    session.add(vps)
    await session.flush()
    _audit(session, vps, "vps.requested", {"region": region}, actor_user_id)
    _note(session, Event(tenant_id, "vps_requested", "VpsInstance", vps.id,
                         f"VPS {vps.id.hex[:12]} requested in {region}", _now()))  # fmt: skip
    await _queue_step(session, settings, vps, VpsStatus.PROVISIONING)
    return vps


async def acquire_ip(
    session: AsyncSession,
    settings: Settings,
    tenant_id: uuid.UUID,
    vps_id: uuid.UUID,
    *,
    actor_user_id: uuid.UUID | None = None,
) -> SmtpIpAddress:
    """Buys one more sending IP for the VPS, tied to it, and queues its configuration.

    The purchase is confirmed by the provider before the row is written; an address the
    provider lists for the instance that nothing here records (bought, then a crash before the
    commit) is taken instead of buying another."""
    vps = await _tenant_vps(session, tenant_id, vps_id, "vpsId")
    if vps.status not in TAKES_IPS or vps.provider_id is None:
        raise DomainError(
            "VPS_NOT_READY",
            f"The VPS is {vps.status.value.lower()}: it takes IPs once its server exists "
            "(configuring or active).",
            "vpsId",
        )
    await _check_ip_limit(session, tenant_id, with_vps_to_come=True)
    provider = hosting_provider(settings, vps.provider)
    try:
        address = await _adopt_or_buy(session, provider, vps)
    except hosting.HostingError as error:
        raise DomainError("PROVIDER_ERROR", error.reason, "vpsId") from error
    finally:
        await provider.aclose()
    ip = await _record_ip(session, settings, vps, address, provider.ip_monthly_cost_cents)
    if ip is None:
        raise DomainError("IP_TAKEN", f"{address} is recorded for another VPS already.", "vpsId")
    _audit(session, vps, "ip.acquired", {"address": address}, actor_user_id)
    await enqueue(
        session, IP_KIND, {"vps_id": str(vps.id), "ip_id": str(ip.id)}, tenant_id=tenant_id,
        priority=PRIORITY, idempotency_key=f"{IP_KIND}:{ip.id}",
        max_attempts=settings.provisioning_attempts,
    )  # fmt: skip
    return ip


async def release_ip(
    session: AsyncSession,
    settings: Settings,
    tenant_id: uuid.UUID,
    ip_id: uuid.UUID,
    *,
    actor_user_id: uuid.UUID | None = None,
) -> SmtpIpAddress:
    """Stops sending from the IP at once (its accounts move to the VPS's primary address) and
    queues giving it back to the provider and taking it out of DNS and MailU."""
    ip = await session.scalar(
        select(SmtpIpAddress).where(SmtpIpAddress.id == ip_id, SmtpIpAddress.tenant_id == tenant_id)
    )
    if ip is None:
        raise DomainError("NOT_FOUND", "No such IP.", "id")
    if ip.status == IpStatus.RELEASED:
        return ip
    vps = await session.get(VpsInstance, ip.vps_id) if ip.vps_id else None
    if vps is not None and vps.primary_ip is not None and str(vps.primary_ip) == str(ip.address):
        raise DomainError(
            "IP_IS_PRIMARY",
            "This is the VPS's own address: decommission the VPS to give it up.",
            "id",
        )
    primary = await _primary_ip(session, vps) if vps is not None else None
    await session.execute(
        update(EmailAccount)
        .where(EmailAccount.tenant_id == tenant_id, EmailAccount.ip_id == ip.id)
        .values(ip_id=primary.id if primary else None)
    )
    ip.status = IpStatus.RELEASED
    if vps is not None:
        _audit(session, vps, "ip.released", {"address": str(ip.address)}, actor_user_id)
    await enqueue(
        session, RELEASE_KIND, {"ip_id": str(ip.id)}, tenant_id=tenant_id, priority=PRIORITY,
        idempotency_key=f"{RELEASE_KIND}:{ip.id}", max_attempts=settings.provisioning_attempts,
    )  # fmt: skip
    await session.flush()
    return ip


async def decommission_vps(
    session: AsyncSession,
    settings: Settings,
    tenant_id: uuid.UUID,
    vps_id: uuid.UUID,
    *,
    actor_user_id: uuid.UUID | None = None,
) -> tuple[VpsInstance, Event | None]:
    """DECOMMISSIONED at once: nothing sends from it any more (its accounts go back to the
    platform relay, its IPs are released); a job then deletes the instance, gives the IPs
    back and takes its records out of DNS."""
    vps = await _tenant_vps(session, tenant_id, vps_id, "id")
    if vps.status == VpsStatus.DECOMMISSIONED:
        return vps, None
    if paused := vps.config.get("health_paused"):  # they go back to the relay, unpaused
        await _resume_paused(session, vps, paused, _now())
        vps.config = _without(vps.config, "health_paused", "unreachable_checks")
    ips = await _ips(session, vps)
    await _detach_accounts(session, vps, [ip.id for ip in ips])
    for ip in ips:
        ip.status = IpStatus.RELEASED
    event = _transition(session, vps, VpsStatus.DECOMMISSIONED, actor_user_id=actor_user_id)
    await enqueue(
        session, DECOMMISSION_KIND, {"vps_id": str(vps.id)}, tenant_id=tenant_id,
        priority=PRIORITY, idempotency_key=f"{DECOMMISSION_KIND}:{vps.id}",
        max_attempts=settings.provisioning_attempts,
    )  # fmt: skip
    await session.flush()
    return vps, event


async def retry(
    session: AsyncSession,
    settings: Settings,
    tenant_id: uuid.UUID,
    vps_id: uuid.UUID,
    *,
    actor_user_id: uuid.UUID | None = None,
) -> tuple[VpsInstance, Event]:
    """Resumes a FAILED VPS from the step that failed, or one in a step whose job is gone (it
    died with its worker on its last attempt, or was cut short)."""
    vps = await _tenant_vps(session, tenant_id, vps_id, "id")
    if vps.status == VpsStatus.FAILED and vps.failed_step is not None:
        step = VpsStatus(vps.failed_step)
    elif vps.status in (VpsStatus.REQUESTED, *STEPS) and not await _step_job_alive(session, vps):
        step = VpsStatus.PROVISIONING if vps.status == VpsStatus.REQUESTED else vps.status
    else:
        raise DomainError("NOT_FAILED", f"The VPS is {vps.status.value.lower()}, not failed.", "id")
    if step == VpsStatus.PROVISIONING and vps.provider_id is None:
        vps.config = _without(vps.config, "ordered_at")  # looked for by its label first
    vps.retries += 1
    event = _transition(session, vps, step, actor_user_id=actor_user_id)
    vps.failed_step = vps.failure_reason = None
    await _queue_step(session, settings, vps, step)
    await session.flush()
    return vps, event


# --- the job -----------------------------------------------------------------------------------


@dataclass
class Step:
    """What a step's run has to hand: the job, the provider, events to publish after commit."""

    job: JobContext
    vps_id: uuid.UUID
    status: VpsStatus
    events: list[Event] = field(default_factory=list)

    @property
    def db(self) -> Database:
        return self.job.db

    @property
    def settings(self) -> Settings:
        return self.job.settings

    @property
    def tenant_id(self) -> uuid.UUID:
        assert self.job.tenant_id is not None
        return self.job.tenant_id

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A tenant session whose transitions' events are published only once it commits."""
        async with self.db.tenant_session(self.tenant_id) as session:
            yield session
            pending = session.info.pop(EVENTS, [])
        self.events += pending


async def run_step(job: JobContext) -> None:
    """One step of one VPS: a stale job (the VPS moved on, failed or was decommissioned) does
    nothing. A failure is recorded on the VPS; after the last attempt, or one that retrying
    cannot help, the VPS is FAILED with the step and the reason."""
    step = Step(job, uuid.UUID(job.payload["vps_id"]), VpsStatus(job.payload["step"]))
    try:
        await STEP_RUNNERS[step.status](step)
    except DeferJob:
        raise
    except Exception as error:  # whatever it is, the VPS shows it and never stays stuck
        retryable = getattr(error, "retryable", True)
        final = not retryable or job.attempt >= job.max_attempts
        reason = _reason(error)
        await _record_failure(step, reason, final)
        if final:
            raise PermanentJobError(reason) from error
        raise
    finally:
        await deliverability_events.publish(job.redis, step.events)


async def _provision(step: Step) -> None:
    """PROVISIONING: the instance, then, once the provider says it runs, its primary address
    and the VPS's names in DNS (MailU's admin API and certificate are reached by name).

    Never ordered twice: the instance is looked for by its label first, and the order is marked
    on the VPS (committed) before it is placed. Once marked, a later run only looks for it,
    until ORDER_LISTED_SECONDS have passed; the mark is dropped only when the provider refused
    the order. Its id is recorded whatever happened to the VPS meanwhile: one decommissioned
    meanwhile has its new instance deleted at once."""
    now = _now()
    async with step.session() as session:
        vps = await _stepping(session, step, also=VpsStatus.REQUESTED)
        if vps is None:
            return
        if vps.status == VpsStatus.REQUESTED:
            _note(session, _transition(session, vps, VpsStatus.PROVISIONING))
        provider_id, provider_name, region = vps.provider_id, vps.provider, vps.region
        ordered = vps.config.get("ordered_at")
        label = _label(vps)
    provider = hosting_provider(step.settings, provider_name)
    try:
        if provider_id is None:
            instance = await provider.find_instance(label)
            if instance is None:
                instance = await _order(step, provider, label, region, ordered, now)
            if not await _record_instance(step, instance.provider_id):
                await provider.delete_instance(instance.provider_id)
                return
            provider_id = instance.provider_id
        instance = await provider.get_instance(provider_id)
        if instance.state == "ERROR":
            await provider.delete_instance(provider_id)  # a new one is ordered on retry
            async with step.session() as session:
                vps = await _stepping(session, step)
                if vps is not None:
                    vps.provider_id = None
                    vps.config = _without(vps.config, "ordered_at")
            raise StepFailed(
                f"{provider.name} reports instance {provider_id} failed to build; it was "
                "deleted, and a retry orders a new one",
                retryable=False,
            )
    finally:
        await provider.aclose()
    if instance.state != "ACTIVE" or not instance.primary_ip:
        raise DeferJob(step.settings.provisioning_poll_seconds, "the instance is building")
    async with step.session() as session:
        vps = await _stepping(session, step)
        if vps is None:
            return
        vps.primary_ip = instance.primary_ip
        vps.hostname = hosting.vps_hostname(step.settings, _label(vps))
        if await _record_ip(session, step.settings, vps, instance.primary_ip, 0) is None:
            raise StepFailed(
                f"the instance's address {instance.primary_ip} is recorded as another VPS's "
                "sending IP: release it there, or ask the provider for another address",
                retryable=False,
            )
        names = _name_records(vps, await _ips(session, vps))
    await _publish(step.settings, [(step.settings.vps_hostname_domain, names)])
    async with step.session() as session:
        vps = await _stepping(session, step)
        if vps is not None:
            await _advance(session, step, vps)


# How long after an order the instance may still be missing from the provider's list.
ORDER_LISTED_SECONDS = 900.0


async def _order(
    step: Step, provider: hosting.HostingProvider, label: str, region: str | None,
    ordered: str | None, now: datetime,
) -> hosting.Instance:  # fmt: skip
    """The instance ordered, once: see _provision."""
    if ordered is not None:
        if now - datetime.fromisoformat(ordered) < timedelta(seconds=ORDER_LISTED_SECONDS):
            raise DeferJob(step.settings.provisioning_poll_seconds, "ordered; not listed yet")
        raise StepFailed(
            f"{provider.name} took the order for {label} at {ordered[:19]} but never listed it: "
            "look for it in the provider's panel before retrying (a retry orders again)",
            retryable=False,
        )
    async with step.session() as session:
        vps = await _stepping(session, step)
        if vps is None or vps.config.get("ordered_at"):  # another run is ordering it
            raise DeferJob(step.settings.provisioning_poll_seconds, "being ordered")
        vps.config = {**vps.config, "ordered_at": now.isoformat()}
    try:
        return await provider.create_instance(label, region or provider.default_region())
    except hosting.HostingError as error:
        if error.refused:  # nothing was bought: the next try may order
            async with step.session() as session:
                vps = await _stepping(session, step)
                if vps is not None:
                    vps.config = _without(vps.config, "ordered_at")
        raise


async def _record_instance(step: Step, provider_id: str) -> bool:
    """Records the instance's id on the VPS whatever its status; False: it was decommissioned
    meanwhile (its instance is to be deleted)."""
    async with step.session() as session:
        vps = await session.scalar(
            select(VpsInstance).where(VpsInstance.id == step.vps_id).with_for_update()
        )
        if vps is None:
            return False
        vps.provider_id = provider_id
        return vps.status != VpsStatus.DECOMMISSIONED


async def _configure_smtp(step: Step) -> None:
    """CONFIGURING_SMTP: MailU configured, deployed and given its accounts."""
    async with step.session() as session:
        vps = await _stepping(session, step)
        if vps is None:
            return
        await _place_accounts(session, vps)
    await deploy_mailu(step.db, step.settings, step.tenant_id, step.vps_id)
    async with step.session() as session:
        vps = await _stepping(session, step)
        if vps is not None:
            await _advance(session, step, vps)


async def _configure_dns(step: Step) -> None:
    """CONFIGURING_DNS: the records and PTRs published (once per start of the step), then
    verified; waits for DNS until `provisioning_dns_wait_seconds` after the step began. Once
    verified, the VPS's accounts submit to it and are polled there."""
    async with step.session() as session:
        vps = await _stepping(session, step)
        if vps is None:
            return
        started = vps.step_started_at or _now()
        published = vps.config.get("dns_published") == started.isoformat()
    if not published:
        await publish_dns(step.db, step.settings, step.tenant_id, step.vps_id)
        async with step.session() as session:
            vps = await _stepping(session, step)
            if vps is None:
                return
            vps.config = {**vps.config, "dns_published": started.isoformat()}
    waiting = await _verify(step)
    async with step.session() as session:
        vps = await _stepping(session, step)
        if vps is None:
            return
        if not waiting:
            await _switch_accounts(session, vps)
            await _advance(session, step, vps)
            return
        if _now() - started >= timedelta(seconds=step.settings.provisioning_dns_wait_seconds):
            raise StepFailed(f"DNS did not verify: {'; '.join(waiting)}", retryable=False)
        vps.failure_reason = f"waiting for DNS: {'; '.join(waiting)}"
    raise DeferJob(step.settings.provisioning_poll_seconds, "waiting for DNS")


async def _warm_up(step: Step) -> None:
    """WARMING_UP: warm-up on for the VPS's accounts (once), then ACTIVE when every ramp is at
    its maximum and every account and IP scores at least the threshold."""
    threshold = step.settings.provisioning_active_reputation
    async with step.session() as session:
        vps = await _stepping(session, step)
        if vps is None:
            return
        ips = await _ips(session, vps)
        rows = (  # a paused or disabled account's ramp does not grow: it does not hold it up
            await session.execute(
                select(EmailAccount, WarmupState)
                .join(WarmupState, WarmupState.account_id == EmailAccount.id)
                .where(
                    EmailAccount.ip_id.in_([ip.id for ip in ips]),
                    EmailAccount.status.in_((AccountStatus.ACTIVE, AccountStatus.WARMING_UP)),
                )
            )
        ).all()
        if not vps.config.get("warmup_started"):
            _start_warmup(rows)
            for ip in ips:
                if ip.status == IpStatus.PENDING:
                    ip.status = IpStatus.WARMING_UP
            vps.config = {**vps.config, "warmup_started": _now().isoformat()}
        ready = all(
            state.enabled
            and state.today_target >= state.max
            and account.reputation_score >= threshold
            for account, state in rows
        ) and all(ip.reputation_score >= threshold for ip in ips)
        if ready:
            for account, state in rows:
                state.enabled = False
                if account.status == AccountStatus.WARMING_UP:
                    account.status = AccountStatus.ACTIVE
            for ip in ips:
                if ip.status in (IpStatus.PENDING, IpStatus.WARMING_UP):
                    ip.status = IpStatus.ACTIVE
            await _advance(session, step, vps)
            return
    raise DeferJob(step.settings.provisioning_warmup_check_seconds, "warming up")


def _start_warmup(rows) -> None:
    """Warm-up on from day 0 (the next tick makes it day 1) for these (account, state) rows."""
    for account, state in rows:
        if not state.enabled:
            state.enabled, state.day, state.today_target, state.started_on = True, 0, 0, None
        if account.status == AccountStatus.ACTIVE:
            account.status = AccountStatus.WARMING_UP


STEP_RUNNERS: dict[VpsStatus, Callable[[Step], Awaitable[None]]] = {
    VpsStatus.PROVISIONING: _provision,
    VpsStatus.CONFIGURING_SMTP: _configure_smtp,
    VpsStatus.CONFIGURING_DNS: _configure_dns,
    VpsStatus.WARMING_UP: _warm_up,
}


# --- the work of the steps, also run again when an IP comes or goes ---------------------------


async def deploy_mailu(
    db: Database, settings: Settings, tenant_id: uuid.UUID, vps_id: uuid.UUID
) -> None:
    """Renders the VPS's MailU configuration, stores it with the instance (its secrets left
    out), deploys it and creates its accounts there with their passwords. A new account's
    password is made and committed before MailU hears of it, under the VPS's row lock, so two
    deployments at once give an account the same one. Where the accounts submit and are polled
    is recorded on the VPS; they move there once its DNS verifies (_switch_accounts)."""
    async with db.tenant_session(tenant_id) as session:
        vps = await session.scalar(
            select(VpsInstance).where(VpsInstance.id == vps_id).with_for_update()
        )
        if vps is None or vps.status in GONE:
            return
        ips = await _ips(session, vps)
        placed = list(
            await session.scalars(
                select(EmailAccount).where(EmailAccount.ip_id.in_([ip.id for ip in ips]))
            )
        )
        domains = sorted(
            set(await session.scalars(
                select(Domain.name).where(Domain.id.in_({a.domain_id for a in placed}))
            ))
        )  # fmt: skip
        token, secret_key = _mailu_secrets(settings, vps)
        by_id = {ip.id: ip for ip in ips}
        setup = mailu.Setup(
            hostname=vps.hostname or _label(vps),
            domains=domains,
            ips=[mailu.SendingAddress(str(ip.address), ip.ptr_hostname or "") for ip in ips],
            senders={a.address: str(by_id[a.ip_id].address) for a in placed if a.ip_id},
            dkim_selector=settings.dkim_selector,
            relay_networks=["127.0.0.1/32", *(f"{ip.address}/32" for ip in ips)],
            admin_token=token,
            secret_key=secret_key,
        )
        files = mailu.render(setup)
        vps.config = {**vps.config, "mailu": _redacted(files)}
        passwords = {a.address: _password(settings, a) for a in placed}
        instance = _instance(vps)
        provider_name = vps.provider
    provider = hosting_provider(settings, provider_name)
    management = provider.management(instance)
    await provider.aclose()
    fingerprint = None
    if management.ssh is not None:
        fingerprint = await mailu.deploy(
            mailu.SshTarget(
                management.ssh[0], management.ssh[1], settings.vps_ssh_user,
                settings.vps_ssh_key, settings.vps_ssh_known_hosts,
            ),
            files,
            submission=management.submission,
            ready_seconds=settings.vps_smtp_ready_seconds,
            timeout=settings.vps_ssh_timeout_seconds,
        )  # fmt: skip
    if management.admin_url is not None:
        admin = mailu.AdminClient(
            management.admin_url, token, timeout=settings.vps_ssh_timeout_seconds
        )
        try:
            for domain in domains:
                await admin.ensure_domain(domain)
            for address, password in passwords.items():
                await admin.ensure_user(address, password)
        finally:
            await admin.aclose()
    async with db.tenant_session(tenant_id) as session:
        vps = await session.scalar(
            select(VpsInstance).where(VpsInstance.id == vps_id).with_for_update()
        )
        if vps is None:
            return
        if fingerprint:
            vps.config = {**vps.config, "ssh_host_key": fingerprint}
        if management.ssh is None:
            return  # nothing runs there: its accounts keep the platform relay
        vps.smtp_host, vps.smtp_port = management.submission
        vps.config = {**vps.config, "imap": list(management.imap)}
        if vps.status in (VpsStatus.WARMING_UP, VpsStatus.ACTIVE):
            await _switch_accounts(session, vps)  # an IP or account added later


async def _switch_accounts(session: AsyncSession, vps: VpsInstance) -> None:
    """The accounts placed on the VPS (with their password on its MailU) submit to it and are
    polled there, once it has been deployed to."""
    if vps.smtp_host is None:
        return
    imap_host, imap_port = vps.config.get("imap") or (None, None)
    await session.execute(
        update(EmailAccount)
        .where(
            EmailAccount.ip_id.in_([ip.id for ip in await _ips(session, vps)]),
            EmailAccount.smtp_password_encrypted.is_not(None),
        )
        .values(
            smtp_host=vps.smtp_host, smtp_port=vps.smtp_port, smtp_username=EmailAccount.address,
            imap_host=imap_host, imap_port=imap_port,
        )
    )  # fmt: skip


def _redacted(files: dict[str, str]) -> dict[str, str]:
    """The files as stored with the VPS: mailu.env's secrets left out (the token and key are
    kept encrypted, `mailu_secrets`)."""
    secret = ("API_TOKEN=", "SECRET_KEY=")
    return {
        path: "\n".join(
            line.split("=", 1)[0] + "=<kept encrypted>" if line.startswith(secret) else line
            for line in text.split("\n")
        )
        for path, text in files.items()
    }


async def publish_dns(
    db: Database, settings: Settings, tenant_id: uuid.UUID, vps_id: uuid.UUID
) -> None:
    """The VPS's names (A), its served domains' records and its IPs' PTRs, published: what the
    provider has already is left as it is (the providers' upserts are idempotent)."""
    async with db.tenant_session(tenant_id) as session:
        vps = await session.get(VpsInstance, vps_id)
        if vps is None or vps.status in GONE:
            return
        ips = await _ips(session, vps)
        addresses = [str(ip.address) for ip in ips]
        names = _name_records(vps, ips)
        domains = await _served_domains(session, ips)
        zones: list[tuple[str, list[dns_providers.Record]]] = []
        for domain in domains:
            domain.mx_host, domain.spf_ips = vps.hostname, addresses
            domain.dns_records = _merged(domain.dns_records, published_records(settings, domain))
            zones.append((domain.name, _records(published_records(settings, domain))))
        ptrs = [(str(ip.address), ip.ptr_hostname or "") for ip in ips]
        provider_name = vps.provider
    await _publish(settings, [(settings.vps_hostname_domain, names), *zones])
    provider = hosting_provider(settings, provider_name)
    try:
        for address, name in ptrs:
            await provider.set_ptr(address, name)
    finally:
        await provider.aclose()


async def _publish(
    settings: Settings, zones: list[tuple[str, list[dns_providers.Record]]], *, remove=False
) -> None:
    """Records published to (or, with `remove`, taken out of) their zones."""
    publisher = dns_providers.provider(settings)
    try:
        for zone, records in zones:
            if records:
                await (publisher.remove if remove else publisher.apply)(zone, records)
    finally:
        await publisher.aclose()


async def _verify(step: Step) -> list[str]:
    """Checks the served domains (the deliverability checks: services/dns.py) and each IP's
    PTR; what is not verified yet, one line each."""
    async with step.session() as session:
        vps = await session.get(VpsInstance, step.vps_id)
        assert vps is not None
        ips = await _ips(session, vps)
        domain_ids = [d.id for d in await _served_domains(session, ips)]
    waiting: list[str] = []
    for domain_id in domain_ids:
        async with step.session() as session:
            done = await dns.verify(session, step.settings, domain_id)
        if done is None:
            continue
        if done.event is not None:
            step.events.append(done.event)
        if done.domain.status.value != "VERIFIED":
            pending = [
                f"{r['kind']} {r['status']}"
                for r in done.domain.dns_records
                if r["kind"] in dns.REQUIRED and r["status"] != "VERIFIED"
            ]
            waiting.append(f"{done.domain.name} ({', '.join(pending)})")
    resolver = dns.Resolver(step.settings)
    async with step.session() as session:
        for ip in await session.scalars(
            select(SmtpIpAddress).where(SmtpIpAddress.id.in_([ip.id for ip in ips]))
        ):
            ip.ptr_status, ip.ptr = await check_ptr(resolver, str(ip.address), ip.ptr_hostname)
            ip.last_checked_at = _now()
            if ip.ptr_status != "VERIFIED":
                waiting.append(f"PTR of {ip.address} {ip.ptr_status}")
    return waiting


# --- the other jobs ----------------------------------------------------------------------------


async def configure_ip(job: JobContext) -> None:
    """A new IP on a VPS that is configured already: MailU redeployed with its binding, DNS
    (its name, the SPF) and its PTR published. On a VPS still provisioning, the coming steps
    cover it."""
    vps_id = uuid.UUID(job.payload["vps_id"])
    async with job.db.tenant_session(job.tenant_id) as session:
        vps = await session.get(VpsInstance, vps_id)
        if vps is None or vps.status in (*GONE, VpsStatus.PROVISIONING, VpsStatus.REQUESTED):
            return
        status = vps.status
        ip = await session.get(SmtpIpAddress, uuid.UUID(job.payload["ip_id"]))
        if ip is not None and ip.status == IpStatus.PENDING and status == VpsStatus.ACTIVE:
            ip.status = IpStatus.WARMING_UP
    if status == VpsStatus.CONFIGURING_SMTP:
        return
    await deploy_mailu(job.db, job.settings, job.tenant_id, vps_id)
    await publish_dns(job.db, job.settings, job.tenant_id, vps_id)


async def release(job: JobContext) -> None:
    """A released IP given back to the provider, its name out of DNS, its VPS's MailU and SPF
    without it."""
    async with job.db.tenant_session(job.tenant_id) as session:
        ip = await session.get(SmtpIpAddress, uuid.UUID(job.payload["ip_id"]))
        if ip is None or ip.vps_id is None:
            return
        vps = await session.get(VpsInstance, ip.vps_id)
        if vps is None:
            return
        address, helo = str(ip.address), ip.ptr_hostname
        provider_name, provider_id, vps_id = vps.provider, vps.provider_id, vps.id
    provider = hosting_provider(job.settings, provider_name)
    try:
        if provider_id is not None:
            await provider.remove_ip(provider_id, address)
    finally:
        await provider.aclose()
    if helo:
        name = dns_providers.Record(helo, "A", address)
        await _publish(job.settings, [(job.settings.vps_hostname_domain, [name])], remove=True)
    await deploy_mailu(job.db, job.settings, job.tenant_id, vps_id)
    await publish_dns(job.db, job.settings, job.tenant_id, vps_id)


async def decommission(job: JobContext) -> None:
    """A decommissioned VPS's instance deleted (its IPs go with it; one never recorded is found
    by its label), its names taken out of DNS, and its domains' records published again as the
    platform relay's (MX back to the platform, SPF without its addresses). The domains change
    here only once DNS has them: a retry after a failure finds them still pointing at the VPS."""
    vps_id = uuid.UUID(job.payload["vps_id"])
    async with job.db.tenant_session(job.tenant_id) as session:
        vps = await session.get(VpsInstance, vps_id)
        if vps is None or vps.status != VpsStatus.DECOMMISSIONED:
            return
        ips = list(
            await session.scalars(select(SmtpIpAddress).where(SmtpIpAddress.vps_id == vps.id))
        )
        names = _name_records(vps, ips)
        hostname = vps.hostname
        domains = list(await session.scalars(select(Domain).where(Domain.mx_host == hostname)))
        zones = [(d.name, _records(_relay_records(job.settings, d))) for d in domains]
        provider_name, provider_id, label = vps.provider, vps.provider_id, _label(vps)
        addresses = [str(ip.address) for ip in ips if str(ip.address) != str(vps.primary_ip)]
    provider = hosting_provider(job.settings, provider_name)
    try:
        if provider_id is None and (found := await provider.find_instance(label)) is not None:
            provider_id = found.provider_id
        if provider_id is not None:
            for address in addresses:
                await provider.remove_ip(provider_id, address)
            await provider.delete_instance(provider_id)
    finally:
        await provider.aclose()
    await _publish(job.settings, [(job.settings.vps_hostname_domain, names)], remove=True)
    await _publish(job.settings, zones)
    if hostname is None:
        return
    async with job.db.tenant_session(job.tenant_id) as session:
        for domain in await session.scalars(select(Domain).where(Domain.mx_host == hostname)):
            domain.mx_host, domain.spf_ips = None, []
            domain.dns_records = _merged(
                domain.dns_records, published_records(job.settings, domain)
            )


def _relay_records(settings: Settings, domain: Domain) -> list[dict[str, Any]]:
    """The records the domain publishes once its accounts are back on the platform relay."""
    return dns_records(
        settings, domain.name, domain.dkim_selector, domain.dkim_public_key or ""
    ) + [r for r in published_records(settings, domain) if r["kind"] not in dns.REQUIRED]


# --- accounts added later ----------------------------------------------------------------------

PLACE_KIND = "place_accounts"
# A VPS whose accounts were placed already: an account added now needs a job of its own.
CONFIGURED = (
    VpsStatus.CONFIGURING_SMTP,
    VpsStatus.CONFIGURING_DNS,
    VpsStatus.WARMING_UP,
    VpsStatus.ACTIVE,
)


async def queue_placement(
    session: AsyncSession, settings: Settings, tenant_id: uuid.UUID, account_id: uuid.UUID
) -> None:
    """A new account of a tenant with a configured VPS is placed on it by a job (one still
    provisioning places every account at its SMTP step)."""
    vps_id = await session.scalar(
        select(VpsInstance.id)
        .where(VpsInstance.tenant_id == tenant_id, VpsInstance.status.in_(CONFIGURED))
        .order_by(VpsInstance.created_at)
        .limit(1)
    )
    if vps_id is None:
        return
    await enqueue(
        session, PLACE_KIND, {"vps_id": str(vps_id)}, tenant_id=tenant_id, priority=PRIORITY,
        idempotency_key=f"{PLACE_KIND}:{vps_id}:{account_id}",
        max_attempts=settings.provisioning_attempts,
    )  # fmt: skip


async def place_accounts(job: JobContext) -> None:
    """The tenant's accounts on no server yet, placed on the VPS: created on its MailU, its
    DNS published for their domains, and warming up when the VPS is past its own warm-up."""
    vps_id = uuid.UUID(job.payload["vps_id"])
    async with job.db.tenant_session(job.tenant_id) as session:
        vps = await session.get(VpsInstance, vps_id)
        if vps is None or vps.status not in CONFIGURED:
            return
        before = set(
            await session.scalars(
                select(EmailAccount.id).where(
                    EmailAccount.ip_id.in_([ip.id for ip in await _ips(session, vps)])
                )
            )
        )
        await _place_accounts(session, vps)
    await deploy_mailu(job.db, job.settings, job.tenant_id, vps_id)
    await publish_dns(job.db, job.settings, job.tenant_id, vps_id)
    async with job.db.tenant_session(job.tenant_id) as session:
        vps = await session.get(VpsInstance, vps_id)
        if vps is None or vps.status not in (VpsStatus.WARMING_UP, VpsStatus.ACTIVE):
            return
        placed = (
            await session.execute(
                select(EmailAccount, WarmupState)
                .join(WarmupState, WarmupState.account_id == EmailAccount.id)
                .where(
                    EmailAccount.ip_id.in_([ip.id for ip in await _ips(session, vps)]),
                    EmailAccount.id.not_in(before),
                )
            )
        ).all()
        _start_warmup(placed)


# --- billing -----------------------------------------------------------------------------------


async def suspend_for_billing(
    session: AsyncSession, tenant_id: uuid.UUID, reason: str
) -> list[Event]:
    """The tenant's VPS instances SUSPENDED with its sending, those being provisioned too (no
    step runs while suspended; the servers and what is on them are kept); the events to
    publish once committed."""
    events = []
    for vps in await session.scalars(
        select(VpsInstance)
        .where(VpsInstance.tenant_id == tenant_id, VpsInstance.status.in_(HELD))
        .with_for_update()
    ):
        vps.config = {**vps.config, "suspended_from": vps.status.value}
        events.append(_transition(session, vps, VpsStatus.SUSPENDED, reason=reason))
    return events


async def resume_after_billing(session: AsyncSession, tenant_id: uuid.UUID) -> list[Event]:
    """Each VPS suspended with the tenant's sending back where it was; one still being
    provisioned or warming up has its step queued again."""
    events = []
    for vps in await session.scalars(
        select(VpsInstance)
        .where(VpsInstance.tenant_id == tenant_id, VpsInstance.status == VpsStatus.SUSPENDED)
        .with_for_update()
    ):
        back = VpsStatus(vps.config.get("suspended_from", VpsStatus.ACTIVE.value))
        vps.config = {k: v for k, v in vps.config.items() if k != "suspended_from"}
        events.append(_transition(session, vps, back, reason="payment received"))
        if back in (VpsStatus.REQUESTED, *STEPS):
            vps.retries += 1
            await _queue_step(
                session, get_settings(), vps,
                VpsStatus.PROVISIONING if back == VpsStatus.REQUESTED else back,
            )  # fmt: skip
    return events


# --- health and cost ---------------------------------------------------------------------------


async def smtp_reachable(host: str, port: int, within: float) -> None:
    """Raises unless an SMTP server answers with its 220 greeting within `within` seconds."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), within)
    try:
        greeting = await asyncio.wait_for(reader.readline(), within)
        if not greeting.startswith(b"220"):
            raise ConnectionError(f"greeted with {greeting[:80]!r}")
    finally:
        writer.close()


async def serving_vps(db: Database) -> list[tuple[uuid.UUID, uuid.UUID, str, str, int]]:
    """(tenant, VPS, name, SMTP host, port) of every VPS serving mail, across tenants."""
    async with db.system_session() as session:
        rows = await session.execute(
            select(
                VpsInstance.tenant_id, VpsInstance.id, VpsInstance.hostname,
                VpsInstance.smtp_host, VpsInstance.smtp_port,
            ).where(VpsInstance.status.in_(SERVING), VpsInstance.smtp_host.is_not(None))
        )  # fmt: skip
        return [tuple(row) for row in rows]  # type: ignore[misc]


async def check_health(db: Database, settings: Settings) -> tuple[dict[str, str], list[Event]]:
    """Each serving VPS's SMTP server: one that does not answer pauses its accounts with the
    reason and raises an alert; one that answers again resumes the accounts it paused. Returns
    the report by VPS name, and the events to publish."""
    timeout = min(settings.smtp_connect_timeout_seconds, 10.0)
    report: dict[str, str] = {}
    events: list[Event] = []
    for tenant_id, vps_id, name, host, port in await serving_vps(db):
        try:
            await smtp_reachable(host, port, timeout)
            error = None
        except (OSError, TimeoutError) as e:
            error = f"{type(e).__name__}: {e}".rstrip(": ")
        report[f"vps {name}"] = error or "ok"
        async with db.tenant_session(tenant_id) as session:
            events += await _health_changed(session, vps_id, name, f"{host}:{port}", error)
    return report, events


async def _health_changed(
    session: AsyncSession, vps_id: uuid.UUID, name: str, where: str, error: str | None
) -> list[Event]:
    """After UNREACHABLE_AFTER checks in a row without an answer, the VPS's sending accounts
    (ACTIVE or WARMING_UP) are paused with the reason and an alert is raised; when it answers
    again, the accounts it paused go back to what they were and the alert is resolved."""
    vps = await session.scalar(
        select(VpsInstance).where(VpsInstance.id == vps_id).with_for_update()
    )
    if vps is None:
        return []
    now = _now()
    paused: dict[str, str] = vps.config.get("health_paused") or {}
    if error is None:
        vps.config = _without(vps.config, "unreachable_checks", "health_paused")
        if not paused:
            return []
        await _resume_paused(session, vps, paused, now)
        return [Event(vps.tenant_id, "vps_reachable", "VpsInstance", vps.id,
                      f"{name} answers again", now)]  # fmt: skip
    checks = int(vps.config.get("unreachable_checks", 0)) + 1
    vps.config = {**vps.config, "unreachable_checks": checks}
    if paused or checks < UNREACHABLE_AFTER:
        return []
    reason = f"{_unreachable(name)} ({where}: {error})"
    sending = list(
        await session.scalars(
            select(EmailAccount).where(
                EmailAccount.ip_id.in_([ip.id for ip in await _ips(session, vps)]),
                EmailAccount.status.in_((AccountStatus.ACTIVE, AccountStatus.WARMING_UP)),
            )
        )
    )
    for account in sending:
        paused[str(account.id)] = account.status.value
        account.status, account.status_reason = AccountStatus.PAUSED, reason
    vps.config = {**vps.config, "health_paused": paused or {"": ""}}
    alerts.raise_alert(
        session, vps.tenant_id, UNREACHABLE_ALERT, name,
        f"{name} does not answer on {where} ({error}): its accounts are paused",
    )  # fmt: skip
    return [Event(vps.tenant_id, "vps_unreachable", "VpsInstance", vps.id,
                  f"{name} is unreachable ({error})", now)]  # fmt: skip


async def _resume_paused(
    session: AsyncSession, vps: VpsInstance, paused: dict[str, str], now: datetime
) -> None:
    """The accounts the health check paused, still paused for that reason, back to what they
    were; its alert resolved."""
    name = vps.hostname or _label(vps)
    for account in await session.scalars(
        select(EmailAccount).where(
            EmailAccount.id.in_([uuid.UUID(a) for a in paused if a]),
            EmailAccount.status == AccountStatus.PAUSED,
            EmailAccount.status_reason.startswith(_unreachable(name)),
        )
    ):
        account.status = AccountStatus(paused[str(account.id)])
        account.status_reason = None
    await alerts.resolve_alerts(session, vps.tenant_id, UNREACHABLE_ALERT, name, now)


def _unreachable(name: str) -> str:
    return f"its server {name} is unreachable"


# --- helpers -----------------------------------------------------------------------------------


def hosting_provider(settings: Settings, name: str | None = None) -> hosting.HostingProvider:
    """The provider of that name; the local one publishes its PTRs to the zone files."""
    name = name or settings.hosting_provider
    if name == "local":
        return hosting.LocalProvider(settings, publish_ptr=_ptr_publisher(settings))
    return hosting.provider(settings, name)


def _ptr_publisher(settings: Settings) -> Callable[[str, str], Awaitable[None]]:
    async def publish(address: str, hostname: str) -> None:
        zones = dns_providers.ZoneFileProvider(dns_providers.zone_dir(settings))
        await zones.apply(
            dns_providers.reverse_zone(address),
            [dns_providers.Record(dns_providers.ptr_host(address), "PTR", hostname)],
        )

    return publish


async def _stepping(
    session: AsyncSession, step: Step, also: VpsStatus | None = None
) -> VpsInstance | None:
    """The VPS, locked, if it is in this step (or `also`); None: the job is stale."""
    vps = await session.scalar(
        select(VpsInstance).where(VpsInstance.id == step.vps_id).with_for_update()
    )
    if vps is None or vps.status not in (step.status, also):
        return None
    return vps


async def _advance(session: AsyncSession, step: Step, vps: VpsInstance) -> None:
    after = AFTER[step.status]
    vps.failure_reason = None
    _note(session, _transition(session, vps, after))
    if after != VpsStatus.ACTIVE:
        await _queue_step(session, step.settings, vps, after)


async def _record_failure(step: Step, reason: str, final: bool) -> None:
    async with step.session() as session:
        vps = await _stepping(session, step, also=VpsStatus.REQUESTED)
        if vps is None:
            return
        vps.failure_reason = reason[:2000]
        if final:
            failed = step.status
            _note(session, _transition(session, vps, VpsStatus.FAILED, reason=reason))
            vps.failed_step = failed.value
    log.warning("VPS %s, step %s: %s", step.vps_id, step.status, reason)


EVENTS = "vps_events"


def _note(session: AsyncSession, event: Event) -> None:
    """An event to publish once the session commits (Step.session)."""
    session.info.setdefault(EVENTS, []).append(event)


def _transition(
    session: AsyncSession,
    vps: VpsInstance,
    to: VpsStatus,
    *,
    actor_user_id: uuid.UUID | None = None,
    reason: str | None = None,
) -> Event:
    """The new status, its audit-log row, and the event to publish once committed."""
    before, now = vps.status, _now()
    vps.status, vps.step_started_at = to, now
    _audit(session, vps, f"vps.{to.value.lower()}", {"from": before.value, "reason": reason},
           actor_user_id)  # fmt: skip
    name = vps.hostname or f"VPS {vps.id.hex[:12]}"
    message = f"{name}: {before.value.lower()} → {to.value.lower()}" + (
        f" ({reason})" if reason else ""
    )
    return Event(vps.tenant_id, f"vps_{to.value.lower()}", "VpsInstance", vps.id, message, now)


def _audit(
    session: AsyncSession,
    vps: VpsInstance,
    action: str,
    details: dict[str, Any],
    actor_user_id: uuid.UUID | None,
) -> None:
    session.add(
        AuditLog(
            tenant_id=vps.tenant_id, actor_user_id=actor_user_id,
            actor_kind="user" if actor_user_id else "system", action=action,
            subject=f"vps:{vps.id}", details=details,
        )
    )  # fmt: skip


async def _queue_step(
    session: AsyncSession, settings: Settings, vps: VpsInstance, step: VpsStatus
) -> None:
    await enqueue(
        session, KIND, {"vps_id": str(vps.id), "step": step.value}, tenant_id=vps.tenant_id,
        priority=PRIORITY, idempotency_key=f"{KIND}:{vps.id}:{step.value}:{vps.retries}",
        max_attempts=settings.provisioning_attempts,
    )  # fmt: skip


async def _check_ip_limit(
    session: AsyncSession, tenant_id: uuid.UUID, *, with_vps_to_come: bool
) -> None:
    """The plan's IP limit, under its usage lock: the IPs held, and (with_vps_to_come) the
    VPS instances not decommissioned whose own address is not recorded yet."""
    await plans.lock_usage(session, tenant_id, "ips")
    held = await session.scalar(
        select(func.count())
        .select_from(SmtpIpAddress)
        .where(SmtpIpAddress.tenant_id == tenant_id, SmtpIpAddress.status != IpStatus.RELEASED)
    )
    coming = await session.scalar(
        select(func.count())
        .select_from(VpsInstance)
        .where(
            VpsInstance.tenant_id == tenant_id,
            VpsInstance.status != VpsStatus.DECOMMISSIONED,
            VpsInstance.primary_ip.is_(None),
        )
    )
    await plans.check_limit(session, tenant_id, "ips", (held or 0) + (coming or 0))


async def _step_job_alive(session: AsyncSession, vps: VpsInstance) -> bool:
    """Whether a job of the VPS's steps is still to run or running."""
    return bool(
        await session.scalar(
            select(func.count())
            .select_from(Job)
            .where(
                Job.kind == KIND,
                Job.payload["vps_id"].astext == str(vps.id),
                Job.status.in_(("queued", "dispatched", "running", "failed")),
            )
        )
    )


async def _tenant_vps(
    session: AsyncSession, tenant_id: uuid.UUID, vps_id: uuid.UUID, field_name: str
) -> VpsInstance:
    vps = await session.scalar(
        select(VpsInstance)
        .where(VpsInstance.id == vps_id, VpsInstance.tenant_id == tenant_id)
        .with_for_update()
    )
    if vps is None:
        raise DomainError("NOT_FOUND", "No such VPS.", field_name)
    return vps


async def _adopt_or_buy(
    session: AsyncSession, provider: hosting.HostingProvider, vps: VpsInstance
) -> str:
    assert vps.provider_id is not None
    known = {
        str(a)
        for a in await session.scalars(
            select(SmtpIpAddress.address).where(SmtpIpAddress.vps_id == vps.id)
        )
    }
    listed = await provider.list_ips(vps.provider_id)
    orphans = [a for a in listed if a not in known and a != str(vps.primary_ip)]
    if orphans:
        log.info("VPS %s: adopting %s, bought before and not recorded", vps.id, orphans[0])
        return orphans[0]
    return await provider.add_ip(vps.provider_id)


async def _record_ip(
    session: AsyncSession, settings: Settings, vps: VpsInstance, address: str, cost: int
) -> SmtpIpAddress | None:
    """The address's row on the VPS (kept if it exists already); None: another VPS has it."""
    ip = await session.scalar(
        insert(SmtpIpAddress)
        .values(
            tenant_id=vps.tenant_id,
            vps_id=vps.id,
            address=address,
            status=IpStatus.PENDING,
            ptr_hostname=helo_name(settings, address),
            monthly_cost_cents=cost,
        )
        .on_conflict_do_nothing(
            index_elements=[SmtpIpAddress.address], index_where=text("status <> 'RELEASED'")
        )
        .returning(SmtpIpAddress)
    )
    if ip is None:
        ip = await session.scalar(
            select(SmtpIpAddress).where(
                SmtpIpAddress.address == address,
                SmtpIpAddress.vps_id == vps.id,
                SmtpIpAddress.status != IpStatus.RELEASED,
            )
        )
    return ip


def helo_name(settings: Settings, address: str) -> str:
    """An IP's HELO and PTR name: ip-127-77-0-5.<vps_hostname_domain>."""
    return f"ip-{address.replace('.', '-').replace(':', '-')}.{settings.vps_hostname_domain}"


async def _ips(session: AsyncSession, vps: VpsInstance) -> list[SmtpIpAddress]:
    """The VPS's IPs in use, its primary address first."""
    ips = list(
        await session.scalars(
            select(SmtpIpAddress)
            .where(SmtpIpAddress.vps_id == vps.id, SmtpIpAddress.status != IpStatus.RELEASED)
            .order_by(SmtpIpAddress.created_at, SmtpIpAddress.address)
        )
    )
    return sorted(ips, key=lambda ip: str(ip.address) != str(vps.primary_ip))


async def _primary_ip(session: AsyncSession, vps: VpsInstance) -> SmtpIpAddress | None:
    ips = await _ips(session, vps)
    return ips[0] if ips and str(ips[0].address) == str(vps.primary_ip) else None


async def _place_accounts(session: AsyncSession, vps: VpsInstance) -> None:
    """The tenant's accounts on no VPS and no server of their own, spread over its IPs."""
    ips = await _ips(session, vps)
    if not ips:
        raise StepFailed("the VPS has no address to send from")
    unplaced = list(
        await session.scalars(
            select(EmailAccount)
            .where(EmailAccount.ip_id.is_(None), EmailAccount.smtp_host.is_(None))
            .order_by(EmailAccount.created_at, EmailAccount.address)
        )
    )
    for n, account in enumerate(unplaced):
        account.ip_id = ips[n % len(ips)].id


async def _served_domains(session: AsyncSession, ips: list[SmtpIpAddress]) -> list[Domain]:
    return list(
        await session.scalars(
            select(Domain)
            .where(
                Domain.id.in_(
                    select(EmailAccount.domain_id).where(
                        EmailAccount.ip_id.in_([ip.id for ip in ips])
                    )
                )
            )
            .order_by(Domain.name)
        )
    )


async def _detach_accounts(
    session: AsyncSession, vps: VpsInstance, ip_ids: list[uuid.UUID]
) -> None:
    """The accounts on these IPs send through the platform relay again (and are polled where
    they were before the VPS: nowhere)."""
    host = vps.smtp_host
    await session.execute(
        update(EmailAccount).where(EmailAccount.ip_id.in_(ip_ids)).values(ip_id=None)
    )
    if host is not None:
        await session.execute(
            update(EmailAccount)
            .where(EmailAccount.smtp_host == host)
            .values(smtp_host=None, smtp_port=None, imap_host=None, imap_port=None)
        )


def _name_records(vps: VpsInstance, ips: list[SmtpIpAddress]) -> list[dns_providers.Record]:
    records = []
    if vps.hostname and vps.primary_ip:
        records.append(dns_providers.Record(vps.hostname, "A", str(vps.primary_ip)))
    records += [
        dns_providers.Record(ip.ptr_hostname, "A", str(ip.address)) for ip in ips if ip.ptr_hostname
    ]
    return records


def _records(records: list[dict[str, Any]]) -> list[dns_providers.Record]:
    return [dns_providers.Record(r["host"], r["type"], r["value"]) for r in records]


def _merged(checked: list[dict[str, Any]], expected: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records to publish now, each with its last check where the record is unchanged."""
    found = {(r["host"], r["type"], r["value"]): r for r in checked}
    return [{**found.get((r["host"], r["type"], r["value"]), r), "kind": r["kind"]}
            for r in expected]  # fmt: skip


def _mailu_secrets(settings: Settings, vps: VpsInstance) -> tuple[str, str]:
    """The VPS's MailU API token and secret key: made once, kept encrypted with the instance."""
    stored = vps.config.get("mailu_secrets")
    if stored:
        blob = vault.decrypt(settings, stored["key_id"], base64.b64decode(stored["blob"]))
        token, secret_key = blob.decode().split(":", 1)
        return token, secret_key
    token, secret_key = token_source.token_urlsafe(32), token_source.token_hex(16)
    key_id, blob = vault.encrypt(settings, f"{token}:{secret_key}".encode())
    vps.config = {
        **vps.config,
        "mailu_secrets": {"key_id": key_id, "blob": base64.b64encode(blob).decode()},
    }
    return token, secret_key


def _password(settings: Settings, account: EmailAccount) -> str:
    """The account's password on its VPS: the one it has, else a new one, stored now."""
    password = accounts.smtp_password(settings, account)
    if password is None:
        password = token_source.token_urlsafe(18)
        account.encryption_key_id, account.smtp_password_encrypted = vault.encrypt(
            settings, password.encode()
        )
    return password


def _instance(vps: VpsInstance) -> hosting.Instance:
    return hosting.Instance(
        provider_id=vps.provider_id or "", label=_label(vps), state="ACTIVE",
        primary_ip=str(vps.primary_ip) if vps.primary_ip else None, region=vps.region or "",
    )  # fmt: skip


def _without(config: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in keys}


def _label(vps: VpsInstance) -> str:
    return f"pm-{vps.id}"


def _region(provider: hosting.HostingProvider, raw: str | None) -> str:
    region = (raw or "").strip().lower() or provider.default_region()
    if region not in provider.regions():
        raise DomainError(
            "REGION_UNKNOWN",
            f"{provider.name} has no region {region[:64]!r}; "
            f"regions: {', '.join(sorted(provider.regions()))}.",
            "region",
        )
    return region


def _now() -> datetime:
    return datetime.now(UTC)
