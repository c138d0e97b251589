"""The send job: a batch of send jobs rendered, built, signed, delivered and recorded.

A worker gets send jobs in batches (one Dramatiq message holds up to queue_jobs_per_message),
and sends a batch as one: its reads, its rate-limit slots and its bookkeeping are one statement
or round trip for the lot. Per tenant of the batch:

  1. read the campaigns, leads, accounts, steps, domains, IPs, suppressions and (for a retried
     job) existing messages the jobs name (OLTP and content tiers);
  2. take the account's and the IP's sliding-window slot for each send (one Redis call); a
     send without a slot is deferred, without using an attempt;
  3. render, build and DKIM-sign each message;
  4. hand each to its server's lane (services/smtp.py). When a connection is ready for it the
     message is committed SENDING (claim_messages, grouped with the claims of the other
     connections at that moment); its transaction's result, by the rule in smtp.OUTCOMES, is
     committed before that connection takes another message (SENT with its event, PENDING
     again, or BOUNCED). So a message is SENDING only while its own transaction is in flight:
     at most one per connection;
  5. the leads, the follow-ups (one statement each for the batch) and the events published.

Never the same step twice: a retry finds its message SENT (and completes step 5, which a dead
worker may have left undone) or SENDING, which now means only that a process died during its
transaction; whether the server said 250 is unknown, so it is taken as sent and says so
(smtp_response, `details.assumed` on its SENT event). A batch cut short (time limit, shutdown)
withdraws what has not started, stops what has not reached the end of DATA (released to
PENDING), gives replies already under way CUT_GRACE_SECONDS, records everything, and ends
its jobs deferred: their retries complete or send what is left, without using an attempt.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import uuid
import zlib
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from jobs.registry import DeferJob, PermanentJobError
from models.campaigns import (
    Campaign,
    CampaignSequenceStep,
    CampaignStatus,
    Lead,
    LeadStatus,
    Suppression,
)
from models.content import EmailEvent, EmailMessage, MessageStatus
from models.infrastructure import (
    AccountStatus,
    Domain,
    DomainStatus,
    EmailAccount,
    Guard,
    IpStatus,
    SmtpIpAddress,
)
from models.sessions import Database, driver_connection
from models.sqlfiles import statement
from penguinmails.settings import Settings, Tier
from services import (
    accounts,
    bounces,
    inbound,
    metrics,
    planning,
    send_limits,
    smtp,
    templates,
    tracking,
)
from services.errors import DomainError
from services.group_write import GroupWrites
from services.planning import USABLE_ACCOUNTS, send_key

log = logging.getLogger("penguinmails.sending")

ACCOUNT_PAUSED_RETRY_SECONDS = 900
# A failed domain's, a listed IP's or a paused sender's sends wait this long before they are
# tried again.
SENDER_HELD_RETRY_SECONDS = 900
CUT_GRACE_SECONDS = 5.0  # a cut batch waits this long for replies to the end of DATA under way
CUT_RETRY_SECONDS = 2.0
BUILD_AT_ONCE = 8  # messages built before the event loop is given back to the connections
# … or fewer once building has taken this long, and then the loop is given a pause, not one
# step: a template may take up to the render time limit (services/sandbox.py) for a message,
# and the other batches and the heartbeats renewing the jobs' leases need several steps each.
BUILD_SLICE_SECONDS = 0.05
BUILD_PAUSE_SECONDS = 0.01
SENDABLE_LEADS = (LeadStatus.ACTIVE, LeadStatus.CONTACTED)
UNKNOWN_OUTCOME = "outcome unknown: the worker stopped during the SMTP transaction; not resent"


class CutShort(DeferJob):
    """The batch was cut short (time limit, shutdown) before this job was done: retried soon,
    without using an attempt (what was sent is recorded, and the retry completes it)."""

    def __init__(self) -> None:
        super().__init__(CUT_RETRY_SECONDS, "the batch was cut short; retried")


class MessageExists(Exception):
    """A first run found its message written already: retried, it is looked up."""


@dataclass(eq=False)
class Send:
    """One send job of a batch, and what the batch decided for it."""

    tenant_id: uuid.UUID
    campaign_id: uuid.UUID
    lead_id: uuid.UUID
    account_id: uuid.UUID
    step: int
    first_run: bool  # the job never ran before: no earlier run can have written its message
    result: str | BaseException | None = None
    message: EmailMessage | None = None  # the row being sent or completed
    data: bytes = b""
    server: smtp.Server | None = None
    sender: str = ""  # the VERP return path
    ip_key: str = ""
    domain_id: uuid.UUID | None = None  # the sending domain's
    recipient_domain: str = ""
    rate_share: float = 1.0  # of the usual rates: less while its domain or IP is throttled
    delivery: smtp.Delivery | None = None

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
    """Sends a batch of (tenant, payload, first run) send jobs; returns, in order, what happened
    to each: "sent", "bounced", "skipped: why", or the exception its job ends with (DeferJob
    when a rate is full, the account is paused or the batch was cut short; a 4xx or connection
    error, which the queue retries). Cancelled, it cleans up as above and still returns."""
    sends = [
        Send(
            tenant_id=tenant_id,
            campaign_id=uuid.UUID(payload["campaign_id"]),
            lead_id=uuid.UUID(payload["lead_id"]),
            account_id=uuid.UUID(payload["account_id"]),
            step=int(payload["step"]),
            first_run=first_run,
        )
        for tenant_id, payload, first_run in jobs
    ]
    by_tenant: dict[uuid.UUID, list[Send]] = {}
    for send in sends:
        by_tenant.setdefault(send.tenant_id, []).append(send)
    tasks = [
        asyncio.ensure_future(_send_for_tenant(db, settings, redis, tenant, group))
        for tenant, group in by_tenant.items()
    ]
    cut = False
    try:
        await asyncio.wait(tasks)
    except asyncio.CancelledError:
        cut = True
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)  # each tenant's sends clean up (see _deliver_all)
    for group, task in zip(by_tenant.values(), tasks, strict=True):
        failure = None if task.cancelled() else task.exception()
        if cut or task.cancelled():
            for send in group:  # what went out is recorded; the retry completes it
                if send.result is None or send.result == "sent" or _retryable(send.result):
                    send.result = CutShort()
        elif isinstance(failure, Exception):  # a database or Redis error: the tenant's jobs fail
            log.warning("send batch of tenant %s failed", group[0].tenant_id, exc_info=failure)
            for send in group:  # a sent one, too: its retry completes what was left undone
                if send.result is None or send.result == "sent":
                    send.result = failure
        elif failure is not None:
            raise failure
    return [send.result for send in sends]


def _retryable(result: object) -> bool:
    return isinstance(result, Exception) and not isinstance(result, PermanentJobError | DeferJob)


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
    fresh = await _deliver_all(db, redis, settings, world, tenant_id, fresh)
    await _count_server_failures(db, settings, redis, tenant_id, fresh)
    sent = [s for s in fresh if s.result == "sent"]
    await _complete(db, redis, world, tenant_id, sent, finish)
    for send in finish:
        send.result = "sent"


async def _deliver_all(
    db: Database,
    redis: Redis,
    settings: Settings,
    world: World,
    tenant_id: uuid.UUID,
    sends: list[Send],
) -> list[Send]:
    """Builds the messages and hands each to its server's lane as soon as it is built (a few at
    a time, letting the connections start on the first while the rest are built); returns the
    sends that were built. Each claim and each result is committed with the others of the same
    moment in this process (_CLAIMS, _RESULTS). Cancelled, it cuts the deliveries short and
    waits until each one's result is recorded, then re-raises."""
    key = (db, redis, tenant_id)
    built: list[Send] = []
    try:
        given_back = time.monotonic()
        for n, send in enumerate(sends, start=1):
            if _built(settings, world, send):
                send.delivery = smtp.Delivery(
                    send.sender, send.message.to_address, send.data,
                    claim=lambda send=send: _CLAIMS(key, send),
                    record=lambda result, send=send: _RESULTS(key, send),
                )  # fmt: skip
                smtp.lane_for(send.server).submit(send.delivery)
                built.append(send)
            if time.monotonic() - given_back > BUILD_SLICE_SECONDS:
                await asyncio.sleep(BUILD_PAUSE_SECONDS)
                given_back = time.monotonic()
            elif n % BUILD_AT_ONCE == 0:
                await asyncio.sleep(0)
                given_back = time.monotonic()
        await _delivered(built)
    except asyncio.CancelledError:
        await smtp.cut_short([send.delivery for send in built], CUT_GRACE_SECONDS)
        raise
    finally:
        for send in built:
            _settle(send)
    failed = next((s.delivery.record_error for s in built if s.delivery.record_error), None)
    if failed is not None:
        raise failed
    return built


async def _delivered(sends: list[Send]) -> None:
    """Until each send's delivery is done (its result recorded, or it was withdrawn)."""
    for send in sends:
        await send.delivery.done.wait()


def _settle(send: Send) -> None:
    """The job's result from its delivery's."""
    delivery = send.delivery
    if delivery.result is None:  # withdrawn, or its claim was refused
        send.result = (
            MessageExists(f"message {send.key} exists from an earlier run")
            if not delivery.withdrawn
            else CutShort()
        )
        return
    outcome = delivery.result.outcome
    if outcome in (smtp.Outcome.SENT, smtp.Outcome.ASSUMED):
        send.result = "sent"
    elif outcome == smtp.Outcome.BOUNCED:
        send.result = "bounced"
    elif isinstance(delivery.result.error, asyncio.CancelledError):
        send.result = CutShort()
    else:
        send.result = delivery.result.error or RuntimeError(delivery.result.reply)


async def _claim(key: tuple[Database, Redis, uuid.UUID], sends: list[Send]) -> list[bool]:
    """Commits the messages as SENDING; whether each may go out. A message that exists from an
    earlier run but was not looked up (a first run: see _read) is left alone, and its
    job is retried, which then looks it up."""
    db, _, tenant_id = key
    columns = _columns(
        sends,
        lambda s: (
            s.message.id, s.campaign_id, s.lead_id, s.account_id, s.step, s.key,
            s.message.message_id_header, s.message.verp_token, s.message.from_address,
            s.message.to_address, s.message.subject, zlib.compress(s.data, 1),
        ),
    )  # fmt: skip
    rows = await _statement(db, tenant_id, "content", "claim_messages", tenant_id, *columns)
    claimed = {row["id"] for row in rows}
    return [send.message.id in claimed for send in sends]


async def _record_results(key: tuple[Database, Redis, uuid.UUID], sends: list[Send]) -> list[None]:
    """The results of transactions that just ended, committed before their connections take
    another message: SENT (or assumed) with the SENT events, released to PENDING, or bounced."""
    db, redis, tenant_id = key
    outcome = {s: s.delivery.result for s in sends}
    sent = [s for s in sends if outcome[s].outcome in (smtp.Outcome.SENT, smtp.Outcome.ASSUMED)]
    released = [s for s in sends if outcome[s].outcome == smtp.Outcome.RETRY]
    bounced = [s for s in sends if outcome[s].outcome == smtp.Outcome.BOUNCED]

    async def release() -> None:
        await _statement(
            db, tenant_id, "content", "release_messages",
            *_columns(released, lambda s: (s.message.id, outcome[s].reply)),
        )  # fmt: skip

    async def bounce(send: Send) -> None:
        result = outcome[send]
        # Refused during the transaction: never accepted, so no SENT event; the analytics count
        # it as sent and bounced (a bounce the server reported at once rather than by DSN).
        kind = bounces.classify(str(result.code), result.reply)
        hard = kind == bounces.BounceClass.HARD
        details = {"hard": hard, "refused": True, "status": str(result.code), "class": kind.value}
        details["diagnostic"] = result.reply
        if hard:
            await inbound.record_hard_bounce(db, redis, send.message, details)
        else:
            await inbound.record_soft_bounce(db, redis, send.message, details, refused=True)

    # Each kind is written even when another failed (a caller tries its own again: each write
    # changes only rows still SENDING, so trying again is harmless).
    writes = [
        *([_mark_sent(db, redis, tenant_id, sent)] if sent else []),
        *([release()] if released else []),
        *(bounce(send) for send in bounced),
    ]
    failed = [r for r in await asyncio.gather(*writes, return_exceptions=True) if r is not None]
    if failed:
        raise failed[0]
    return [None] * len(sends)


async def _mark_sent(db: Database, redis: Redis, tenant_id: uuid.UUID, sends: list[Send]) -> None:
    """SENDING → SENT and the SENT events in one statement, then the events published. A send
    without a delivery is a message a retry found SENDING (UNKNOWN_OUTCOME)."""

    def row(send: Send):
        result = send.delivery.result if send.delivery else None
        assumed = result is None or result.outcome == smtp.Outcome.ASSUMED
        reply = result.reply if result is not None else UNKNOWN_OUTCOME
        return send.message.id, reply[:500], json.dumps({"assumed": True} if assumed else {})

    rows = await _statement(
        db, tenant_id, "content", "mark_sent",
        *_columns(sends, row),
    )  # fmt: skip
    metrics.SENDS.inc(len(rows))
    await tracking.publish(redis, [EmailEvent(**dict(r)) for r in rows])


# The process's claims and results, grouped per database, Redis and tenant across batches.
_CLAIMS = GroupWrites(_claim)
_RESULTS = GroupWrites(_record_results)


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
    # Only a job that ran before can find its message: a first run skips the read (and a
    # message that exists all the same is refused by claim_messages, never sent twice).
    retried = [s.key for s in sends if not s.first_run]
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
    domain = world.domains[account.domain_id]
    ip = world.ips.get(account.ip_id) if account.ip_id else None
    held = held_reason(domain, ip)
    if held is not None:
        return DeferJob(SENDER_HELD_RETRY_SECONDS, held)
    send.rate_share = send_limits.share(domain, ip)
    return "send"


def held_reason(domain: Domain, ip: SmtpIpAddress | None) -> str | None:
    """Why mail from this domain and sending IP (None: the relay's) must wait now, or None: the
    domain stopped verifying (services/dns.py), the IP is listed (services/reputation.py), or
    either one's sends are paused (services/guards.py)."""
    if domain.status == DomainStatus.FAILED:
        return f"domain {domain.name} stopped verifying"
    if ip is not None and ip.status == IpStatus.BLACKLISTED:
        return f"IP {ip.address} is listed on {', '.join(ip.blacklisted_on)}"
    for sender in (domain, ip):
        if sender is not None and sender.guard == Guard.PAUSED:
            return sender.guard_reason or "sends paused"
    return None


def _route(settings: Settings, world: World, sends: list[Send]) -> list[Send]:
    """The server (and the IP or relay whose rate applies) of each send, worked out once per
    account; returns the sends that have one. An account whose server cannot be worked out (its
    password cannot be decrypted) fails its own sends."""
    routes: dict[uuid.UUID, tuple[smtp.Server, str] | Exception] = {}
    for account in {world.accounts[send.account_id] for send in sends}:
        ip = world.ips.get(account.ip_id) if account.ip_id else None
        try:
            server = server_for(settings, account, ip)
        except Exception as e:
            routes[account.id] = e
            continue
        routes[account.id] = server, send_limits.ip_key(server, ip)
    for send in sends:
        route = routes[send.account_id]
        if isinstance(route, Exception):
            send.result = route
        else:
            send.server, send.ip_key = route
            send.domain_id = world.accounts[send.account_id].domain_id
            send.recipient_domain = world.leads[send.lead_id].email.rpartition("@")[2].lower()
    return [send for send in sends if send.result is None]


async def _take_rate_slots(redis: Redis, settings: Settings, sends: list[Send]) -> list[Send]:
    """One slot in each of a send's nested rate windows (services/send_limits.py) for each send,
    in one Redis call; a send that gets none is deferred until its windows have room."""
    deferred = await send_limits.take_slots(settings, redis, [
        send_limits.Route(s.tenant_id, s.domain_id, s.ip_key, s.account_id, s.recipient_domain,
                          s.rate_share)
        for s in sends
    ])  # fmt: skip
    for send, full in zip(sends, deferred, strict=True):
        send.result = full
    return [send for send in sends if send.result is None]


def _built(settings: Settings, world: World, send: Send) -> bool:
    """Builds the message; whether it was. A message that cannot be built (a template that
    fails on this lead's data) fails its own job, for good: building it again would fail the
    same way."""
    try:
        _build(settings, world, send)
    except Exception as e:
        # TEMPLATE_RENDER's message says why, in a sentence; anything else by its repr.
        why = e.message if isinstance(e, DomainError) else repr(e)
        send.result = PermanentJobError(f"the message could not be built: {why}"[:500])
    return send.result is None


async def _statement(db: Database, tenant_id: uuid.UUID, tier: Tier, name: str, *args) -> list:
    """One statement of sql/sending.sql in a transaction of its own, the tenant bound; its rows."""
    async with db.tenant_session(tenant_id, tier=tier) as session:
        conn = await driver_connection(session)
        return await conn.fetch(statement("sending.sql", name), *args)


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
            feedback_id=feedback_id(send.campaign_id, campaign.tenant_id, "campaign", account.id),
        )
    )
    signer = dkim_signing.signer_for(settings, domain)
    message.subject = rendered.subject
    send.message, send.sender = message, return_path
    send.data = signer.sign(data) if signer is not None else data


async def _complete(
    db: Database,
    redis: Redis,
    world: World,
    tenant_id: uuid.UUID,
    sent: list[Send],
    finish: list[Send],
) -> None:
    """The bookkeeping of sent messages, each a statement for the batch and each safe to run
    again: the messages a dead worker left SENDING taken as sent, then the leads, then the
    follow-ups; the accounts' runs of server failures end."""
    unknown = [s for s in finish if s.message.status == MessageStatus.SENDING]
    if unknown:
        await _mark_sent(db, redis, tenant_id, unknown)
    done = sent + finish
    if not done:
        return
    leads = _columns(
        done,
        lambda s: (
            s.lead_id, s.step, s.message.message_id_header,
            (s.campaign_id, s.step + 1) not in world.steps,
        ),
    )  # fmt: skip
    statuses = dict(await _statement(db, tenant_id, "oltp", "leads_sent", *leads))
    following = [
        planning.FollowUp(world.campaigns[s.campaign_id], s.lead_id, s.account_id, s.step)
        for s in done
        if statuses.get(s.lead_id) == LeadStatus.CONTACTED.value
        and s.campaign_id in world.campaigns
    ]
    async with db.tenant_session(tenant_id, tier="queue") as session:
        await planning.plan_follow_ups(session, world.steps, following)
    try:  # the server worked: its run of failures is over
        await redis.delete(*{f"smtp:failures:{s.account_id}" for s in sent})
    except RedisError:
        log.warning("could not reset the failure counts of %d sends' accounts", len(sent))


async def _count_server_failures(
    db: Database, settings: Settings, redis: Redis, tenant_id: uuid.UUID, sends: list[Send]
) -> None:
    """4xx, refused senders, no connection, no reply before the dot: the account's server one
    failure closer to being paused (see _server_failed)."""
    by_account: dict[uuid.UUID, list[Send]] = {}
    for send in sends:
        result = send.delivery.result if send.delivery else None
        if result is not None and result.server_failed:
            by_account.setdefault(send.account_id, []).append(send)
    for account_id, group in by_account.items():
        await _server_failed(
            db, settings, redis, tenant_id, account_id, len(group), group[-1].delivery.result.reply
        )


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


def feedback_id(campaign: uuid.UUID | None, tenant: uuid.UUID, kind: str, sender: uuid.UUID) -> str:
    """The Feedback-ID header's value: campaign (empty for mail of none: warm-up), tenant, kind
    of mail, sending account."""
    return f"{campaign.hex if campaign else ''}:{tenant.hex}:{kind}:{sender.hex}"


def _tracked_link(settings: Settings, message_id: uuid.UUID, url: str) -> str:
    """The signed click URL, or the link itself when it cannot be tracked (no host, too long)."""
    try:
        return tracking.click_url(settings, message_id, url)
    except ValueError:
        return url


def server_for(
    settings: Settings, account: EmailAccount, ip: SmtpIpAddress | None = None
) -> smtp.Server:
    """The SMTP server the account sends through: its own, else the platform relay. On its
    VPS (an IP of a VPS): the submission port, STARTTLS required, greeting with its IP's HELO
    name."""
    on_vps = ip is not None and ip.vps_id is not None and account.smtp_host is not None
    if account.smtp_host:
        return smtp.Server(
            account.smtp_host,
            account.smtp_port or 587,
            account.smtp_username or account.address,
            accounts.smtp_password(settings, account),
            require_tls=on_vps,
            connections=settings.smtp_pool_size,
            timeouts=_timeouts(settings),
            local_hostname=ip.ptr_hostname if on_vps and ip is not None else None,
            cert_bundle=str(settings.vps_tls_ca_file) if on_vps and settings.vps_tls_ca_file
            else None,
        )  # fmt: skip
    return relay_server(settings)


def relay_server(settings: Settings) -> smtp.Server:
    """The platform relay (also what account e-mails go through without Loops)."""
    relay_password = settings.smtp_relay_password
    return smtp.Server(
        settings.smtp_relay_host,
        settings.smtp_relay_port,
        settings.smtp_relay_username,
        relay_password.get_secret_value() if relay_password else None,
        settings.smtp_relay_starttls,
        settings.smtp_pool_size,
        _timeouts(settings),
    )


def _timeouts(settings: Settings) -> smtp.Timeouts:
    return smtp.Timeouts(
        settings.smtp_connect_timeout_seconds,
        settings.smtp_command_timeout_seconds,
        settings.smtp_data_timeout_seconds,
    )
