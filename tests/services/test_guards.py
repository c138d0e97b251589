"""Reputation scores and the sending guards (services/guards.py): complaints reported by ARF to
the real inbound SMTP server throttle and then pause a domain and its IP, a clean week lifts the
guard, hard bounces throttle and alert, and a handful of sends is no verdict."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis
from sqlalchemy import select, text

from models.campaigns import Lead
from models.content import EmailMessage
from models.infrastructure import Domain, EmailAccount, Guard, SmtpIpAddress
from models.operations import Alert
from models.sessions import Database
from penguinmails.settings import Settings
from services import guards
from tests.factories import Sent, sending_campaign, sending_ip
from tests.reports import arf, deliver, running_inbound


@pytest.fixture
async def redis(settings: Settings):
    client = Redis.from_url(settings.redis_url)
    yield client
    await client.aclose()


class Sender:
    """A tenant's domain and IP, one account sending from both, and the campaign's leads."""

    def __init__(self, tenant, campaign, domain, ip, account, leads) -> None:
        self.tenant, self.campaign, self.domain, self.ip = tenant, campaign, domain, ip
        self.account, self.leads = account, leads


async def sender(db: Database, settings: Settings) -> Sender:
    tenant, campaign, domain = await sending_campaign(
        db, settings, lead_count=5, steps=1, accounts_n=1
    )
    ip = await sending_ip(db, tenant)
    async with db.tenant_session(tenant) as s:
        account = await s.scalar(select(EmailAccount.id))
        leads = list(await s.scalars(select(Lead)))
    return Sender(tenant, campaign, domain, ip, account, leads)


async def sends(db: Database, who: Sender, n: int, *, hard_bounces: int = 0, ago_hours=24):
    """`n` SENT events of the account, `hard_bounces` of them bounced for good."""
    async with db.tenant_session(who.tenant, tier="content") as s:
        for kind, count, details in (("SENT", n, "{}"), ("BOUNCE", hard_bounces, '{"hard": true}')):
            await s.execute(
                text(
                    "INSERT INTO content.email_events (tenant_id, kind, account_id, details, "
                    "occurred_at) SELECT :t, :k, :a, CAST(:d AS jsonb), "
                    "now() - make_interval(hours => :h) FROM generate_series(1, :n)"
                ),
                {"t": who.tenant, "k": kind, "a": who.account, "d": details, "h": ago_hours,
                 "n": count},
            )  # fmt: skip


async def complain(db: Database, redis: Redis, settings: Settings, who: Sender, lead: Lead):
    """A message to the lead from the account, and its recipient's complaint: an ARF report
    delivered to the inbound server over SMTP, as a feedback loop sends it."""
    token = uuid.uuid4().hex
    async with db.tenant_session(who.tenant, tier="content") as s:
        message = EmailMessage(
            tenant_id=who.tenant, campaign_id=who.campaign, lead_id=lead.id,
            account_id=who.account, step_position=1, idempotency_key=f"guard:{token}",
            message_id_header=f"<{token}@mail.example.com>", verp_token=token,
            from_address="rep0@example.com", to_address=lead.email, subject="Hello",
        )  # fmt: skip
        s.add(message)
    async with running_inbound(db, redis, settings) as (_, port):
        reply = await deliver(port, "fbl@mail.example.com", arf(Sent(
            who.tenant, who.campaign, lead.id, lead.email, message
        )))  # fmt: skip
    assert reply.startswith("OK")


async def state(db: Database, who: Sender) -> tuple:
    async with db.tenant_session(who.tenant) as s:
        domain = await s.get(Domain, who.domain)
        ip = await s.get(SmtpIpAddress, who.ip)
        account = await s.get(EmailAccount, who.account)
        alerts = list(
            await s.execute(
                select(Alert.kind, Alert.subject, Alert.resolved_at.is_(None)).order_by(
                    Alert.created_at, Alert.subject
                )
            )
        )
    return domain, ip, account, [tuple(a) for a in alerts]


async def test_complaints_reported_by_arf_throttle_then_pause_and_a_clean_week_resumes(
    db: Database, redis: Redis, settings: Settings
) -> None:
    who = await sender(db, settings)
    await sends(db, who, 1000)
    assert await guards.evaluate(db, settings, who.tenant) == []

    await complain(db, redis, settings, who, who.leads[0])  # 1 in 1,000: 0.10 %
    throttled = await guards.evaluate(db, settings, who.tenant)
    domain, ip, account, alerts = await state(db, who)

    assert [e.kind for e in throttled] == ["domain_throttled", "ip_throttled"]
    assert (domain.guard, ip.guard) == (Guard.THROTTLED, Guard.THROTTLED)
    assert "complaints 0.10%" in domain.guard_reason
    assert set(alerts) == {
        ("sending_guard", domain.name, True),
        ("sending_guard", str(ip.address), True),
    }
    # 0.10 % of the pause's 0.30 % costs a third of the complaint weight: 100 − 13.
    assert (domain.reputation_score, ip.reputation_score, account.reputation_score) == (87,) * 3
    assert await guards.evaluate(db, settings, who.tenant) == []  # no second alert

    for lead in who.leads[1:3]:  # 3 in 1,000: 0.30 %
        await complain(db, redis, settings, who, lead)
    paused = await guards.evaluate(db, settings, who.tenant)
    domain, ip, account, alerts = await state(db, who)

    assert [e.kind for e in paused] == ["domain_paused", "ip_paused"]
    assert (domain.guard, ip.guard) == (Guard.PAUSED, Guard.PAUSED)
    assert sum(open_ for *_, open_ in alerts) == 2 and len(alerts) == 4  # the throttle's resolved
    assert domain.reputation_score == 60

    # Six days on, the complaints are still in the window; eight days on, it is clean.
    later = datetime.now(UTC) + timedelta(days=6)
    assert await guards.evaluate(db, settings, who.tenant, later) == []
    resumed = await guards.evaluate(db, settings, who.tenant, later + timedelta(days=2))
    domain, ip, account, alerts = await state(db, who)

    assert [e.kind for e in resumed] == ["domain_resumed", "ip_resumed"]
    assert (domain.guard, ip.guard, domain.guard_reason) == (Guard.NONE, Guard.NONE, None)
    assert not any(open_ for *_, open_ in alerts)
    assert domain.reputation_score == 100


async def test_a_guard_does_not_lift_before_a_clean_week_even_when_the_rates_are_clean(
    db: Database, redis: Redis, settings: Settings
) -> None:
    who = await sender(db, settings)
    await sends(db, who, 1000, ago_hours=24 * 6)
    for lead in who.leads[:3]:
        await complain(db, redis, settings, who, lead)
    await guards.evaluate(db, settings, who.tenant)
    await sends(db, who, 100_000, ago_hours=0)  # a flood of clean sends dilutes the rate

    assert await guards.evaluate(db, settings, who.tenant) == []
    domain, *_ = await state(db, who)
    assert domain.guard == Guard.PAUSED


async def test_a_guard_lifted_by_staff_counts_only_what_comes_after_the_lift(
    db: Database, redis: Redis, settings: Settings
) -> None:
    who = await sender(db, settings)
    await sends(db, who, 1000)
    for lead in who.leads[:3]:
        await complain(db, redis, settings, who, lead)
    await guards.evaluate(db, settings, who.tenant)
    async with db.tenant_session(who.tenant) as s:
        lifted = await guards.lift(s, await s.get(Domain, who.domain), "staff@example.com")

    assert await guards.evaluate(db, settings, who.tenant) == []  # the IP stays paused
    domain, ip, _, alerts = await state(db, who)
    assert (lifted.kind, domain.guard, ip.guard) == ("domain_resumed", Guard.NONE, Guard.PAUSED)
    assert domain.reputation_score == 100 and ip.reputation_score == 60
    assert {(s, open_) for _, s, open_ in alerts} == {(domain.name, False), (str(ip.address), True)}


async def test_hard_bounces_throttle_at_5_percent_and_alert_at_15(
    db: Database, settings: Settings
) -> None:
    who = await sender(db, settings)
    await sends(db, who, 1000, hard_bounces=50)
    throttled = await guards.evaluate(db, settings, who.tenant)
    domain, ip, _, alerts = await state(db, who)

    assert [e.kind for e in throttled] == ["domain_throttled", "ip_throttled"]
    assert "hard bounces 5.00%" in domain.guard_reason
    assert {k for k, *_ in alerts} == {"sending_guard"}

    await sends(db, who, 0, hard_bounces=100)  # 150 in 1,000
    alerted = await guards.evaluate(db, settings, who.tenant)
    domain, ip, _, alerts = await state(db, who)

    # The domain's, the IP's, and the tenant's sending as a whole.
    assert [(e.kind, e.subject_type) for e in alerted] == [
        ("bounce_rate", "Domain"), ("bounce_rate", "SendingIp"), ("bounce_rate", "Tenant"),
    ]  # fmt: skip
    assert {(k, s) for k, s, open_ in alerts if k == "bounce_rate"} == {
        ("bounce_rate", domain.name),
        ("bounce_rate", str(ip.address)),
        ("bounce_rate", guards.ALL_SENDERS),
    }
    assert (domain.guard, domain.reputation_score) == (Guard.THROTTLED, 70)


async def test_a_complaint_on_a_few_sends_is_no_verdict_but_lowers_the_score_in_proportion(
    db: Database, redis: Redis, settings: Settings
) -> None:
    who = await sender(db, settings)
    await sends(db, who, 10)
    await complain(db, redis, settings, who, who.leads[0])  # 10 %, on ten sends

    assert await guards.evaluate(db, settings, who.tenant) == []
    domain, ip, _, _ = await state(db, who)
    assert (domain.guard, ip.guard) == (Guard.NONE, Guard.NONE)
    assert domain.reputation_score == 100 - round(40 * 10 / 1000)


def test_the_score_counts_rates_and_listings() -> None:
    settings = Settings(_env_file=None)
    clean = guards.Signals(sent=5000)
    assert guards.score(settings, clean, listings=0) == 100
    assert guards.score(settings, clean, listings=1) == 85
    assert guards.score(settings, clean, listings=3) == 70  # listings cost at most 30
    worst = guards.Signals(sent=5000, hard_bounces=5000, complaints=5000)
    assert guards.score(settings, worst, listings=2) == 0


async def test_every_tenant_with_a_domain_gets_one_evaluation_per_interval(
    db: Database, settings: Settings
) -> None:
    from models.queue import Job

    who = await sender(db, settings)
    now = datetime(2031, 6, 1, 12, 0, tzinfo=UTC)
    for at in (now, now + timedelta(seconds=10), now + timedelta(seconds=300)):
        async with db.system_session() as s:
            await guards.queue_evaluations(s, settings, at)

    async with db.tenant_session(who.tenant, tier="queue") as s:
        kinds = list(await s.scalars(select(Job.kind).where(Job.kind == guards.EVALUATE_KIND)))
    assert kinds == [guards.EVALUATE_KIND] * 2  # the second tick fell in the first interval


async def test_a_worker_evaluates_the_guards_and_publishes_what_changed(
    db: Database, redis: Redis, settings: Settings, start_worker, run_queuer
) -> None:
    """The evaluate_guards job through the real queue and a worker process: the domain and IP
    paused, and their events on the tenant's deliverability channel."""
    import json
    import time

    from jobs.queue import enqueue
    from services import deliverability_events
    from tests.jobs.helpers import wait_for

    who = await sender(db, settings)
    await sends(db, who, 1000)
    for lead in who.leads[:3]:
        await complain(db, redis, settings, who, lead)
    listener = redis.pubsub()
    await listener.subscribe(deliverability_events.channel(who.tenant))
    start_worker(processes=1, threads=2)
    run_queuer()
    async with db.tenant_session(who.tenant, tier="queue") as s:
        await enqueue(s, guards.EVALUATE_KIND, {}, tenant_id=who.tenant)

    async def paused() -> bool:
        domain, ip, *_ = await state(db, who)
        return domain.guard == ip.guard == Guard.PAUSED

    await wait_for(paused)
    published, deadline = [], time.monotonic() + 30
    while len(published) < 2 and time.monotonic() < deadline:
        # None for the subscription's own confirmation, or after a second with nothing.
        message = await listener.get_message(ignore_subscribe_messages=True, timeout=1)
        if message is not None:
            published.append(json.loads(message["data"])["kind"])
    await listener.aclose()
    assert sorted(published) == ["domain_paused", "ip_paused"]
