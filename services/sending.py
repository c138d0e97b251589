"""Campaign sending: planning send jobs inside the sending window, and the send job itself
(render, build, sign, deliver over SMTP, record the outcome, plan the follow-up).

Planning puts step 1 of every not-yet-contacted lead on the queue, round robin over the
campaign's usable accounts, each account sending at most its daily limit per local day with
`send_spacing_seconds` between its sends, always inside the window. Step N+1 is planned by the
send of step N, `delay_days` later, from the same account (so it threads), and never for a lead
who replied, bounced, complained or unsubscribed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import aiosmtplib
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from jobs.queue import enqueue, enqueue_many
from jobs.registry import DeferJob, PermanentJobError
from models.campaigns import (
    Campaign,
    CampaignAccount,
    CampaignSequenceStep,
    CampaignStatus,
    Lead,
    LeadStatus,
    Suppression,
)
from models.content import EmailEvent, EmailMessage, MessageStatus
from models.infrastructure import AccountStatus, Domain, EmailAccount, SmtpIpAddress
from models.sessions import Database, driver_connection
from models.sqlfiles import statement
from penguinmails.settings import Settings
from services import accounts, inbound, ratelimit, smtp, statistics, templates, tracking, usage
from services.errors import DomainError

log = logging.getLogger("penguinmails.sending")

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
    payloads, times = [], []
    for n, lead_id in enumerate(leads):
        account = senders[n % len(senders)]
        times.append(next(streams[n % len(senders)]))
        payloads.append(
            {
                "campaign_id": str(campaign_id),
                "lead_id": str(lead_id),
                "step": 1,
                "account_id": str(account.id),
            }
        )
    planned = len(
        await enqueue_many(
            session,
            SEND_KIND,
            payloads,
            tenant_id=campaign.tenant_id,
            priority=SEND_PRIORITY,
            run_at=times,
            campaign_id=campaign_id,
            idempotency_keys=[send_key(p["campaign_id"], p["lead_id"], 1) for p in payloads],
        )
    )
    if planned >= statistics.BULK_ROWS:
        # Thousands of messages are about to be written: once the first are, the planner must
        # know, or it reads the tenant's messages to find one by its key.
        await statistics.refresh_later(
            session, campaign.tenant_id, "content.email_messages", after_seconds=5
        )
    return planned


def send_key(campaign_id: str, lead_id: str, step: int) -> str:
    return f"send:{campaign_id}:{lead_id}:{step}"


# --- the send job ----------------------------------------------------------------------------
#
# A worker gets send jobs in batches (one Dramatiq message holds up to queue_jobs_per_message),
# and sends a batch as one: its reads, its rate-limit slots and each of its writes are one
# statement or round trip for the lot, and its SMTP transactions run side by side over the
# pooled connections. Per tenant of the batch:
#
#   1. read the campaigns, leads, accounts, steps, domains, IPs, suppressions and existing
#      messages the jobs name (OLTP and content tiers);
#   2. take the account's and the IP's sliding-window slot for each send (one Redis call); a
#      send without a slot is deferred, without using an attempt;
#   3. render, build and DKIM-sign each message, and commit them as SENDING (claim_messages);
#   4. the SMTP transactions;
#   5. commit SENT with the SENT events (mark_sent), then the leads (leads_sent), then the
#      follow-ups (enqueue), then publish the events.
#
# A message is never sent twice: a retry finds it SENDING or SENT and does not send it again.
# SENT without its lead and follow-up (the worker died between step 5's commits) is completed
# by the retry; SENDING (the worker died during the SMTP transaction, so whether the server
# said 250 is unknown) is taken as sent, and says so in smtp_response and in its event.

UNKNOWN_OUTCOME = "outcome unknown: the worker stopped during the SMTP transaction; not resent"


@dataclass
class Send:
    """One send job of a batch, and what the batch decided for it."""

    tenant_id: uuid.UUID
    campaign_id: uuid.UUID
    lead_id: uuid.UUID
    account_id: uuid.UUID
    step: int
    attempt: int  # the job's: a first attempt has no message from an earlier one
    result: str | BaseException | None = None
    message: EmailMessage | None = None  # the row being sent or completed
    data: bytes = b""
    server: smtp.Server | None = None
    sender: str = ""  # the VERP return path
    claimed: bool = False  # its message committed SENDING by this attempt
    ip_key: str = ""
    reply: str = ""

    @property
    def key(self) -> str:
        return send_key(str(self.campaign_id), str(self.lead_id), self.step)


@dataclass
class World:
    """Everything a tenant's sends refer to, read in one pass."""

    campaigns: dict[uuid.UUID, Campaign]
    leads: dict[uuid.UUID, Lead]
    accounts: dict[uuid.UUID, EmailAccount]
    steps: dict[tuple[uuid.UUID, int], CampaignSequenceStep]
    domains: dict[uuid.UUID, Domain]
    ips: dict[uuid.UUID, SmtpIpAddress]
    suppressed: set[str]
    messages: dict[str, EmailMessage]  # by idempotency key


async def send_batch(
    db: Database, settings: Settings, redis: Redis, jobs: list[tuple[uuid.UUID, dict, int]]
) -> list[str | BaseException]:
    """Sends a batch of (tenant, payload, attempt) send jobs; returns, in order, what happened
    to each:
    "sent", "bounced", "skipped: why", or the exception its job ends with (DeferJob when a rate
    is full or the account is paused; a 4xx or connection error, which the queue retries)."""
    sends = [
        Send(
            tenant_id=tenant_id,
            campaign_id=uuid.UUID(payload["campaign_id"]),
            lead_id=uuid.UUID(payload["lead_id"]),
            account_id=uuid.UUID(payload["account_id"]),
            step=int(payload["step"]),
            attempt=attempt,
        )
        for tenant_id, payload, attempt in jobs
    ]
    by_tenant: dict[uuid.UUID, list[Send]] = {}
    for send in sends:
        by_tenant.setdefault(send.tenant_id, []).append(send)
    failures = await asyncio.gather(
        *(_send_for_tenant(db, settings, redis, t, group) for t, group in by_tenant.items()),
        return_exceptions=True,
    )
    for group, failure in zip(by_tenant.values(), failures, strict=True):
        if isinstance(failure, Exception):  # (a database or Redis error): that tenant's jobs fail
            log.warning("send batch of tenant %s failed", group[0].tenant_id, exc_info=failure)
            for send in group:  # a sent one, too: its retry completes what was left undone
                if send.result is None or send.result == "sent":
                    send.result = failure
        elif isinstance(failure, BaseException):
            raise failure
    return [send.result for send in sends]


async def _send_for_tenant(
    db: Database, settings: Settings, redis: Redis, tenant_id: uuid.UUID, sends: list[Send]
) -> None:
    world = await _read(db, tenant_id, sends)
    fresh, finish = [], []
    for send in sends:
        verdict = _check(world, send)
        if verdict == "send":
            fresh.append(send)
        elif verdict == "finish":
            finish.append(send)
        else:
            send.result = verdict
    fresh = await _take_rate_slots(redis, settings, _route(settings, world, fresh))
    fresh = _build_all(settings, world, fresh)
    by_server: dict[smtp.Server, list[Send]] = {}
    for send in fresh:
        by_server.setdefault(send.server, []).append(send)
    await asyncio.gather(
        *(_send_through(db, tenant_id, server, group) for server, group in by_server.items())
    )

    sent = [s for s in fresh if s.result == "sent"]
    try:
        await _record_failures(db, settings, redis, tenant_id, fresh)
    finally:  # the successes are recorded even when recording a failure failed
        await _record_sent(db, redis, settings, world, tenant_id, sent + finish)
    for send in finish:
        send.result = "sent"


async def _read(db: Database, tenant_id: uuid.UUID, sends: list[Send]) -> World:
    campaign_ids = {s.campaign_id for s in sends}
    async with db.tenant_session(tenant_id) as session:
        campaigns = await _by_id(session, Campaign, campaign_ids)
        leads = await _by_id(session, Lead, {s.lead_id for s in sends})
        accounts = await _by_id(session, EmailAccount, {s.account_id for s in sends})
        steps = await session.scalars(
            select(CampaignSequenceStep).where(CampaignSequenceStep.campaign_id.in_(campaign_ids))
        )
        domains = await _by_id(session, Domain, {a.domain_id for a in accounts.values()})
        ips = await _by_id(session, SmtpIpAddress, {a.ip_id for a in accounts.values()} - {None})
        emails = [lead.email for lead in leads.values()]
        suppressed = set(
            await session.scalars(select(Suppression.email).where(Suppression.email.in_(emails)))
        )
    # Only a retried job can find its message: a first attempt skips the read (and a message
    # that exists all the same is refused by claim_messages, never sent twice).
    retried = [s.key for s in sends if s.attempt > 1]
    messages = {}
    if retried:
        async with db.tenant_session(tenant_id, tier="content") as session:
            found = await session.scalars(
                select(EmailMessage).where(
                    EmailMessage.tenant_id == tenant_id, EmailMessage.idempotency_key.in_(retried)
                )
            )
            messages = {m.idempotency_key: m for m in found}
    return World(
        campaigns, leads, accounts, {(s.campaign_id, s.position): s for s in steps}, domains,
        ips, suppressed, messages,
    )  # fmt: skip


async def _by_id(session: AsyncSession, model, ids: set) -> dict:
    if not ids:
        return {}
    return {row.id: row for row in await session.scalars(select(model).where(model.id.in_(ids)))}


def _check(world: World, send: Send) -> str | BaseException:
    """ "send", "finish" (sent before, its bookkeeping to complete), or the job's result."""
    campaign = world.campaigns.get(send.campaign_id)
    lead = world.leads.get(send.lead_id)
    account = world.accounts.get(send.account_id)
    message = world.messages.get(send.key)
    send.message = message
    if message is not None and message.status in (MessageStatus.SENT, MessageStatus.SENDING):
        if message.status == MessageStatus.SENDING:
            send.reply = UNKNOWN_OUTCOME
        return "finish"  # a retried job never sends twice
    if message is not None and message.status != MessageStatus.PENDING:
        return f"skipped: already {message.status.value}"
    if campaign is None or lead is None or account is None:
        return "skipped: gone"
    if campaign.status != CampaignStatus.RUNNING:
        return f"skipped: campaign {campaign.status.value}"
    if account.status not in USABLE_ACCOUNTS:  # paused (e.g. its server kept failing)
        return DeferJob(ACCOUNT_PAUSED_RETRY_SECONDS, f"account {account.status.value}")
    if lead.status not in SENDABLE_LEADS:
        return f"skipped: lead {lead.status.value}"
    if lead.email in world.suppressed:
        return "skipped: suppressed"
    if (send.campaign_id, send.step) not in world.steps or account.domain_id not in world.domains:
        return "skipped: step or domain gone"
    return "send"


def _route(settings: Settings, world: World, sends: list[Send]) -> list[Send]:
    """The server (and the IP or relay whose rate applies) of each send, worked out once per
    account; returns the sends that have one. An account whose server cannot be worked out (its
    password cannot be decrypted) fails its own sends."""
    routes: dict[uuid.UUID, tuple[smtp.Server, str] | Exception] = {}
    for account in {world.accounts[send.account_id] for send in sends}:
        try:
            server = _server(settings, account)
        except Exception as e:
            routes[account.id] = e
            continue
        ip = world.ips.get(account.ip_id) if account.ip_id else None
        routes[account.id] = server, str(ip.address) if ip else f"relay:{server.host}:{server.port}"
    for send in sends:
        route = routes[send.account_id]
        if isinstance(route, Exception):
            send.result = route
        else:
            send.server, send.ip_key = route
    return [send for send in sends if send.result is None]


async def _take_rate_slots(redis: Redis, settings: Settings, sends: list[Send]) -> list[Send]:
    """One slot of the account's and of its sending IP's per-minute rate for each send, in one
    Redis call; a send that gets none is deferred until its window has room."""
    if not sends:
        return []
    waits = await ratelimit.acquire_many(
        redis,
        [
            [
                (f"rate:account:{send.account_id}", settings.account_sends_per_minute),
                (f"rate:ip:{send.ip_key}", settings.ip_sends_per_minute),
            ]
            for send in sends
        ],
        60,
    )
    for send, wait in zip(sends, waits, strict=True):
        if wait:
            send.result = DeferJob(wait, "send rate full")
    return [send for send, wait in zip(sends, waits, strict=True) if not wait]


def _build_all(settings: Settings, world: World, sends: list[Send]) -> list[Send]:
    """Builds each message; returns the sends that were built. A message that cannot be built
    (a template that fails on this lead's data) fails its own job, for good: building it again
    would fail the same way."""
    for send in sends:
        try:
            _build(settings, world, send)
        except Exception as e:
            send.result = PermanentJobError(f"the message could not be built: {e!r}"[:500])
    return [send for send in sends if send.result is None]


async def _send_through(
    db: Database, tenant_id: uuid.UUID, server: smtp.Server, sends: list[Send]
) -> None:
    """The sends to one server, in waves as large as the connections free at the moment: a
    wave's messages are claimed (committed SENDING) only once a connection is held for each, so
    a message is SENDING only while its own SMTP transaction can be under way."""
    pool = smtp.pool_for(server)
    async with pool.turn:
        await _send_in_waves(db, tenant_id, pool, sends)


async def _send_in_waves(
    db: Database, tenant_id: uuid.UUID, pool: smtp.ConnectionPool, sends: list[Send]
) -> None:
    waiting = sends
    while waiting:
        connected = False
        try:
            async with pool.lease(len(waiting)) as connections:
                connected = True
                wave, waiting = waiting[: len(connections)], waiting[len(connections) :]
                claimed = await _claim(db, tenant_id, wave)
                await asyncio.gather(*map(_deliver, claimed, connections))
        except (aiosmtplib.SMTPException, OSError) as e:
            if connected:  # (the database's): the tenant's sends of the batch fail
                raise
            for send in waiting:  # no connection to the server: a server failure each
                send.result = e
            return


async def _claim(db: Database, tenant_id: uuid.UUID, sends: list[Send]) -> list[Send]:
    """Commits the messages as SENDING; returns the sends that may go out. A message that
    exists from an earlier attempt but was not looked up (a first attempt: see _read) is left
    alone, and its job is retried, which then looks it up."""
    columns = _columns(
        sends,
        lambda s: (
            s.message.id, s.campaign_id, s.lead_id, s.account_id, s.step, s.key,
            s.message.message_id_header, s.message.verp_token, s.message.from_address,
            s.message.to_address, s.message.subject, zlib.compress(s.data, 1),
        ),
    )  # fmt: skip
    async with db.tenant_session(tenant_id, tier="content") as session:
        conn = await driver_connection(session)
        rows = await conn.fetch(statement("sending.sql", "claim_messages"), tenant_id, *columns)
    claimed = {row["id"] for row in rows}
    for send in sends:
        send.claimed = send.message.id in claimed
        if not send.claimed:
            send.result = MessageExists(f"message {send.key} exists from an earlier attempt")
    return [send for send in sends if send.claimed]


class MessageExists(Exception):
    """A first attempt found its message written already: retried, it is looked up."""


def _columns(items: list, row) -> list[list]:
    """Rows (as `row` makes them) turned into one list per column, for unnest()."""
    return [list(column) for column in zip(*(row(item) for item in items), strict=True)]


def _build(settings: Settings, world: World, send: Send) -> None:
    """Renders, builds and signs the message; a PENDING row's id and tokens are kept."""
    from services import dkim_signing, mime

    campaign, lead = world.campaigns[send.campaign_id], world.leads[send.lead_id]
    account = world.accounts[send.account_id]
    domain, step = world.domains[account.domain_id], world.steps[(send.campaign_id, send.step)]
    message = send.message or EmailMessage(
        id=uuid.uuid4(),
        tenant_id=campaign.tenant_id,
        campaign_id=send.campaign_id,
        lead_id=send.lead_id,
        account_id=send.account_id,
        step_position=send.step,
        idempotency_key=send.key,
        message_id_header=f"<{uuid.uuid4().hex}@{domain.name}>",
        verp_token=secrets.token_hex(16),
        from_address=account.address,
        to_address=lead.email,
    )
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
    thread = [lead.first_message_id] if send.step > 1 and lead.first_message_id else []
    return_path = f"bounce+{message.verp_token}@{bounce_host}"
    data = mime.build(
        mime.OutgoingMessage(
            from_address=account.address,
            from_name=account.display_name,
            to_address=lead.email,
            subject=rendered.subject,
            html=rendered.html,
            text=rendered.text,
            message_id=message.message_id_header,
            return_path=return_path,
            list_unsubscribe_url=unsubscribe,
            list_unsubscribe_mailto=f"mailto:unsubscribe+{message.verp_token}@{bounce_host}",
            in_reply_to=thread[0] if thread else None,
            references=thread,
            open_url=tracking.open_url(settings, message.id),
            click_url=lambda url: _tracked_link(settings, message.id, url),
        )
    )
    signer = dkim_signing.signer_for(settings, domain)
    message.subject = rendered.subject
    send.message, send.sender = message, return_path
    send.data = signer.sign(data) if signer is not None else data


async def _deliver(send: Send, connection: aiosmtplib.SMTP) -> None:
    """One SMTP transaction on a leased connection: "sent" with the reply, or the exception
    (anything at all: the job is retried) on the send, and the connection closed."""
    try:
        reply = await smtp.transact(connection, send.sender, send.message.to_address, send.data)
        send.reply, send.result = str(reply), "sent"
    except Exception as e:
        connection.close()
        send.result = e


async def _record_sent(
    db: Database,
    redis: Redis,
    settings: Settings,
    world: World,
    tenant_id: uuid.UUID,
    sends: list[Send],
) -> None:
    """SENT and its event, then the leads, then the follow-ups: each a statement for the batch,
    each safe to run again (a retry completes what a dead worker left half done)."""
    if not sends:
        return
    async with db.tenant_session(tenant_id, tier="content") as session:
        conn = await driver_connection(session)
        rows = await conn.fetch(
            statement("sending.sql", "mark_sent"),
            *_columns(
                sends,
                lambda s: (
                    s.message.id,
                    s.reply[:500],
                    json.dumps({"assumed": True} if s.reply == UNKNOWN_OUTCOME else {}),
                ),
            ),
        )
    events = [EmailEvent(**dict(row)) for row in rows]
    leads = _columns(
        sends,
        lambda s: (
            s.lead_id, s.step, s.message.message_id_header,
            (s.campaign_id, s.step + 1) not in world.steps,
        ),
    )  # fmt: skip
    async with db.tenant_session(tenant_id) as session:
        conn = await driver_connection(session)
        statuses = dict(await conn.fetch(statement("sending.sql", "leads_sent"), *leads))
    following = [s for s in sends if statuses.get(s.lead_id) == LeadStatus.CONTACTED.value]
    async with db.tenant_session(tenant_id, tier="queue") as session:
        await _plan_follow_ups(session, world, following)
    await tracking.publish(redis, events)
    try:  # the server worked: its run of failures is over
        await redis.delete(*(f"smtp:failures:{s.account_id}" for s in sends))
    except RedisError:
        log.warning("could not reset the failure counts of %d sends' accounts", len(sends))


async def _plan_follow_ups(session: AsyncSession, world: World, sends: list[Send]) -> None:
    """The next step of each lead, `delay_days` after now, inside the window, from the same
    account (so it threads). Idempotent by the job's key."""
    now = datetime.now(UTC)
    by_campaign: dict[uuid.UUID, list[tuple[Send, int, datetime]]] = {}
    for send in sends:
        campaign = world.campaigns.get(send.campaign_id)
        following = world.steps.get((send.campaign_id, send.step + 1))
        if campaign is None or following is None:
            continue
        at = next_open(campaign, now + timedelta(days=following.delay_days))
        by_campaign.setdefault(campaign.id, []).append((send, following.position, at))
    for campaign_id, group in by_campaign.items():
        await enqueue_many(
            session,
            SEND_KIND,
            [
                {
                    "campaign_id": str(campaign_id),
                    "lead_id": str(s.lead_id),
                    "step": position,
                    "account_id": str(s.account_id),
                }
                for s, position, _ in group
            ],
            tenant_id=world.campaigns[campaign_id].tenant_id,
            priority=SEND_PRIORITY,
            run_at=[at for _, _, at in group],
            campaign_id=campaign_id,
            idempotency_keys=[
                send_key(str(campaign_id), str(s.lead_id), position) for s, position, _ in group
            ],
        )


async def _record_failures(
    db: Database, settings: Settings, redis: Redis, tenant_id: uuid.UUID, sends: list[Send]
) -> None:
    """5xx at RCPT/DATA: a hard bounce, recorded as a DSN would be. 4xx and connection errors:
    the message back to PENDING for the queue's retry, and the account's server one failure
    closer to being paused."""
    bounced = [s for s in sends if s.claimed and _refused(s.result) and 500 <= s.result.code < 600]
    for send in bounced:
        error = send.result
        details = {"hard": True, "status": str(error.code), "diagnostic": error.message[:500]}
        await inbound.record_hard_bounce(db, redis, send.message, details)
        send.result = "bounced"
    released = [s for s in sends if s.claimed and isinstance(s.result, Exception)]
    if released:
        async with db.tenant_session(tenant_id, tier="content") as session:
            conn = await driver_connection(session)
            await conn.execute(
                statement("sending.sql", "release_messages"),
                *_columns(released, lambda s: (s.message.id, _describe(s.result)[:500])),
            )
    by_account: dict[uuid.UUID, list[Send]] = {}
    for send in sends:
        if isinstance(send.result, aiosmtplib.SMTPException | OSError):  # the server's failure
            by_account.setdefault(send.account_id, []).append(send)
    for account_id, group in by_account.items():
        await _server_failed(
            db, settings, redis, tenant_id, account_id, len(group), _describe(group[-1].result)
        )


def _refused(error: object) -> bool:
    """Refused by the server with a code. Only a refusal of the recipient or of the message is
    a bounce (5xx); a refused sender is the account's or the server's problem."""
    return isinstance(error, aiosmtplib.SMTPRecipientRefused | aiosmtplib.SMTPDataError)


def _describe(error: BaseException) -> str:
    if isinstance(error, aiosmtplib.SMTPResponseException):
        return f"{error.code} {error.message}"
    return str(error) or repr(error)


async def _server_failed(
    db: Database,
    settings: Settings,
    redis: Redis,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    failures: int,
    error: str,
) -> None:
    """Counts consecutive failures of the account's server (reset by any success); at the
    threshold the account is paused with the reason, and its sends wait (see _check)."""
    key = f"smtp:failures:{account_id}"
    total = await redis.incrby(key, failures)
    await redis.expire(key, 3600)
    if total >= settings.account_failures_before_pause:
        async with db.tenant_session(tenant_id) as session:
            await session.execute(
                update(EmailAccount)
                .where(EmailAccount.id == account_id, EmailAccount.status.in_(USABLE_ACCOUNTS))
                .values(
                    status=AccountStatus.PAUSED,
                    status_reason=f"its SMTP server failed {total} times in a row: {error}"[:500],
                )
            )


def _tracked_link(settings: Settings, message_id: uuid.UUID, url: str) -> str:
    """The signed click URL, or the link itself when it cannot be tracked (no host, too long)."""
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
            connections=settings.smtp_pool_size,
        )
    relay_password = settings.smtp_relay_password
    return smtp.Server(
        settings.smtp_relay_host,
        settings.smtp_relay_port,
        settings.smtp_relay_username,
        relay_password.get_secret_value() if relay_password else None,
        settings.smtp_relay_starttls,
        settings.smtp_pool_size,
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
