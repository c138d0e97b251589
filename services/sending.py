"""Campaign sending: planning send jobs inside the sending window, and the send job itself
(render, build, sign, deliver over SMTP, record the outcome, plan the follow-up).

Planning puts step 1 of every not-yet-contacted lead on the queue, round robin over the
campaign's usable accounts, each account sending at most its daily limit per local day with
`send_spacing_seconds` between its sends, always inside the window. Step N+1 is planned by the
send of step N, `delay_days` later, from the same account (so it threads), and never for a lead
who replied, bounced, complained or unsubscribed.
"""

from __future__ import annotations

import secrets
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import aiosmtplib
from redis.asyncio import Redis
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from jobs.queue import enqueue, enqueue_many
from jobs.registry import DeferJob
from models.campaigns import (
    Campaign,
    CampaignAccount,
    CampaignSequenceStep,
    CampaignStatus,
    Lead,
    LeadStatus,
    Suppression,
)
from models.content import EmailEvent, EmailMessage, EventKind, MessageStatus
from models.infrastructure import AccountStatus, Domain, EmailAccount, SmtpIpAddress
from models.sessions import Database
from penguinmails.settings import Settings
from services import accounts, inbound, ratelimit, smtp, templates, tracking, usage
from services.errors import DomainError

SEND_KIND = "send_step"
SEND_PRIORITY = 100
PLAN_PRIORITY = 50
ACCOUNT_PAUSED_RETRY_SECONDS = 900
USABLE_ACCOUNTS = (AccountStatus.ACTIVE, AccountStatus.WARMING_UP)
SENDABLE_LEADS = (LeadStatus.ACTIVE, LeadStatus.CONTACTED)


# --- the sending window ----------------------------------------------------------------------


def next_open(campaign: Campaign, at: datetime) -> datetime:
    """The first instant at or after `at` inside the campaign's window (its time zone, ISO
    weekdays, [start_hour, end_hour) local time). DST gaps and repeats are the zone's."""
    zone = ZoneInfo(campaign.timezone)
    local = at.astimezone(zone)
    for _ in range(8 * 24):  # at most a week of hours ahead
        if local.isoweekday() in campaign.window_days:
            start = local.replace(hour=campaign.start_hour, minute=0, second=0, microsecond=0)
            end = _local_hour(local, campaign.end_hour)
            if local < start:
                local = start
            if local < end:
                return local.astimezone(UTC)
        local = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    raise DomainError("INVALID_WINDOW", "the sending window never opens")


def _local_hour(local: datetime, hour: int) -> datetime:
    if hour == 24:
        return (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return local.replace(hour=hour, minute=0, second=0, microsecond=0)


def slots(campaign: Campaign, start: datetime, daily_limit: int) -> Iterator[datetime]:
    """Send times of one account: spaced, capped per local day, inside the window."""
    zone = ZoneInfo(campaign.timezone)
    spacing = timedelta(seconds=campaign.send_spacing_seconds)
    at, day, sent = next_open(campaign, start), None, 0
    while True:
        local_day = at.astimezone(zone).date()
        if local_day != day:
            day, sent = local_day, 0
        if sent >= daily_limit:
            tomorrow = datetime.combine(local_day + timedelta(days=1), datetime.min.time(), zone)
            at = next_open(campaign, tomorrow)
            continue
        yield at
        sent += 1
        at = next_open(campaign, at + spacing)


# --- planning --------------------------------------------------------------------------------


async def plan_campaign(
    session: AsyncSession, campaign_id: uuid.UUID, now: datetime | None = None
) -> int:
    """Queues step 1 for every lead not yet contacted; returns how many sends it planned.
    Re-planning is harmless: a send job's idempotency key is its campaign, lead and step."""
    now = now or datetime.now(UTC)
    campaign = await session.get(Campaign, campaign_id, with_for_update=True)
    if campaign is None or campaign.status != CampaignStatus.RUNNING:
        return 0
    senders = list(
        await session.scalars(
            select(EmailAccount)
            .join(CampaignAccount, CampaignAccount.account_id == EmailAccount.id)
            .where(
                CampaignAccount.campaign_id == campaign_id, EmailAccount.status.in_(USABLE_ACCOUNTS)
            )
            .order_by(CampaignAccount.position, EmailAccount.address)
        )
    )
    if not senders:
        return 0
    leads = list(
        await session.scalars(
            select(Lead.id)
            .where(
                Lead.campaign_id == campaign_id,
                Lead.status == LeadStatus.ACTIVE,
                Lead.current_step == 0,
            )
            .order_by(Lead.id)
        )
    )
    used = await usage.usage(session, campaign.tenant_id)
    if len(leads) > used.emails_left:
        leads = leads[: used.emails_left]
        campaign.status_reason = f"{used.emails_left} sends left this period on the plan; the rest wait for the next period"
    per_account = campaign.daily_limit or None
    streams = [
        slots(campaign, now, min(a.daily_limit, per_account) if per_account else a.daily_limit)
        for a in senders
    ]
    payloads, run_at_by_account = [], {}
    for n, lead_id in enumerate(leads):
        index = n % len(senders)
        account = senders[index]
        at = next(streams[index])
        payloads.append(
            (
                account.id,
                at,
                {
                    "campaign_id": str(campaign_id),
                    "lead_id": str(lead_id),
                    "step": 1,
                    "account_id": str(account.id),
                },
            )
        )
        run_at_by_account[account.id] = at
    planned = 0
    # One statement per distinct run_at would be too many: group sends by run_at second.
    by_time: dict[datetime, list[dict]] = {}
    for _, at, payload in payloads:
        by_time.setdefault(at, []).append(payload)
    for at, group in by_time.items():
        ids = await enqueue_many(
            session,
            SEND_KIND,
            group,
            tenant_id=campaign.tenant_id,
            priority=SEND_PRIORITY,
            run_at=at,
            campaign_id=campaign_id,
            idempotency_keys=[send_key(p["campaign_id"], p["lead_id"], 1) for p in group],
        )
        planned += len(ids)
    return planned


def send_key(campaign_id: str, lead_id: str, step: int) -> str:
    return f"send:{campaign_id}:{lead_id}:{step}"


# --- the send job ----------------------------------------------------------------------------


async def _take_rate_slots(redis: Redis, settings: Settings, prepared: Prepared) -> None:
    """One slot of the account's and of the sending IP's per-minute rate, or DeferJob."""
    wait = await ratelimit.acquire(
        redis, f"rate:account:{prepared.account_id}", settings.account_sends_per_minute, 60
    )
    if not wait:
        wait = await ratelimit.acquire(
            redis, f"rate:ip:{prepared.ip_key}", settings.ip_sends_per_minute, 60
        )
    if wait:
        raise DeferJob(wait, "send rate full")


async def _server_failed(
    db: Database,
    settings: Settings,
    redis: Redis,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    error: str,
) -> None:
    """Counts consecutive failures of the account's server (reset by any success); at the
    threshold the account is paused with the reason, and its sends wait (see _prepare)."""
    key = f"smtp:failures:{account_id}"
    failures = await redis.incr(key)
    await redis.expire(key, 3600)
    if failures >= settings.account_failures_before_pause:
        async with db.tenant_session(tenant_id) as session:
            await session.execute(
                update(EmailAccount)
                .where(EmailAccount.id == account_id, EmailAccount.status.in_(USABLE_ACCOUNTS))
                .values(
                    status=AccountStatus.PAUSED,
                    status_reason=f"its SMTP server failed {failures} times in a row: {error}"[
                        :500
                    ],
                )
            )


@dataclass
class Prepared:
    """Everything the SMTP transaction needs, decided and recorded before it starts."""

    message_id: uuid.UUID
    sender: str
    recipient: str
    data: bytes
    server: smtp.Server
    account_id: uuid.UUID
    ip_key: str  # the dedicated IP, or the relay the account sends through


async def send_step(
    db: Database, settings: Settings, redis: Redis, tenant_id: uuid.UUID, payload: dict
) -> str:
    """Sends one step to one lead; returns what happened (sent, bounced, skipped: why).
    Raises DeferJob when the account's or the IP's send rate is full."""
    async with db.tenant_session(tenant_id) as session:
        prepared = await _prepare(session, settings, payload)
    if isinstance(prepared, str):
        return prepared
    await _take_rate_slots(redis, settings, prepared)  # the message stays PENDING if deferred
    try:
        reply = await smtp.send(prepared.server, prepared.sender, prepared.recipient, prepared.data)
    except (
        aiosmtplib.SMTPRecipientRefused,
        aiosmtplib.SMTPDataError,
        aiosmtplib.SMTPSenderRefused,
    ) as e:
        if 500 <= e.code < 600:  # recorded as a hard-bounce DSN would be
            message = await tracking.find_message(db, prepared.message_id)
            details = {"hard": True, "status": str(e.code), "diagnostic": e.message[:500]}
            await inbound.record_hard_bounce(db, redis, message, details)
            return "bounced"
        await _server_failed(
            db, settings, redis, tenant_id, prepared.account_id, f"{e.code} {e.message}"
        )
        raise  # 4xx: the queue retries with backoff
    except (aiosmtplib.SMTPException, OSError) as e:
        await _server_failed(db, settings, redis, tenant_id, prepared.account_id, str(e))
        raise
    await redis.delete(f"smtp:failures:{prepared.account_id}")
    async with db.tenant_session(tenant_id) as session:
        await _record_sent(session, prepared.message_id, str(reply))
    return "sent"


async def _prepare(session: AsyncSession, settings: Settings, payload: dict) -> Prepared | str:
    from services import dkim_signing, mime, tracking

    campaign = await session.get(Campaign, uuid.UUID(payload["campaign_id"]))
    lead = await session.get(Lead, uuid.UUID(payload["lead_id"]))
    account = await session.get(EmailAccount, uuid.UUID(payload["account_id"]))
    position = int(payload["step"])
    if campaign is None or lead is None or account is None:
        return "skipped: gone"
    if campaign.status != CampaignStatus.RUNNING:
        return f"skipped: campaign {campaign.status.value}"
    if account.status not in USABLE_ACCOUNTS:  # paused (e.g. its server kept failing)
        raise DeferJob(ACCOUNT_PAUSED_RETRY_SECONDS, f"account {account.status.value}")
    if lead.status not in SENDABLE_LEADS:
        return f"skipped: lead {lead.status.value}"
    if await session.scalar(select(Suppression.id).where(Suppression.email == lead.email)):
        return "skipped: suppressed"
    step = await session.scalar(
        select(CampaignSequenceStep).where(
            CampaignSequenceStep.campaign_id == campaign.id,
            CampaignSequenceStep.position == position,
        )
    )
    domain = await session.get(Domain, account.domain_id)
    if step is None or domain is None:
        return "skipped: step or domain gone"

    key = send_key(str(campaign.id), str(lead.id), position)
    message = await session.scalar(select(EmailMessage).where(EmailMessage.idempotency_key == key))
    if message is not None and message.status != MessageStatus.PENDING:
        return f"skipped: already {message.status.value}"  # a retried job never sends twice
    if message is None:
        token = secrets.token_hex(16)
        message = EmailMessage(
            tenant_id=campaign.tenant_id,
            campaign_id=campaign.id,
            lead_id=lead.id,
            account_id=account.id,
            step_position=position,
            idempotency_key=key,
            message_id_header=f"<{uuid.uuid4().hex}@{domain.name}>",
            verp_token=token,
            from_address=account.address,
            to_address=lead.email,
            subject="",
        )
        session.add(message)
        await session.flush()

    bounce_host = f"{settings.return_path_label}.{domain.name}"
    unsubscribe = tracking.unsubscribe_url(settings, message.id)
    rendered = templates.render(
        step.subject,
        step.html,
        step.text,
        {
            "email": lead.email,
            "first_name": lead.first_name,
            "last_name": lead.last_name,
            "company": lead.company,
            "fields": lead.fields,
            "sender_name": account.display_name,
            "sender_email": account.address,
            "unsubscribe_url": unsubscribe,
        },
    )
    thread = [lead.first_message_id] if position > 1 and lead.first_message_id else []
    data = mime.build(
        mime.OutgoingMessage(
            from_address=account.address,
            from_name=account.display_name,
            to_address=lead.email,
            subject=rendered.subject,
            html=rendered.html,
            text=rendered.text,
            message_id=message.message_id_header,
            return_path=f"bounce+{message.verp_token}@{bounce_host}",
            list_unsubscribe_url=unsubscribe,
            list_unsubscribe_mailto=f"mailto:unsubscribe+{message.verp_token}@{bounce_host}",
            in_reply_to=thread[0] if thread else None,
            references=thread,
            open_url=tracking.open_url(settings, message.id),
            click_url=lambda url: _tracked_link(settings, message.id, url),
        )
    )
    signer = dkim_signing.signer_for(settings, domain)
    if signer is not None:
        data = signer.sign(data)
    message.subject = rendered.subject
    message.body_compressed = zlib.compress(data)
    server = _server(settings, account)
    ip = await session.get(SmtpIpAddress, account.ip_id) if account.ip_id else None
    return Prepared(
        message_id=message.id,
        sender=f"bounce+{message.verp_token}@{bounce_host}",
        recipient=lead.email,
        data=data,
        server=server,
        account_id=account.id,
        ip_key=str(ip.address) if ip else f"relay:{server.host}:{server.port}",
    )


def _tracked_link(settings: Settings, message_id: uuid.UUID, url: str) -> str:
    """The signed click URL, or the link itself when it cannot be tracked (no host, too long)."""
    from services import tracking

    try:
        return tracking.click_url(settings, message_id, url)
    except ValueError:
        return url


def _server(settings: Settings, account: EmailAccount) -> smtp.Server:
    if account.smtp_host:
        return smtp.Server(
            account.smtp_host,
            account.smtp_port or 587,
            account.smtp_username or account.address,
            accounts.smtp_password(settings, account),
        )
    relay_password = settings.smtp_relay_password
    return smtp.Server(
        settings.smtp_relay_host,
        settings.smtp_relay_port,
        settings.smtp_relay_username,
        relay_password.get_secret_value() if relay_password else None,
        settings.smtp_relay_starttls,
    )


async def _record_sent(session: AsyncSession, message_id: uuid.UUID, reply: str) -> None:
    message = await session.get(EmailMessage, message_id, with_for_update=True)
    message.status, message.sent_at, message.smtp_response = (
        MessageStatus.SENT,
        func.now(),
        reply[:500],
    )
    lead = await session.get(Lead, message.lead_id, with_for_update=True)
    lead.current_step = max(lead.current_step, message.step_position)
    lead.last_sent_at = func.now()
    if message.step_position == 1:
        lead.first_message_id = message.message_id_header
    if lead.status == LeadStatus.ACTIVE:
        lead.status = LeadStatus.CONTACTED
    session.add(_event(message, EventKind.SENT))
    await _plan_follow_up(session, message, lead)


async def _plan_follow_up(session: AsyncSession, message: EmailMessage, lead: Lead) -> None:
    campaign = await session.get(Campaign, message.campaign_id)
    following = await session.scalar(
        select(CampaignSequenceStep).where(
            CampaignSequenceStep.campaign_id == campaign.id,
            CampaignSequenceStep.position == message.step_position + 1,
        )
    )
    if following is None:
        lead.status = LeadStatus.FINISHED
        return
    at = next_open(campaign, datetime.now(UTC) + timedelta(days=following.delay_days))
    await enqueue(
        session,
        SEND_KIND,
        {
            "campaign_id": str(campaign.id),
            "lead_id": str(lead.id),
            "step": following.position,
            "account_id": str(message.account_id),
        },
        tenant_id=campaign.tenant_id,
        priority=SEND_PRIORITY,
        run_at=at,
        campaign_id=campaign.id,
        idempotency_key=send_key(str(campaign.id), str(lead.id), following.position),
    )


def _event(message: EmailMessage, kind: EventKind, **extra) -> EmailEvent:
    return EmailEvent(
        tenant_id=message.tenant_id,
        kind=kind,
        message_id=message.id,
        campaign_id=message.campaign_id,
        lead_id=message.lead_id,
        account_id=message.account_id,
        step_position=message.step_position,
        **extra,
    )


async def plan_running_campaigns(session: AsyncSession, now: datetime | None = None) -> int:
    """Queues a planning job for every running campaign (leads imported after launch, accounts
    back from a pause). Runs on a system session; one job per campaign per minute at most."""
    now = now or datetime.now(UTC)
    minute = now.strftime("%Y%m%d%H%M")
    queued = 0
    for campaign_id, tenant_id in await session.execute(
        select(Campaign.id, Campaign.tenant_id).where(Campaign.status == CampaignStatus.RUNNING)
    ):
        await enqueue(
            session,
            "plan_campaign",
            {"campaign_id": str(campaign_id)},
            tenant_id=tenant_id,
            priority=PLAN_PRIORITY,
            campaign_id=campaign_id,
            idempotency_key=f"plan_campaign:{campaign_id}:{minute}",
        )
        queued += 1
    return queued
