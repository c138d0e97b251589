"""A launched campaign really sends: planned inside its window, rendered, signed, delivered over
SMTP to a real aiosmtpd server, recorded, and followed up in the same thread."""

from __future__ import annotations

import asyncio
import email
import json
import time
from datetime import UTC, datetime, timedelta
from email import policy
from itertools import pairwise

import dkim
import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select, update

from models.campaigns import Campaign, Lead, LeadStatus, Suppression
from models.content import EmailMessage, MessageStatus
from models.infrastructure import Domain, EmailAccount
from models.sessions import Database
from penguinmails.settings import Settings
from services import planning, sandbox, sending, tracking
from tests.factories import UNLIMITED_RATES, sending_campaign, sending_ip
from tests.jobs.conftest import QUEUE_SETTINGS
from tests.jobs.helpers import (
    all_sent,
    database_now,
    held_jobs,
    quiet_queue,
    seconds_until_started_again,
    send_jobs,
)
from tests.smtp import running_sink
from tests.template_bombs import BOMBS, SLOW

LEADS, STEPS = 200, 3  # the campaign: 3 steps x 200 leads across 3 accounts
FAST = UNLIMITED_RATES


@pytest.fixture
def sink():
    with running_sink() as sink_and_port:
        yield sink_and_port


async def _wait(predicate, within: float = 90) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.3)


def _dns_for(domain: Domain):
    records = {r["host"] + ".": r["value"].encode() for r in domain.dns_records}
    return lambda name, timeout=5: records.get(name.decode() if isinstance(name, bytes) else name)


async def test_a_campaign_delivers_every_step_once_signed_threaded_and_unsubscribable(
    db: Database, settings: Settings, sink, start_worker, run_queuer
) -> None:
    handler, port = sink
    tenant, campaign_id, domain_id = await sending_campaign(
        db, settings, lead_count=LEADS, steps=STEPS, accounts_n=3
    )
    live = Redis.from_url(settings.redis_url)
    channel = live.pubsub()
    await channel.subscribe(tracking.email_channel(tenant))
    # 600 sends in seconds: the per-minute rates (60 per account, 600 per IP) would spread them
    # over two minutes.
    start_worker(processes=1, threads=4, smtp_relay_port=port, **FAST)
    run_queuer()

    async def all_arrived() -> bool:
        return len(handler.messages) >= LEADS * STEPS

    await _wait(all_arrived)
    await asyncio.sleep(1)  # nothing more arrives
    assert len(handler.messages) == LEADS * STEPS
    published = []
    deadline = time.monotonic() + 10
    while len(published) < LEADS * STEPS and time.monotonic() < deadline:
        item = await channel.get_message(ignore_subscribe_messages=True, timeout=1)
        if item is not None:  # (None also for the subscribe confirmation it skips)
            published.append(json.loads(item["data"]))
    await channel.aclose()
    await live.aclose()
    assert len(published) == LEADS * STEPS and {p["kind"] for p in published} == {"SENT"}
    async with db.tenant_session(tenant) as s:
        domain = await s.get(Domain, domain_id)
        statuses = dict(
            (
                await s.execute(
                    select(EmailMessage.status, func.count()).group_by(EmailMessage.status)
                )
            ).all()
        )
        lead_states = set(
            await s.scalars(select(Lead.status).where(Lead.campaign_id == campaign_id))
        )
    assert statuses == {MessageStatus.SENT: LEADS * STEPS}
    assert lead_states == {LeadStatus.FINISHED}

    dnsfunc = _dns_for(domain)
    by_recipient: dict[str, list] = {}
    for mail_from, rcpts, raw in handler.messages:
        assert dkim.verify(raw, dnsfunc=dnsfunc), "DKIM signature does not verify"
        parsed = email.message_from_bytes(raw, policy=policy.default)
        assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert (
            "/u/" in parsed["List-Unsubscribe"]
            and "<mailto:unsubscribe+" in parsed["List-Unsubscribe"]
        )
        assert mail_from.startswith("bounce+")
        by_recipient.setdefault(rcpts[0], []).append(parsed)
    assert len(by_recipient) == LEADS and all(len(m) == STEPS for m in by_recipient.values())
    async with db.tenant_session(tenant) as s:
        account_ids = dict((a.address, a.id) for a in await s.scalars(select(EmailAccount)))
    for messages in by_recipient.values():  # Feedback-ID: campaign, tenant, kind, sender
        for m in messages:
            sender = account_ids[m["From"].addresses[0].addr_spec]
            assert m["Feedback-ID"] == f"{campaign_id.hex}:{tenant.hex}:campaign:{sender.hex}"
    senders_used = {m["From"].addresses[0].addr_spec for ms in by_recipient.values() for m in ms}
    assert len(senders_used) == 3  # round robin over the accounts
    for messages in by_recipient.values():
        first = next(m for m in messages if m["Subject"].startswith("Hi "))
        follow_ups = [m for m in messages if m["Subject"] == "Re: hi"]
        assert len(follow_ups) == STEPS - 1
        for follow_up in follow_ups:  # threaded to step 1, from the same account
            assert follow_up["In-Reply-To"] == first["Message-ID"]
            assert follow_up["References"] == first["Message-ID"]
            assert follow_up["From"] == first["From"]


async def test_a_hard_bounce_at_rcpt_suppresses_the_address_and_stops_the_lead(
    db: Database, settings: Settings, sink, start_worker, run_queuer
) -> None:
    handler, port = sink
    handler.refuse = {"lead0@inbox.example"}
    tenant, _, _ = await sending_campaign(db, settings, lead_count=3, steps=2, accounts_n=1)
    start_worker(processes=1, threads=2, smtp_relay_port=port)
    run_queuer()

    async def done() -> bool:
        return len(handler.messages) >= 4

    await _wait(done)
    await asyncio.sleep(1)
    async with db.tenant_session(tenant) as s:
        bounced = await s.scalar(select(Lead).where(Lead.email == "lead0@inbox.example"))
        suppressed = await s.scalar(select(func.count()).select_from(Suppression))
    assert bounced.status == LeadStatus.BOUNCED
    assert suppressed == 1
    assert len(handler.messages) == 4  # the two other leads got both steps; lead0 nothing


def test_the_window_opens_at_the_next_allowed_local_hour_across_dst() -> None:
    campaign = Campaign(
        timezone="Europe/Berlin", window_days=[1, 2, 3, 4, 5], start_hour=9, end_hour=17
    )
    # Saturday 2026-03-28 20:00 UTC → Monday 2026-03-30 09:00 CEST (after the DST change) = 07:00 UTC
    assert planning.next_open(campaign, datetime(2026, 3, 28, 20, tzinfo=UTC)) == datetime(
        2026, 3, 30, 7, tzinfo=UTC
    )
    # Friday 2026-03-27 10:00 CET is inside the window (09:00 UTC)
    assert planning.next_open(campaign, datetime(2026, 3, 27, 9, tzinfo=UTC)) == datetime(
        2026, 3, 27, 9, tzinfo=UTC
    )
    # the daily cap moves the third send of a day to the next window day
    campaign.send_spacing_seconds = 3600
    stream = planning.slots(campaign, datetime(2026, 3, 27, 14, tzinfo=UTC), daily_limit=2)
    assert [next(stream) for _ in range(3)] == [
        datetime(2026, 3, 27, 14, tzinfo=UTC),
        datetime(2026, 3, 27, 15, tzinfo=UTC),
        datetime(2026, 3, 30, 7, tzinfo=UTC),
    ]


async def _planned(db: Database, tenant, campaign_id) -> dict[str, list[datetime]]:
    """The planned step-1 sends: run_at per account, in order."""
    from models.queue import Job

    async with db.tenant_session(tenant, tier="queue") as s:
        rows = await s.execute(
            select(Job.payload, Job.run_at).where(
                Job.campaign_id == campaign_id, Job.kind == planning.SEND_KIND
            )
        )
        planned: dict[str, list[datetime]] = {}
        for payload, run_at in rows:
            planned.setdefault(payload["account_id"], []).append(run_at)
    return {account: sorted(times) for account, times in planned.items()}


async def test_planning_spreads_sends_over_the_accounts_within_the_window_daily_limit_and_spacing(
    db: Database, settings: Settings
) -> None:
    tenant, campaign_id, _ = await sending_campaign(
        db, settings, lead_count=10, steps=1, accounts_n=2
    )
    async with db.tenant_session(tenant) as s:
        campaign = await s.get(Campaign, campaign_id)
        campaign.timezone, campaign.window_days = "Europe/Berlin", [1, 2, 3, 4, 5]
        campaign.start_hour, campaign.end_hour = 9, 17
        campaign.send_spacing_seconds = 600
        for account in await s.scalars(
            select(EmailAccount).where(EmailAccount.tenant_id == tenant)
        ):
            account.daily_limit = 3
    # Friday 27 March 2026, 17:00 in Berlin: the window has closed; Berlin moves to summer time
    # (UTC+2) on Sunday the 29th, so Monday's 09:00 is 07:00 UTC.
    now = datetime(2026, 3, 27, 16, 0, tzinfo=UTC)
    async with db.tenant_session(tenant) as s:
        planned = await planning.plan_campaign(s, campaign_id, now)
        again = await planning.plan_campaign(s, campaign_id, now)

    assert (planned, again) == (10, 0)  # every lead once; re-planning adds nothing
    monday, tuesday = (datetime(2026, 3, day, 7, tzinfo=UTC) for day in (30, 31))
    each = [monday, monday.replace(minute=10), monday.replace(minute=20), tuesday,
            tuesday.replace(minute=10)]  # fmt: skip
    assert list((await _planned(db, tenant, campaign_id)).values()) == [each, each]
    assert await _refreshes(db, tenant) == []  # too few sends to ask for fresh statistics


async def test_planning_thousands_of_sends_asks_for_fresh_message_statistics(
    db: Database, settings: Settings
) -> None:
    from services import statistics

    tenant, campaign_id, _ = await sending_campaign(
        db, settings, lead_count=statistics.BULK_ROWS, steps=1, accounts_n=1
    )
    began = datetime.now(UTC)
    async with db.tenant_session(tenant) as s:
        assert await planning.plan_campaign(s, campaign_id) == statistics.BULK_ROWS

    [(table, run_at)] = [r for r in await _refreshes(db, tenant) if r[0] != "app.leads"]
    assert table == "content.email_messages" and run_at >= began + timedelta(seconds=5)


async def _refreshes(db: Database, tenant) -> list[tuple[str, datetime]]:
    from models.queue import Job
    from services import statistics

    async with db.tenant_session(tenant, tier="queue") as s:
        rows = await s.execute(
            select(Job.payload, Job.run_at).where(Job.kind == statistics.REFRESH_KIND)
        )
        return [(payload["table"], run_at) for payload, run_at in rows]


async def test_running_campaigns_are_re_planned_once_a_minute(
    db: Database, settings: Settings
) -> None:
    from models.queue import Job

    tenant, campaign_id, _ = await sending_campaign(
        db, settings, lead_count=1, steps=1, accounts_n=1
    )
    now = datetime(2026, 11, 25, 12, 0, 30, tzinfo=UTC)
    async with db.system_session() as s:
        first = await planning.plan_running_campaigns(s, now)
        again = await planning.plan_running_campaigns(s, now)  # same minute: the same job
        await planning.plan_running_campaigns(s, now.replace(minute=1))
    async with db.tenant_session(tenant) as s:
        jobs = await s.scalar(
            select(func.count())
            .select_from(Job)
            .where(
                Job.campaign_id == campaign_id,
                Job.kind == "plan_campaign",
                Job.idempotency_key.like("plan_campaign:%:2026%"),
            )
        )
    assert first >= 1 and again == first
    assert jobs == 2


async def test_an_account_whose_server_keeps_failing_is_paused_and_its_sends_wait(
    db: Database, settings: Settings, sink, start_worker, run_queuer
) -> None:
    from models.infrastructure import AccountStatus, EmailAccount
    from models.queue import Job, JobStatus

    handler, port = sink
    handler.unavailable = True
    tenant, campaign_id, _ = await sending_campaign(
        db, settings, lead_count=3, steps=1, accounts_n=1
    )
    start_worker(processes=1, threads=2, smtp_relay_port=port, account_failures_before_pause=3)
    run_queuer()

    async def paused() -> bool:
        async with db.tenant_session(tenant) as s:
            return await s.scalar(select(EmailAccount.status)) == AccountStatus.PAUSED

    await _wait(paused, within=60)
    async with db.tenant_session(tenant) as s:
        account = await s.scalar(select(EmailAccount))
        sends = list(
            await s.scalars(
                select(Job.status).where(Job.campaign_id == campaign_id, Job.kind == "send_step")
            )
        )
    assert "451" in account.status_reason and "failed 3 times" in account.status_reason
    assert len(sends) == 3 and JobStatus.DEAD not in sends  # they wait for the account
    assert handler.messages == []


@pytest.mark.slow
async def test_a_worker_killed_mid_campaign_never_sends_a_lead_the_same_step_twice(
    db: Database, settings: Settings, sink, start_worker, run_queuer, monkeypatch
) -> None:
    """kill -9 of the worker group while SMTP transactions are in flight (each DATA takes 100 ms):
    the batches it held come back after their lease, and whatever was in flight is not sent
    again. A message whose transaction the kill cut off is SENT-as-assumed, not resent; a
    message still waiting for a connection was never SENDING, and is sent."""
    # The default lease (the queue tests' is short), so the recovery measured is an operator's.
    lease = Settings().queue_lease_seconds
    monkeypatch.setitem(QUEUE_SETTINGS, "queue_lease_seconds", lease)
    handler, port = sink
    handler.delay = 0.1
    leads_n, steps = 150, 2
    tenant, campaign_id, _ = await sending_campaign(
        db, settings, lead_count=leads_n, steps=steps, accounts_n=2
    )
    worker = start_worker(processes=2, threads=2, smtp_relay_port=port, **FAST)
    run_queuer(queue_jobs_per_message=10, queue_lease_seconds=lease)

    async def under_way() -> bool:
        return len(handler.messages) >= 60

    await _wait(under_way)
    worker.kill()
    killed_at = await database_now(db)
    at_kill = len(handler.messages)
    orphans = await held_jobs(db, [j.id for j in await send_jobs(db, tenant, campaign_id)])
    await asyncio.sleep(1)  # a claim the dead worker had sent commits or aborts by now
    async with db.tenant_session(tenant, tier="content") as s:
        in_flight = await s.scalar(
            select(func.count()).where(EmailMessage.status == MessageStatus.SENDING)
        )
    assert at_kill < leads_n * steps, "the campaign ended before the kill: nothing tested"
    start_worker(processes=2, threads=2, smtp_relay_port=port, **FAST)
    recovery = await seconds_until_started_again(db, orphans, killed_at)
    assert recovery < 30  # the platform's operating target

    await _wait(all_sent(db, tenant, leads_n * steps), within=150)
    await asyncio.sleep(1)  # nothing more arrives
    received = [
        (rcpts[0], email.message_from_bytes(raw)["Subject"]) for _, rcpts, raw in handler.messages
    ]
    async with db.tenant_session(tenant, tier="content") as s:
        messages = (
            await s.execute(
                select(
                    EmailMessage.to_address, EmailMessage.step_position, EmailMessage.smtp_response
                )
            )
        ).all()
    async with db.tenant_session(tenant) as s:
        lead_states = set(
            await s.scalars(select(Lead.status).where(Lead.campaign_id == campaign_id))
        )
    by_step = {(to, "Hi" if step == 1 else "Re: hi") for to, step, _ in messages}
    assert len(messages) == leads_n * steps  # one message per lead and step
    counts: dict[tuple[str, str], int] = {}
    for rcpt, subject in received:
        key = (rcpt, "Hi" if subject.startswith("Hi ") else subject)
        counts[key] = counts.get(key, 0) + 1
    assert max(counts.values()) == 1, "a lead got the same step twice"
    assumed = [m for m in messages if m.smtp_response == sending.UNKNOWN_OUTCOME]
    # Every message reached the sink, except those the kill cut off mid-transaction.
    assert (
        set(counts) | {(m.to_address, "Hi" if m.step_position == 1 else "Re: hi") for m in assumed}
        == by_step
    )
    # A message is SENDING only while a connection is held for it: at most the two processes'
    # pools were mid-transaction.
    assert len(assumed) <= in_flight <= 2 * settings.smtp_pool_size
    assert lead_states == {LeadStatus.FINISHED}
    print(
        f"kill at {at_kill} received, {in_flight} in flight; {len(assumed)} assumed sent; "
        f"the last of {len(orphans)} orphaned send jobs ran again {recovery:.1f} s after the kill"
    )


async def test_a_message_that_cannot_be_built_fails_its_own_job_not_the_batch(
    db: Database, settings: Settings, sink
) -> None:
    """One batch holding two tenants' sends; one tenant's step fails to render for its leads
    (bypassing the validation on save): its jobs fail for good, the other's messages go out."""
    from jobs.registry import PermanentJobError
    from models.campaigns import CampaignSequenceStep
    from models.queue import Job

    handler, port = sink
    good, good_campaign, _ = await sending_campaign(
        db, settings, lead_count=3, steps=1, accounts_n=1
    )
    bad, bad_campaign, _ = await sending_campaign(db, settings, lead_count=2, steps=1, accounts_n=1)
    async with db.tenant_session(bad) as s:
        await s.execute(
            update(CampaignSequenceStep)
            .where(CampaignSequenceStep.campaign_id == bad_campaign)
            .values(html="<p>{{ company.no_such_attribute }}</p>")
        )
    jobs = []
    for tenant, campaign_id in ((good, good_campaign), (bad, bad_campaign)):
        async with db.tenant_session(tenant) as s:
            await planning.plan_campaign(s, campaign_id)
        async with db.tenant_session(tenant, tier="queue") as s:
            payloads = await s.scalars(
                select(Job.payload).where(
                    Job.campaign_id == campaign_id, Job.kind == planning.SEND_KIND
                )
            )
            jobs += [(tenant, payload, True) for payload in payloads]
    results = await _send_batch(db, settings, port, jobs)

    assert results[:3] == ["sent"] * 3
    assert all(isinstance(r, PermanentJobError) for r in results[3:]), results
    assert "could not be built" in str(results[3])
    assert sorted(rcpts[0] for _, rcpts, _ in handler.messages) == [
        f"lead{n}@inbox.example" for n in range(3)
    ]
    async with db.tenant_session(bad, tier="content") as s:
        assert await s.scalar(select(func.count()).select_from(EmailMessage)) == 0


async def _hold(db: Database, tenant, domain_id, how: str) -> None:
    """The tenant's domain (or a sending IP given to its accounts) put in the state `how`."""
    from models.infrastructure import DomainStatus, Guard, IpStatus

    if how == "ip blacklisted":
        await sending_ip(
            db, tenant, status=IpStatus.BLACKLISTED, blacklisted_on=["zen.example"],
            guard_reason=f"the {how}",
        )  # fmt: skip
    elif how.startswith("ip"):
        await sending_ip(db, tenant, guard=Guard(how.split()[1].upper()), guard_reason=f"the {how}")
    else:
        values = (
            {"status": DomainStatus.FAILED} if how == "domain failed"
            else {"guard": Guard(how.split()[1].upper()), "guard_reason": f"the {how}"}
        )  # fmt: skip
        async with db.tenant_session(tenant) as s:
            await s.execute(update(Domain).where(Domain.id == domain_id).values(**values))


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("domain failed", "stopped verifying"),
        ("ip blacklisted", "is listed on zen.example"),
        ("domain paused", "the domain paused"),
        ("ip paused", "the ip paused"),
    ],
)
async def test_the_sends_of_a_held_sender_wait_for_it(
    db: Database, settings: Settings, sink, how: str, reason: str
) -> None:
    """A FAILED domain (services/dns.py), a listed IP (services/reputation.py), a paused domain
    or IP (services/guards.py): their sends are deferred with the reason; nothing of theirs
    reaches the server, another tenant's batch-mates go out."""
    from jobs.registry import DeferJob

    handler, port = sink
    good, good_campaign, _ = await sending_campaign(
        db, settings, lead_count=2, steps=1, accounts_n=1
    )
    held, held_campaign, domain_id = await sending_campaign(
        db, settings, lead_count=2, steps=1, accounts_n=1
    )
    await _hold(db, held, domain_id, how)
    jobs = [
        (tenant, payload, True)
        for tenant, campaign_id in ((good, good_campaign), (held, held_campaign))
        for payload in await _send_payloads(db, tenant, campaign_id)
    ]
    results = await _send_batch(db, settings, port, jobs)

    assert results[:2] == ["sent"] * 2
    assert all(isinstance(r, DeferJob) and reason in str(r) for r in results[2:]), results
    assert len(handler.messages) == 2


@pytest.mark.parametrize("how", ["domain throttled", "ip throttled"])
async def test_a_throttled_sender_sends_at_half_its_rates(
    db: Database, settings: Settings, sink, how: str
) -> None:
    """With 4 sends a minute per account, a throttled domain's or IP's account gets 2 of its 4
    sends through; the others wait for room in the window."""
    from jobs.registry import DeferJob

    handler, port = sink
    tenant, campaign_id, domain_id = await sending_campaign(
        db, settings, lead_count=4, steps=1, accounts_n=1
    )
    await _hold(db, tenant, domain_id, how)
    jobs = [(tenant, p, True) for p in await _send_payloads(db, tenant, campaign_id)]
    results = await _send_batch(db, settings, port, jobs, {**FAST, "account_sends_per_minute": 4})

    assert results.count("sent") == 2 and len(handler.messages) == 2
    assert all(isinstance(r, DeferJob) and "rate full" in str(r) for r in results if r != "sent")


@pytest.mark.parametrize("level", ["tenant", "domain", "ip", "account"])
async def test_each_level_of_the_nested_limits_holds_across_a_batch(
    db: Database, settings: Settings, sink, level: str
) -> None:
    """Five leads, two accounts of one domain on the relay, 3 sends a minute at one level and
    every other level high: 3 go out (for the account level, 3 per account: all 5)."""
    handler, port = sink
    tenant, campaign_id, _ = await sending_campaign(
        db, settings, lead_count=5, steps=1, accounts_n=2
    )
    jobs = [(tenant, p, True) for p in await _send_payloads(db, tenant, campaign_id)]
    results = await _send_batch(db, settings, port, jobs, {**FAST, f"{level}_sends_per_minute": 3})

    expected = 5 if level == "account" else 3
    assert results.count("sent") == len(handler.messages) == expected


async def test_the_provider_limit_holds_per_recipient_provider_within_one_batch(
    db: Database, resolving: Settings, dns_server, sink
) -> None:
    """Four leads at a domain whose mail Google receives, three at one with no MX (other): with
    2 sends a minute to gmail from the relay, one batch sends 2 + 3 and defers the other two
    gmail sends; every other level's limit is high."""
    from jobs.registry import DeferJob

    handler, port = sink
    tenant, campaign_id, _ = await sending_campaign(
        db, resolving, lead_count=7, steps=1, accounts_n=1
    )
    gmail, other = f"g-{tenant.hex[:8]}.example", f"o-{tenant.hex[:8]}.example"
    dns_server.zone.add(gmail, "MX", (5, "gmail-smtp-in.l.google.com"))
    async with db.tenant_session(tenant) as s:
        for n, lead in enumerate(await s.scalars(select(Lead).order_by(Lead.email))):
            lead.email = f"lead{n}@{gmail if n < 4 else other}"
    jobs = [(tenant, p, True) for p in await _send_payloads(db, tenant, campaign_id)]
    limits = {**FAST, "provider_sends_per_minute": {"gmail": 2, "other": 100_000}}
    results = await _send_batch(db, resolving, port, jobs, limits)

    received = sorted(rcpts[0].partition("@")[2] for _, rcpts, _ in handler.messages)
    assert received == [gmail] * 2 + [other] * 3
    deferred = [r for r in results if r != "sent"]
    assert len(deferred) == 2 and all(isinstance(r, DeferJob) for r in deferred)


async def test_a_policy_refusal_at_rcpt_is_a_bounce_that_does_not_suppress_the_address(
    db: Database, settings: Settings, sink
) -> None:
    """5.7.515 refuses the sender, not the address (services/bounces.py)."""
    from models.content import EmailEvent

    handler, port = sink
    handler.policy = {"lead0@inbox.example"}
    tenant, campaign_id, _ = await sending_campaign(
        db, settings, lead_count=2, steps=1, accounts_n=1
    )
    jobs = [(tenant, p, True) for p in await _send_payloads(db, tenant, campaign_id)]
    await _send_batch(db, settings, port, jobs)

    async with db.tenant_session(tenant) as s:
        lead = await s.scalar(select(Lead).where(Lead.email == "lead0@inbox.example"))
        suppressed = await s.scalar(select(func.count()).select_from(Suppression))
    async with db.tenant_session(tenant, tier="content") as s:
        bounce = await s.scalar(select(EmailEvent).where(EmailEvent.kind == "BOUNCE"))
        status = await s.scalar(
            select(EmailMessage.status).where(EmailMessage.to_address == "lead0@inbox.example")
        )
    assert suppressed == 0 and lead.status != LeadStatus.BOUNCED
    assert bounce is not None and bounce.details["class"] == "policy"
    assert (bounce.details["hard"], bounce.details["refused"]) == (False, True)
    assert status == MessageStatus.BOUNCED  # not tried again
    assert len(handler.messages) == 1


async def _send_batch(
    db: Database, settings: Settings, port: int, jobs: list, limits: dict = FAST
) -> list:
    """`jobs` sent as one batch to the sink on `port`, with these send limits (by default out of
    the way)."""
    redis = Redis.from_url(settings.redis_url)
    try:
        return await sending.send_batch(
            db, settings.model_copy(update={"smtp_relay_port": port, **limits}), redis, jobs
        )
    finally:
        await redis.aclose()


async def _send_payloads(db: Database, tenant, campaign_id) -> list[dict]:
    """The campaign's send jobs' payloads, planned now."""
    from models.queue import Job

    async with db.tenant_session(tenant) as s:
        await planning.plan_campaign(s, campaign_id)
    async with db.tenant_session(tenant, tier="queue") as s:
        return list(
            await s.scalars(
                select(Job.payload).where(
                    Job.campaign_id == campaign_id, Job.kind == planning.SEND_KIND
                )
            )
        )


@pytest.fixture(scope="module")
async def bomb_sends(db: Database, settings: Settings):
    """A campaign with one lead per bomb, whose sends go out, and a campaign of one lead whose
    step each test replaces with a bomb (bypassing the check on save, like a template stored
    before the checks existed); ((tenant, payloads), (tenant, campaign id, payload))."""
    good, good_campaign, _ = await sending_campaign(
        db, settings, lead_count=len(BOMBS), steps=1, accounts_n=1
    )
    bad, bad_campaign, _ = await sending_campaign(db, settings, lead_count=1, steps=1, accounts_n=1)
    good_payloads = await _send_payloads(db, good, good_campaign)
    [bad_payload] = await _send_payloads(db, bad, bad_campaign)
    await quiet_queue(db, settings)  # sent here through send_batch, not by a worker
    return (good, good_payloads), (bad, bad_campaign, bad_payload)


@pytest.mark.parametrize(
    ("number", "source"), [pytest.param(n, b.values[0], id=b.id) for n, b in enumerate(BOMBS)]
)
async def test_a_stored_template_bomb_fails_its_send_job_for_good_within_the_time_limit(
    db: Database, settings: Settings, sink, bomb_sends, number: int, source: str
) -> None:
    from jobs.registry import PermanentJobError
    from models.campaigns import CampaignSequenceStep

    handler, port = sink
    (good, good_payloads), (bad, bad_campaign, bad_payload) = bomb_sends
    async with db.tenant_session(bad) as s:
        await s.execute(
            update(CampaignSequenceStep)
            .where(CampaignSequenceStep.campaign_id == bad_campaign)
            .values(html=source)
        )
    redis = Redis.from_url(settings.redis_url)
    started = time.monotonic()
    try:
        results = await sending.send_batch(
            db,
            settings.model_copy(update={"smtp_relay_port": port, **FAST}),
            redis,
            [(good, good_payloads[number], True), (bad, bad_payload, True)],
        )
    finally:
        await redis.aclose()

    assert time.monotonic() - started < sandbox.RENDER_SECONDS + 2
    assert results[0] == "sent"
    assert isinstance(results[1], PermanentJobError), results
    assert str(results[1]).startswith("the message could not be built: The html could not be")
    assert len(handler.messages) == 1  # the good campaign's message went out
    async with db.tenant_session(bad, tier="content") as s:
        assert await s.scalar(select(func.count()).select_from(EmailMessage)) == 0


async def test_a_batch_of_slow_templates_gives_the_event_loop_back_after_each_message(
    db: Database, settings: Settings, sink
) -> None:
    """Each message of a stored template that runs to the render time limit holds the worker's
    event loop, and so the heartbeats renewing its jobs' leases, for one render, not eight."""
    from jobs.registry import PermanentJobError
    from models.campaigns import CampaignSequenceStep

    _, port = sink
    tenant, campaign_id, _ = await sending_campaign(
        db, settings, lead_count=3, steps=1, accounts_n=1
    )
    async with db.tenant_session(tenant) as s:
        await s.execute(
            update(CampaignSequenceStep)
            .where(CampaignSequenceStep.campaign_id == campaign_id)
            .values(html=SLOW)
        )
    payloads = await _send_payloads(db, tenant, campaign_id)
    await quiet_queue(db, settings)
    ticks = [time.monotonic()]

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.01)
            ticks.append(time.monotonic())

    ticker = asyncio.create_task(tick())
    redis = Redis.from_url(settings.redis_url)
    try:
        results = await sending.send_batch(
            db,
            settings.model_copy(update={"smtp_relay_port": port, **FAST}),
            redis,
            [(tenant, payload, True) for payload in payloads],
        )
    finally:
        ticker.cancel()
        await redis.aclose()

    assert len(results) == 3 and all(isinstance(r, PermanentJobError) for r in results)
    assert all("takes longer than" in str(r) for r in results)
    ticks.append(time.monotonic())
    longest_wait = max(later - earlier for earlier, later in pairwise(ticks))
    assert longest_wait < sandbox.RENDER_SECONDS + 0.8, longest_wait
