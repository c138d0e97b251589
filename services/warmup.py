"""Warm-up: each email account's ramp, the daily tick that moves it on, and the warm-up mail a
tenant's accounts exchange to build their reputation before (and while) they send campaigns.

The ramp. Day d's target is min(max, start + (d - 1) × dailyIncrease): additive growth, 10/day
rising by 2 up to 40 unless the tenant sets its own (`setWarmup(..., ramp)`); the published
defaults of the warm-up tools are 20–30 a day growing by 2–5, and a new account starts below
them. Day 1 is the day warm-up is switched on; the target is set at once.

The tick (`tick`, a job per tenant queued every PENGUINMAILS_WARMUP_TICK_SECONDS) acts once
per account per local calendar day (the tenant's time zone). It moves the ramp on a day, and
plans the day's warm-up mail. Missed days (the scheduler was down) are not caught up: the ramp
counts days it ran. A hard bounce or a complaint on the account's mail since the last tick
steps the ramp back instead: the day goes back to where the target was half of today's (day 1
at the least; multiplicative decrease, as congestion control answers a loss), and the ramp then
holds PENGUINMAILS_WARMUP_HOLD_DAYS days before it grows again. A flat ramp (dailyIncrease 0)
can only hold.

Campaign mail. A WARMING_UP account's daily limit for campaigns is today's target (and never
above its own daily_limit: services/planning.py). Warm-up mail does not count against it: it
goes to the tenant's own mailboxes, which open it, rescue it from spam and answer it, so it
earns reputation rather than spending it; the ramp caps the mail to strangers.

Warm-up mail. Each account sends about its target a day, spread over the warm-up hours, round
robin to the tenant's other warm-up accounts that have an IMAP server (the receiving side needs
one). An account with no such partner sends no warm-up mail; its ramp still moves on and still
caps its campaigns (a plain volume ramp). A message goes through the campaign path's machinery
(the account's SMTP server and lane, the nested send limits, DKIM with its domain's key) as a
job of its own (`warmup_send`), tagged `X-PenguinMails-Warmup: <token>`, with Feedback-ID kind
`warmup`, no List-Unsubscribe, and a plain-text body from services/warmup_texts.txt. A message is claimed
SENDING before its transaction, so a retried job never sends it twice. Mail an account cannot
send when its time comes (paused, warm-up off, its domain failing, its IP listed or paused) is
cancelled, not deferred: tomorrow's tick plans afresh.

The receiving side reads each mailbox over IMAP (services/replies.py) and reports the tags it
finds here (`received`): each message is marked received and a reply is planned for the share
of them the *sender's* replyRate asks for, chosen by the token so that a second look at the
mailbox answers nothing twice. A reply is tagged too and is never answered.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

from redis.asyncio import Redis
from sqlalchemy import and_, delete, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from jobs.queue import enqueue_many, enqueue_per_tenant
from models.content import EmailEvent, EventKind
from models.infrastructure import (
    AccountStatus,
    Domain,
    EmailAccount,
    SmtpIpAddress,
    WarmupMessage,
    WarmupMessageStatus,
    WarmupState,
)
from models.sessions import Database
from models.tenancy import Tenant
from penguinmails.settings import Settings
from services import dkim_signing, mime, send_limits, sending, smtp
from services.deliverability_events import Event
from services.errors import DomainError
from services.planning import USABLE_ACCOUNTS

log = logging.getLogger("penguinmails.warmup")

TICK_KIND = "warmup_tick"
SEND_KIND = "warmup_send"
TICK_PRIORITY = 60
SEND_PRIORITY = 110  # after campaign sends (100) when both are due
TICK_ATTEMPTS = 3
TAG_HEADER = "X-PenguinMails-Warmup"
# The most a ramp may ask for a day: warm-up mail stays among the tenant's own mailboxes and
# does not count against the plan's emails, so it is bounded here.
MAX_PER_DAY = 500
# Warm-up mail sent this long ago and not found in its mailbox is no longer looked for.
EXPECTED_WITHIN = timedelta(days=3)
TEXTS = Path(__file__).with_name("warmup_texts.txt")
STATUS = WarmupMessageStatus
UNKNOWN_OUTCOME = "outcome unknown: the worker stopped during the SMTP transaction; not resent"


# --- the ramp --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ramp:
    """An account's ramp: the first day's target, its growth a day, its ceiling, and the share
    of the account's warm-up mail its partners answer."""

    start: int = 10
    daily_increase: int = 2
    max: int = 40
    reply_rate: float = 0.3

    @classmethod
    def of(cls, state: WarmupState) -> Ramp:
        return cls(state.start, state.daily_increase, state.max, state.reply_rate)

    def target(self, day: int) -> int:
        """Day `day`'s target (day 1 the first)."""
        return min(self.max, self.start + (max(day, 1) - 1) * self.daily_increase)

    def stepped_back(self, day: int) -> int:
        """The day whose target is half of day `day`'s; day 1 at the least."""
        half = self.target(day) / 2
        if self.daily_increase == 0 or half <= self.start:
            return 1
        return 1 + int((half - self.start) // self.daily_increase)

    def check(self) -> None:
        """Raises WARMUP_RAMP_INVALID naming the first field out of range."""
        rules = (
            ("start", 1 <= self.start <= MAX_PER_DAY, f"between 1 and {MAX_PER_DAY}"),
            ("dailyIncrease", 0 <= self.daily_increase <= MAX_PER_DAY,
             f"between 0 and {MAX_PER_DAY}"),
            ("max", self.start <= self.max <= MAX_PER_DAY,
             f"at least start and at most {MAX_PER_DAY}"),
            ("replyRate", 0 <= self.reply_rate <= 1, "between 0 and 1"),
        )  # fmt: skip
        for name, ok, rule in rules:
            if not ok:
                raise DomainError(
                    "WARMUP_RAMP_INVALID", f"The ramp's {name} must be {rule}.", f"ramp.{name}"
                )


async def set_warmup(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    account_id: uuid.UUID,
    enabled: bool,
    ramp: Ramp | None = None,
    now: datetime | None = None,
) -> EmailAccount:
    """Start or stop the account's warm-up ramp, and set its shape when `ramp` is given (kept
    otherwise).

    Starting (again) begins the ramp at day 1 today, its target set at once: volume sent before
    a pause says little about the reputation now. A new shape applies to today's target at
    once. A paused or disabled account keeps its status: whatever reactivates it should resume
    WARMING_UP while warm-up is on.
    """
    if ramp is not None:
        ramp.check()
    account = await session.scalar(
        select(EmailAccount).where(
            EmailAccount.id == account_id, EmailAccount.tenant_id == tenant_id
        )
    )
    if account is None:
        raise DomainError("NOT_FOUND", "No such email account.", "accountId")
    warmup = await session.get(WarmupState, account.id, with_for_update=True)
    if warmup is None:  # an account inserted without one, not through create_email_account
        warmup = WarmupState(tenant_id=tenant_id, account_id=account.id, **_columns(Ramp()))
        session.add(warmup)
    if ramp is not None:
        for name, value in _columns(ramp).items():
            setattr(warmup, name, value)

    if enabled and not warmup.enabled:
        warmup.enabled = True
        warmup.day = 1
        warmup.hold_days = 0
        zone = await _zone(session, tenant_id)
        warmup.started_on = (now or datetime.now(UTC)).astimezone(zone).date()
        warmup.last_tick_at = None
    elif not enabled:
        warmup.enabled = False
    if warmup.enabled:
        warmup.today_target = Ramp.of(warmup).target(warmup.day)

    if enabled and account.status == AccountStatus.ACTIVE:
        account.status = AccountStatus.WARMING_UP
    elif not enabled and account.status == AccountStatus.WARMING_UP:
        account.status = AccountStatus.ACTIVE
    await session.flush()
    return account


def _columns(ramp: Ramp) -> dict:
    return {
        "start": ramp.start,
        "daily_increase": ramp.daily_increase,
        "max": ramp.max,
        "reply_rate": ramp.reply_rate,
    }


# --- the daily tick --------------------------------------------------------------------------


@dataclass
class TickResult:
    """What one tick of one tenant did."""

    ticked: int = 0  # accounts moved on to today
    stepped_back: int = 0  # of them, stepped back by a bounce or complaint
    planned: int = 0  # warm-up messages planned for today
    alone: int = 0  # accounts with no partner to exchange warm-up mail with
    events: list[Event] = field(default_factory=list)  # to publish once committed


async def queue_ticks(
    session: AsyncSession, settings: Settings, now: datetime | None = None
) -> int:
    """One tick job per tenant with warm-up on somewhere, at most one per interval. Runs on a
    system session; returns how many jobs were queued."""
    now = now or datetime.now(UTC)
    interval = int(now.timestamp() // settings.warmup_tick_seconds)
    tenants = await session.scalars(
        select(WarmupState.tenant_id).where(WarmupState.enabled).distinct()
    )
    return await enqueue_per_tenant(
        session, TICK_KIND, ((t, {}, f"{TICK_KIND}:{t}:{interval}") for t in tenants),
        priority=TICK_PRIORITY, max_attempts=TICK_ATTEMPTS,
    )  # fmt: skip


async def tick(
    db: Database, settings: Settings, tenant_id: uuid.UUID, now: datetime | None = None
) -> TickResult:
    """Moves each warm-up account of the tenant that has not ticked today (local day) on to
    today: its day, its target, today's warm-up mail. Warm-up messages older than the
    retention go. Safe to run again: an account ticks once a day."""
    now = now or datetime.now(UTC)
    result = TickResult()
    async with db.tenant_session(tenant_id) as session:
        zone = await _zone(session, tenant_id)
        today = now.astimezone(zone).date()
        states = list(
            await session.scalars(
                select(WarmupState)
                .where(WarmupState.enabled)
                .order_by(WarmupState.account_id)
                .with_for_update()
            )
        )
        due = [s for s in states if _ticked_on(s, zone) is None or _ticked_on(s, zone) < today]
        if not due:
            return result
        troubled = await _troubled(db, tenant_id, due, now)
        for state in due:
            if state.account_id in troubled:
                before = state.today_target
                state.day = Ramp.of(state).stepped_back(state.day)
                state.hold_days = settings.warmup_hold_days
                result.stepped_back += 1
                result.events.append(Event(
                    tenant_id, "warmup_stepped_back", "EmailAccount", state.account_id,
                    f"a hard bounce or complaint stepped the warm-up back from {before} to "
                    f"{Ramp.of(state).target(state.day)} a day", now,
                ))  # fmt: skip
            elif state.last_tick_at is None:
                pass  # day 1 is the day warm-up was switched on
            elif state.hold_days:
                state.hold_days -= 1
            else:
                state.day += 1
            state.today_target = Ramp.of(state).target(state.day)
            state.last_tick_at = now
            result.ticked += 1
        result.planned, result.alone = await _plan_day(
            session, settings, tenant_id, states, due, _window(settings, zone, today, now), today
        )
        await session.execute(
            delete(WarmupMessage).where(
                WarmupMessage.day < today - timedelta(days=settings.warmup_retention_days)
            )
        )
    log.info(
        "warm-up tick of tenant %s: %d accounts, %d stepped back, %d messages planned",
        tenant_id, result.ticked, result.stepped_back, result.planned,
    )  # fmt: skip
    return result


def _ticked_on(state: WarmupState, zone: ZoneInfo) -> date | None:
    return state.last_tick_at.astimezone(zone).date() if state.last_tick_at else None


async def _troubled(
    db: Database, tenant_id: uuid.UUID, states: list[WarmupState], now: datetime
) -> set[uuid.UUID]:
    """The accounts with a hard bounce or a complaint on their mail since their last tick (or,
    before their first, in the last day)."""
    since = {s.account_id: s.last_tick_at or now - timedelta(days=1) for s in states}
    bad = and_(
        EmailEvent.kind.in_([EventKind.BOUNCE, EventKind.COMPLAINT]),
        (EmailEvent.kind == EventKind.COMPLAINT) | (EmailEvent.details["hard"].astext == "true"),
    )
    async with db.tenant_session(tenant_id, tier="content") as session:
        latest = await session.execute(
            select(EmailEvent.account_id, func.max(EmailEvent.occurred_at))
            .where(
                EmailEvent.account_id.in_(since),
                bad,
                EmailEvent.occurred_at > min(since.values()),
                EmailEvent.occurred_at <= now,
            )
            .group_by(EmailEvent.account_id)
        )
        return {account for account, at in latest if at > since[account]}


def _window(
    settings: Settings, zone: ZoneInfo, today: date, now: datetime
) -> tuple[datetime, datetime]:
    """What is left of today's warm-up hours (empty once they are over)."""
    midnight = datetime.combine(today, time(), zone)
    start = max(now, midnight + timedelta(hours=settings.warmup_start_hour))
    return start, midnight + timedelta(hours=settings.warmup_end_hour)


async def _plan_day(
    session: AsyncSession,
    settings: Settings,
    tenant_id: uuid.UUID,
    states: list[WarmupState],
    due: list[WarmupState],
    window: tuple[datetime, datetime],
    today: date,
) -> tuple[int, int]:
    """Today's warm-up messages of each due account: its target, spread over the window, round
    robin over its partners; (messages planned, accounts with no partner)."""
    accounts = {
        a.id: a
        for a in await session.scalars(
            select(EmailAccount).where(EmailAccount.id.in_([s.account_id for s in states]))
        )
    }
    domains = {
        d.id: d
        for d in await session.scalars(
            select(Domain).where(Domain.id.in_({a.domain_id for a in accounts.values()}))
        )
    }
    partners = [a for a in accounts.values() if a.imap_host and a.status != AccountStatus.DISABLED]
    partners.sort(key=lambda a: a.address)
    start, end = window
    messages, alone = [], 0
    for state in due:
        sender = accounts[state.account_id]
        others = [p for p in partners if p.id != sender.id]
        if not others:
            alone += 1
            continue
        if sender.status not in USABLE_ACCOUNTS or start >= end:
            continue
        count = state.today_target
        slot = (end - start) / count
        for n in range(count):
            token = secrets.token_hex(16)
            messages.append(
                WarmupMessage(
                    id=uuid.uuid4(), tenant_id=tenant_id, from_account_id=sender.id,
                    to_account_id=others[(today.toordinal() + n) % len(others)].id, day=today,
                    token=token, subject=_texts().messages[_pick(token, "text", "messages")][0],
                    message_id_header=f"<{uuid.uuid4().hex}@{domains[sender.domain_id].name}>",
                    send_at=start + slot * (n + _fraction(token, "time")),
                )
            )  # fmt: skip
    await _queue(session, tenant_id, messages)
    return len(messages), alone


async def _queue(
    session: AsyncSession, tenant_id: uuid.UUID, messages: list[WarmupMessage]
) -> None:
    """The messages written and their send jobs queued, in the caller's transaction."""
    if not messages:
        return
    session.add_all(messages)
    await session.flush()
    await enqueue_many(
        session, SEND_KIND, [{"message_id": str(m.id)} for m in messages], tenant_id=tenant_id,
        priority=SEND_PRIORITY, run_at=[m.send_at for m in messages],
        idempotency_keys=[f"{SEND_KIND}:{m.id}" for m in messages],
    )  # fmt: skip


# --- sending one warm-up message -------------------------------------------------------------


async def send(
    db: Database, settings: Settings, redis: Redis, tenant_id: uuid.UUID, message_id: uuid.UUID
) -> str:
    """Sends one planned warm-up message or reply; what happened: "sent", "bounced" or
    "skipped: why". Raises DeferJob when the account's rate is full, and the server's failure
    (4xx, no connection) for the queue to try again later."""
    async with db.tenant_session(tenant_id) as session:
        message = await session.get(WarmupMessage, message_id)
        if message is None:
            return "skipped: gone"
        if message.status == STATUS.SENDING:  # an earlier run stopped during its transaction
            message.status, message.smtp_response = STATUS.SENT, UNKNOWN_OUTCOME
            message.sent_at = func.now()
            return "sent"
        if message.status != STATUS.PLANNED:
            return f"skipped: already {message.status.value}"
        sender = await session.get(EmailAccount, message.from_account_id)
        recipient = await session.get(EmailAccount, message.to_account_id)
        state = await session.get(WarmupState, message.from_account_id)
        domain = await session.get(Domain, sender.domain_id) if sender else None
        ip = await session.get(SmtpIpAddress, sender.ip_id) if sender and sender.ip_id else None
        answered = (
            await session.get(WarmupMessage, message.reply_to_id) if message.reply_to_id else None
        )
        why = _cannot_send(sender, recipient, state, domain, ip)
        if why is not None:
            message.status, message.smtp_response = STATUS.CANCELLED, why
            return f"skipped: {why}"
    server = sending.server_for(settings, sender, ip)
    [full] = await send_limits.take_slots(settings, redis, [
        send_limits.Route(sender.tenant_id, domain.id, send_limits.ip_key(server, ip), sender.id,
                          recipient.address.rpartition("@")[2], send_limits.share(domain, ip))
    ])  # fmt: skip
    if full is not None:  # the windows a campaign send takes: its rate is full
        raise full
    delivery = smtp.Delivery(
        sender.address, recipient.address,
        _build(settings, message, sender, recipient, domain, answered),
        claim=lambda: _claim(db, message), record=lambda result: _record(db, message, result),
    )  # fmt: skip
    smtp.lane_for(server).submit(delivery)
    await _delivered(delivery)
    return _outcome(delivery)


def _cannot_send(
    sender: EmailAccount | None,
    recipient: EmailAccount | None,
    state: WarmupState | None,
    domain: Domain | None,
    ip: SmtpIpAddress | None,
) -> str | None:
    """Why the message cannot go out now, or None."""
    if sender is None or recipient is None or domain is None:
        return "account gone"
    if sender.status not in USABLE_ACCOUNTS:
        return f"{sender.address} is {sender.status.value}"
    if state is None or not state.enabled:
        return f"warm-up is off for {sender.address}"
    return sending.held_reason(domain, ip)


def _build(
    settings: Settings,
    message: WarmupMessage,
    sender: EmailAccount,
    recipient: EmailAccount,
    domain: Domain,
    answered: WarmupMessage | None,
) -> bytes:
    """The signed message: plain text from the texts file, tagged, threaded under the message
    it answers. Its envelope sender is the account itself: warm-up mail is one person's mail to
    another, and a bounce of it goes to the account's own mailbox."""
    texts = _texts()
    body = (
        texts.replies[_pick(message.token, "text", "replies")]
        if answered
        else texts.messages[_pick(message.token, "text", "messages")][1]
    )
    thread = [answered.message_id_header] if answered else []
    data = mime.build(
        mime.OutgoingMessage(
            from_address=sender.address, from_name=sender.display_name,
            to_address=recipient.address, subject=message.subject, html=None,
            text=body.format(name=_first_name(recipient), sender=_first_name(sender)),
            message_id=message.message_id_header, return_path=sender.address,
            list_unsubscribe_url=None, list_unsubscribe_mailto=None,
            in_reply_to=thread[0] if thread else None, references=thread,
            feedback_id=sending.feedback_id(None, message.tenant_id, "warmup", sender.id),
            headers=[(TAG_HEADER, message.token)],
        )
    )  # fmt: skip
    signer = dkim_signing.signer_for(settings, domain)
    return signer.sign(data) if signer is not None else data


async def _claim(db: Database, message: WarmupMessage) -> bool:
    """Commits the message SENDING, if it still is PLANNED: whether it may go out."""
    async with db.tenant_session(message.tenant_id) as session:
        claimed = await session.execute(
            update(WarmupMessage)
            .where(WarmupMessage.id == message.id, WarmupMessage.status == STATUS.PLANNED)
            .values(status=STATUS.SENDING)
        )
    return claimed.rowcount == 1


# What a transaction's end (services/smtp.py's rule) makes of the message.
_AFTER = {
    smtp.Outcome.SENT: STATUS.SENT,
    smtp.Outcome.ASSUMED: STATUS.SENT,
    smtp.Outcome.BOUNCED: STATUS.BOUNCED,
    smtp.Outcome.RETRY: STATUS.PLANNED,  # nothing was delivered: its job tries again
}


async def _record(db: Database, message: WarmupMessage, result: smtp.Result) -> None:
    status = _AFTER[result.outcome]
    values = {"status": status, "smtp_response": result.reply[:500]}
    if status != STATUS.PLANNED:
        values["sent_at"] = func.now()
    async with db.tenant_session(message.tenant_id) as session:
        await session.execute(
            update(WarmupMessage)
            .where(WarmupMessage.id == message.id, WarmupMessage.status == STATUS.SENDING)
            .values(**values)
        )


async def _delivered(delivery: smtp.Delivery) -> None:
    """Until the delivery's result is recorded; cancelled (the job cut short), as the campaign
    path's are: stopped before the end of DATA, given its grace after it."""
    try:
        await delivery.done.wait()
    except asyncio.CancelledError:
        await smtp.cut_short([delivery], sending.CUT_GRACE_SECONDS)
        raise


def _outcome(delivery: smtp.Delivery) -> str:
    if delivery.record_error is not None:
        raise delivery.record_error
    result = delivery.result
    if result is None:  # its claim was refused: another run has it
        return "skipped: claimed by another run"
    if result.outcome in (smtp.Outcome.SENT, smtp.Outcome.ASSUMED):
        return "sent"
    if result.outcome == smtp.Outcome.BOUNCED:
        return "bounced"
    raise result.error or RuntimeError(result.reply)


# --- the receiving side ----------------------------------------------------------------------


async def expecting(db: Database, account: EmailAccount, now: datetime | None = None) -> bool:
    """Whether warm-up mail sent to the account lately has not been found in its mailbox yet
    (the IMAP poll then looks for it)."""
    now = now or datetime.now(UTC)
    async with db.tenant_session(account.tenant_id) as session:
        return bool(
            await session.scalar(
                select(
                    exists().where(
                        WarmupMessage.to_account_id == account.id,
                        WarmupMessage.status == STATUS.SENT,
                        WarmupMessage.received_at.is_(None),
                        WarmupMessage.sent_at > now - EXPECTED_WITHIN,
                    )
                )
            )
        )


async def received(
    db: Database,
    settings: Settings,
    account: EmailAccount,
    tokens: set[str],
    now: datetime | None = None,
) -> set[str]:
    """Records that the warm-up mail tagged with these tokens is in the account's mailbox (the
    first sighting counts) and plans the replies its senders' reply rates ask for, once each;
    returns the tokens that are warm-up mail to this account (any other is left alone)."""
    now = now or datetime.now(UTC)
    if not tokens:
        return set()
    async with db.tenant_session(account.tenant_id) as session:
        found = list(
            await session.scalars(
                select(WarmupMessage).where(
                    WarmupMessage.to_account_id == account.id, WarmupMessage.token.in_(tokens)
                )
            )
        )
        for message in found:
            message.received_at = message.received_at or now
        await _plan_replies(session, settings, account, found, now)
    return {m.token for m in found}


async def _plan_replies(
    session: AsyncSession,
    settings: Settings,
    account: EmailAccount,
    found: list[WarmupMessage],
    now: datetime,
) -> None:
    """A reply from the account to each found message (not itself a reply) that its sender's
    reply rate picks, some minutes later. replied_at is claimed first, so two polls of one
    mailbox plan one reply."""
    unanswered = [m for m in found if m.reply_to_id is None and m.replied_at is None]
    rates = dict(
        (
            await session.execute(
                select(WarmupState.account_id, WarmupState.reply_rate).where(
                    WarmupState.account_id.in_({m.from_account_id for m in unanswered})
                )
            )
        ).all()
    )
    chosen = {
        m.id: m
        for m in unanswered
        if _fraction(m.token, "reply") < rates.get(m.from_account_id, 0.0)
    }
    if not chosen:
        return
    claimed = await session.scalars(
        update(WarmupMessage)
        .where(WarmupMessage.id.in_(chosen), WarmupMessage.replied_at.is_(None))
        .values(replied_at=now)
        .returning(WarmupMessage.id)
        .execution_options(synchronize_session=False)
    )
    domain = await session.get(Domain, account.domain_id)
    today = now.astimezone(await _zone(session, account.tenant_id)).date()
    replies = []
    for original in (chosen[i] for i in claimed):
        token = secrets.token_hex(16)
        delay = settings.warmup_reply_delay_seconds * _fraction(token, "delay")
        replies.append(
            WarmupMessage(
                id=uuid.uuid4(), tenant_id=account.tenant_id, from_account_id=account.id,
                to_account_id=original.from_account_id, reply_to_id=original.id, day=today,
                token=token, subject=_reply_subject(original.subject),
                message_id_header=f"<{uuid.uuid4().hex}@{domain.name}>",
                send_at=now + timedelta(seconds=delay),
            )
        )  # fmt: skip
    await _queue(session, account.tenant_id, replies)


def _reply_subject(subject: str) -> str:
    return subject if re.match(r"re:", subject, re.IGNORECASE) else f"Re: {subject}"


# --- texts and chance ------------------------------------------------------------------------


@dataclass(frozen=True)
class Texts:
    messages: list[tuple[str, str]]  # (subject, body)
    replies: list[str]


@cache
def _texts() -> Texts:
    """services/warmup_texts.txt: blocks between lines of "---", the first being its notes."""
    blocks = re.split(r"^---$", TEXTS.read_text(), flags=re.MULTILINE)[1:]
    messages, replies = [], []
    for block in (b.strip("\n") for b in blocks):
        if block.startswith("Subject:"):
            subject, _, body = block.partition("\n")
            messages.append((subject.removeprefix("Subject:").strip(), body.strip("\n") + "\n"))
        else:
            replies.append(block + "\n")
    return Texts(messages, replies)


def _fraction(token: str, purpose: str) -> float:
    """A number in [0, 1) fixed by the token and what it is for: the same token always draws
    the same (whether it is answered, when it goes), and different purposes draw apart."""
    digest = hashlib.sha256(f"{purpose}:{token}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _pick(token: str, purpose: str, among: str) -> int:
    return int(_fraction(token, purpose) * len(getattr(_texts(), among)))


def _first_name(account: EmailAccount) -> str:
    """The display name's first word, else the address's first part, capitalised."""
    if account.display_name:
        return account.display_name.split()[0]
    return re.split(r"[._+-]", account.address.partition("@")[0])[0].capitalize()


async def _zone(session: AsyncSession, tenant_id: uuid.UUID) -> ZoneInfo:
    timezone = await session.scalar(select(Tenant.timezone).where(Tenant.id == tenant_id))
    return ZoneInfo(timezone or "UTC")
