"""Reputation scores and the sending guards, from each sender's last 7 days.

For every domain, sending IP and email account of a tenant, the rolling window
(`guard_clean_days`, 7) gives its sends, hard bounces and complaints: the events of the accounts
that send from it. A staff member who lifts a guard by hand starts its window again: only what
happened from the next full hour on counts.

Score (0–100, shown on the domain, the IP and the account):

    100 − 40 × min(1, complaint rate / 0.30 %) × v
        − 30 × min(1, hard-bounce rate / 15 %) × v
        − 15 per blocklist listing (at most 30)

where v = min(1, sends / `guard_min_sends`): a rate on few sends counts in proportion. An
account's listings are those of its domain and of its IP.

Guards, per domain and per IP, acting on their own (`guard_min_sends` sends in the window before
a rate is a verdict):
- complaints ≥ 0.10 % or hard bounces ≥ 5 %: THROTTLED, its sends at half their rates, an alert;
- complaints ≥ 0.30 %: PAUSED, its sends deferred, an alert;
- hard bounces ≥ 15 %: an alert (resolved when the rate falls under it), also for the tenant's
  sending as a whole (subject "all senders");
- a guard lifts once it has held `guard_clean_days` and the whole window is under every
  threshold (whatever the volume), or when platform staff lift it (audited).
A guard only ever rises on its own: from PAUSED it goes back to NONE, not to THROTTLED. Each
change raises or resolves its alert and is a deliverability event."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from jobs.queue import enqueue_per_tenant
from models.infrastructure import Domain, EmailAccount, Guard, IpStatus, SmtpIpAddress
from models.operations import Alert
from models.sessions import Database, driver_connection
from models.sqlfiles import statement
from penguinmails.settings import Settings
from services.alerts import raise_alert, resolve_alerts
from services.deliverability_events import Event
from services.errors import DomainError

EVALUATE_KIND = "evaluate_guards"
EVALUATE_PRIORITY = 60
GUARD_ALERT = "sending_guard"
BOUNCE_ALERT = "bounce_rate"
ALL_SENDERS = "all senders"  # the subject of the tenant-wide bounce alert
LEVEL = {Guard.NONE: 0, Guard.THROTTLED: 1, Guard.PAUSED: 2}
LISTING_PENALTY, MAX_LISTING_PENALTY = 15, 30
COMPLAINT_WEIGHT, BOUNCE_WEIGHT = 40, 30


@dataclass
class Signals:
    """Sends, hard bounces and complaints of one sender over its window."""

    sent: int = 0
    hard_bounces: int = 0
    complaints: int = 0

    def add(self, other: Signals) -> None:
        self.sent += other.sent
        self.hard_bounces += other.hard_bounces
        self.complaints += other.complaints

    @property
    def complaint_rate(self) -> float:
        return self.complaints / self.sent if self.sent else 0.0

    @property
    def bounce_rate(self) -> float:
        return self.hard_bounces / self.sent if self.sent else 0.0


def score(settings: Settings, signals: Signals, listings: int) -> int:
    """The 0–100 reputation (the formula above)."""
    volume = min(1.0, signals.sent / settings.guard_min_sends)
    complaints = min(1.0, signals.complaint_rate / settings.guard_complaint_pause)
    bounces = min(1.0, signals.bounce_rate / settings.guard_bounce_alert)
    penalty = (COMPLAINT_WEIGHT * complaints + BOUNCE_WEIGHT * bounces) * volume
    penalty += min(MAX_LISTING_PENALTY, LISTING_PENALTY * listings)
    return max(0, min(100, round(100 - penalty)))


def verdict(settings: Settings, signals: Signals) -> tuple[Guard, str]:
    """The guard the rates call for, and why; NONE below the minimum volume."""
    if signals.sent < settings.guard_min_sends:
        return Guard.NONE, ""
    rates = _rates(signals)
    if signals.complaint_rate >= settings.guard_complaint_pause:
        return Guard.PAUSED, rates
    if signals.complaint_rate >= settings.guard_complaint_throttle:
        return Guard.THROTTLED, rates
    if signals.bounce_rate >= settings.guard_bounce_throttle:
        return Guard.THROTTLED, rates
    return Guard.NONE, ""


def clean(settings: Settings, signals: Signals) -> bool:
    """Under every threshold, whatever the volume: what lifting a guard needs."""
    return (
        signals.complaint_rate < settings.guard_complaint_throttle
        and signals.bounce_rate < settings.guard_bounce_throttle
    )


def _rates(signals: Signals) -> str:
    return (
        f"complaints {signals.complaint_rate:.2%}, hard bounces {signals.bounce_rate:.2%} "
        f"of {signals.sent} sends in 7 days"
    )


class Window:
    """The tenant's signals per account and hour, summed over a sender's accounts from a start."""

    def __init__(self, rows: Iterable) -> None:
        self.hours: dict[uuid.UUID, list[tuple[datetime, Signals]]] = defaultdict(list)
        for row in rows:
            signals = Signals(row["sent"], row["hard_bounces"], row["complaints"])
            self.hours[row["account_id"]].append((row["hour"], signals))

    def signals(self, accounts: Iterable[uuid.UUID], since: datetime) -> Signals:
        total = Signals()
        for account in accounts:
            for hour, signals in self.hours.get(account, ()):
                if hour >= since:
                    total.add(signals)
        return total


async def evaluate(
    db: Database, settings: Settings, tenant_id: uuid.UUID, now: datetime | None = None
) -> list[Event]:
    """Scores and guards of the tenant's domains, IPs and accounts brought up to date; the
    deliverability events to publish once committed."""
    now = now or datetime.now(UTC)
    start = now - timedelta(days=settings.guard_clean_days)
    async with db.tenant_session(tenant_id, tier="content") as content:
        rows = await (await driver_connection(content)).fetch(
            statement("guards.sql", "sending_signals"), tenant_id, start
        )
    window = Window(rows)
    events: list[Event] = []
    async with db.tenant_session(tenant_id) as session:
        accounts = list(await session.scalars(select(EmailAccount)))
        domains = {d.id: d for d in await session.scalars(select(Domain))}
        ips = {
            ip.id: ip
            for ip in await session.scalars(
                select(SmtpIpAddress).where(SmtpIpAddress.status != IpStatus.RELEASED)
            )
        }
        alerts = await _open_alerts(session, tenant_id)
        senders: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)
        for account in accounts:
            senders[account.domain_id].append(account.id)
            if account.ip_id is not None:
                senders[account.ip_id].append(account.id)
            domain, ip = domains.get(account.domain_id), ips.get(account.ip_id)
            listed = len(domain.blacklisted_on if domain else []) + len(
                ip.blacklisted_on if ip else []
            )
            account.reputation_score = score(settings, window.signals([account.id], start), listed)
        for subject in [*domains.values(), *ips.values()]:
            since = max(start, _next_hour(subject.guard_lifted_at) or start)
            signals = window.signals(senders[subject.id], since)
            subject.reputation_score = score(settings, signals, len(subject.blacklisted_on))
            events += await _guard(session, settings, subject, signals, alerts, now)
        every_account = window.signals([account.id for account in accounts], start)
        events += await _bounce_alert(
            session, settings, (tenant_id, ALL_SENDERS, "Tenant", tenant_id), every_account,
            alerts, now,
        )  # fmt: skip
    return events


async def _guard(
    session: AsyncSession,
    settings: Settings,
    subject: Domain | SmtpIpAddress,
    signals: Signals,
    alerts: set[tuple[str, str]],
    now: datetime,
) -> list[Event]:
    """The subject's guard moved as its signals call for; the events of what changed."""
    name, type_ = _name(subject)
    events = await _bounce_alert(
        session, settings, (subject.tenant_id, name, type_, subject.id), signals, alerts, now
    )
    wanted, why = verdict(settings, signals)
    current = Guard(subject.guard)
    if LEVEL[wanted] > LEVEL[current]:
        effect = "its sends at half rate" if wanted == Guard.THROTTLED else "its sends paused"
        message = f"{name} is {wanted.value.lower()}: {why}; {effect}"
        await resolve_alerts(session, subject.tenant_id, GUARD_ALERT, name, now)
        raise_alert(session, subject.tenant_id, GUARD_ALERT, name, message)
        subject.guard, subject.guard_reason, subject.guard_since = wanted, message, now
        kind = f"{_kind(subject)}_{wanted.value.lower()}"
        events.append(Event(subject.tenant_id, kind, type_, subject.id, message, now))
    elif (
        current != Guard.NONE
        and now - subject.guard_since >= timedelta(days=settings.guard_clean_days)
        and clean(settings, signals)
    ):
        message = f"{name} sends at its usual rates again: {_rates(signals)}"
        events.append(_lift(subject, message, now))
        await resolve_alerts(session, subject.tenant_id, GUARD_ALERT, name, now)
    return events


async def _bounce_alert(
    session: AsyncSession,
    settings: Settings,
    sender: tuple[uuid.UUID, str, str, uuid.UUID],  # tenant, name, API type, id
    signals: Signals,
    alerts: set[tuple[str, str]],
    now: datetime,
) -> list[Event]:
    """A sender's hard-bounce alert (a domain, an IP, the whole tenant): raised at
    guard_bounce_alert on guard_min_sends sends or more, resolved once under it."""
    tenant_id, name, type_, subject_id = sender
    over = signals.sent >= settings.guard_min_sends
    if over and signals.bounce_rate >= settings.guard_bounce_alert:
        if (BOUNCE_ALERT, name) not in alerts:
            message = f"{name}: hard bounces at {signals.bounce_rate:.2%} ({_rates(signals)})"
            raise_alert(session, tenant_id, BOUNCE_ALERT, name, message)
            return [Event(tenant_id, BOUNCE_ALERT, type_, subject_id, message, now)]
    elif (BOUNCE_ALERT, name) in alerts and signals.bounce_rate < settings.guard_bounce_alert:
        await resolve_alerts(session, tenant_id, BOUNCE_ALERT, name, now)
    return []


GUARDED = {"Domain": Domain, "SendingIp": SmtpIpAddress}  # by API type


async def lift_by_id(
    session: AsyncSession, subject_type: str, subject_id: uuid.UUID, staff: str
) -> Event:
    """`lift` for the domain or sending IP named by its API type and key (a staff session: any
    tenant's); NOT_FOUND for anything else."""
    model = GUARDED.get(subject_type)
    subject = await session.get(model, subject_id) if model else None
    if subject is None:
        raise DomainError("NOT_FOUND", "no domain or sending IP with this id", "id")
    return await lift(session, subject, staff)


async def lift(session: AsyncSession, subject: Domain | SmtpIpAddress, staff: str) -> Event:
    """Platform staff lift a subject's guard by hand (the caller's staff session audits it): its
    window starts again, so what happened before does not put it back at once."""
    now = datetime.now(UTC)
    name, _ = _name(subject)
    subject.guard_lifted_at = now
    await resolve_alerts(session, subject.tenant_id, GUARD_ALERT, name, now)
    return _lift(subject, f"{name}: its guard was lifted by platform staff ({staff})", now)


def _lift(subject: Domain | SmtpIpAddress, message: str, now: datetime) -> Event:
    subject.guard, subject.guard_reason, subject.guard_since = Guard.NONE, None, None
    _, type_ = _name(subject)
    return Event(subject.tenant_id, f"{_kind(subject)}_resumed", type_, subject.id, message, now)


async def _open_alerts(session: AsyncSession, tenant_id: uuid.UUID) -> set[tuple[str, str]]:
    rows = await session.execute(
        select(Alert.kind, Alert.subject).where(
            Alert.tenant_id == tenant_id,
            Alert.kind.in_((GUARD_ALERT, BOUNCE_ALERT)),
            Alert.resolved_at.is_(None),
        )
    )
    return {(kind, subject) for kind, subject in rows}


def _name(subject: Domain | SmtpIpAddress) -> tuple[str, str]:
    if isinstance(subject, Domain):
        return subject.name, "Domain"
    return str(subject.address), "SendingIp"


def _kind(subject: Domain | SmtpIpAddress) -> str:
    return "domain" if isinstance(subject, Domain) else "ip"


def _next_hour(at: datetime | None) -> datetime | None:
    if at is None:
        return None
    return at.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


async def queue_evaluations(
    session: AsyncSession, settings: Settings, now: datetime | None = None
) -> int:
    """An evaluation for every tenant with a domain (system session), once per interval."""
    now = now or datetime.now(UTC)
    window = int(now.timestamp() // settings.guard_check_seconds)
    tenants = await session.scalars(select(Domain.tenant_id).distinct())
    return await enqueue_per_tenant(
        session, EVALUATE_KIND,
        ((t, {}, f"{EVALUATE_KIND}:{t}:{window}") for t in tenants),
        priority=EVALUATE_PRIORITY,
    )  # fmt: skip
