"""Warm-up: the ramp over simulated days (a complaint halves it, then it holds), the planner
capping a warming account's campaign mail at today's target, and warm-up mail really exchanged
between two accounts: sent over SMTP to a real aiosmtpd server, delivered (by the test, as a
provider would) into the other account's Junk folder on the real dovecot, rescued to INBOX,
marked read and important, and answered for the share the sender's ramp asks."""

from __future__ import annotations

import asyncio
import email
import uuid
from datetime import UTC, date, datetime, timedelta
from email import policy
from email.utils import make_msgid

import dkim
import pytest
from redis.asyncio import Redis
from sqlalchemy import func, insert, select, update

from models.billing import Plan
from models.content import EmailEvent, EventKind
from models.infrastructure import (
    AccountStatus,
    Domain,
    EmailAccount,
    WarmupMessage,
    WarmupMessageStatus,
    WarmupState,
)
from models.queue import Job
from models.sessions import Database
from models.tenancy import Tenant
from penguinmails.settings import Settings
from services import campaigns, domains, leads, planning, replies, warmup
from services.accounts import create_email_account
from services.warmup import Ramp, set_warmup
from tests.factories import create_tenant
from tests.imap import JUNK, Dovecot, start_dovecot
from tests.jobs.helpers import quiet_queue, wait_for
from tests.smtp import running_sink

PASSWORD = "correct horse battery staple"
FAST = {"account_sends_per_minute": 100_000, "ip_sends_per_minute": 100_000}
NAMES = ("Anna Berg", "Ben Ortiz", "Chloe Ngata")


@pytest.fixture(scope="module")
def dovecot_without_move():
    server = start_dovecot(capabilities="IMAP4rev1 LITERAL+ UIDPLUS SPECIAL-USE")
    yield server
    server.stop()


# --- arranging: a tenant whose accounts warm up, their mailboxes on dovecot ------------------


async def warm_accounts(
    db: Database,
    settings: Settings,
    dovecot: Dovecot,
    ramps: list[Ramp],
    now: datetime | None = None,
) -> tuple[uuid.UUID, list[EmailAccount]]:
    """A tenant (on the scale plan) with one DKIM-keyed domain and an account per ramp, warm-up
    switched on at `now` with that ramp, each with its mailbox on the test's dovecot."""
    async with db.system_session() as s:
        tenant = await create_tenant(s, "Warm")
        plan = await s.scalar(select(Plan.id).where(Plan.code == "scale"))
        await s.execute(update(Tenant).where(Tenant.id == tenant).values(plan_id=plan))
    accounts = []
    async with db.tenant_session(tenant) as s:
        domain = await domains.add_domain(s, settings, tenant, f"warm-{tenant.hex[:8]}.example")
        for name, ramp in zip(NAMES, ramps, strict=False):
            account = await create_email_account(
                s, settings, tenant, domain.id, name.split()[0].lower(), name, PASSWORD
            )
            account.imap_host, account.imap_port = dovecot.host, dovecot.port
            await set_warmup(s, tenant, account.id, True, ramp, now=now)
            accounts.append(account)
    for account in accounts:
        dovecot.add_user(account.address, PASSWORD)
    return tenant, accounts


async def due_warmup(
    db: Database, settings: Settings, dovecot: Dovecot, ramps: list[Ramp]
) -> tuple[uuid.UUID, list[EmailAccount], list[WarmupMessage]]:
    """Accounts as warm_accounts makes them, switched on and ticked yesterday just after
    midnight: the day's warm-up mail is planned and all of it is due by now."""
    yesterday = (datetime.now(UTC) - timedelta(days=1)).replace(hour=0, minute=1)
    tenant, accounts = await warm_accounts(db, settings, dovecot, ramps, yesterday)
    await warmup.tick(db, settings, tenant, yesterday)
    return tenant, accounts, await warmup_messages(db, tenant)


async def states(db: Database, tenant: uuid.UUID) -> dict[uuid.UUID, WarmupState]:
    async with db.tenant_session(tenant) as s:
        return {w.account_id: w for w in await s.scalars(select(WarmupState))}


async def warmup_messages(db: Database, tenant: uuid.UUID) -> list[WarmupMessage]:
    async with db.tenant_session(tenant) as s:
        return list(await s.scalars(select(WarmupMessage).order_by(WarmupMessage.send_at)))


async def change(db: Database, tenant: uuid.UUID, model, row_id: uuid.UUID, **values) -> None:
    async with db.tenant_session(tenant) as s:
        await s.execute(update(model).where(model.id == row_id).values(**values))


async def bad_news(
    db: Database, tenant: uuid.UUID, account: uuid.UUID, kind: EventKind, at: datetime, **details
) -> None:
    """A complaint or bounce on the account's campaign mail, as services/inbound.py records it."""
    async with db.system_session("content") as s:
        await s.execute(
            insert(EmailEvent).values(
                tenant_id=tenant, kind=kind, account_id=account, occurred_at=at, details=details
            )
        )


def local(settings: Settings) -> Settings:
    """The platform's settings, except that IMAP may log in to the loopback dovecot without TLS,
    and a warm-up reply is due at once rather than within the hour."""
    return settings.model_copy(
        update={"imap_allow_plaintext": True, "warmup_reply_delay_seconds": 0}
    )


# --- the ramp --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ramp", "day", "target", "back"),
    [
        (Ramp(10, 2, 40), 1, 10, 1),
        (Ramp(10, 2, 40), 12, 32, 4),  # half of 32 is 16: day 4
        (Ramp(10, 2, 40), 30, 40, 6),  # past the max it still halves: 20 is day 6
        (Ramp(20, 5, 30), 3, 30, 1),  # half of 30 is below the start
        (Ramp(10, 0, 40), 9, 10, 1),  # a flat ramp
    ],
)
def test_a_ramp_grows_by_its_increase_up_to_its_max_and_steps_back_to_half(
    ramp: Ramp, day: int, target: int, back: int
) -> None:
    assert ramp.target(day) == target
    assert ramp.stepped_back(day) == back


async def test_thirty_days_of_ticks_grow_the_ramp_and_a_complaint_halves_it_then_it_holds(
    db: Database, settings: Settings, dovecot: Dovecot
) -> None:
    # In the future: the warm-up mail planned on the way is never due for a worker.
    first = datetime(datetime.now(UTC).year + 2, 3, 1, 0, 30, tzinfo=UTC)
    tenant, (anna, ben) = await warm_accounts(db, settings, dovecot, [Ramp(), Ramp()], first)
    seen: dict[uuid.UUID, list[tuple[int, int]]] = {anna.id: [], ben.id: []}
    planned: list[int] = []

    for n in range(30):
        now = first + timedelta(days=n)
        if n == 11:  # day 12, at noon: a complaint about Anna's campaign mail
            await bad_news(db, tenant, anna.id, EventKind.COMPLAINT, now + timedelta(hours=12))
        ticked = await warmup.tick(db, settings, tenant, now)
        again = await warmup.tick(db, settings, tenant, now + timedelta(hours=20))
        assert (ticked.ticked, again.ticked) == (2, 0)  # once a day
        planned.append(ticked.planned)
        for account_id, state in (await states(db, tenant)).items():
            seen[account_id].append((state.day, state.today_target))

    assert [target for _, target in seen[anna.id]] == [
        10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32,  # + 2 a day
        16, 16, 16,  # the complaint: half of 32, held two more days
        18, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38, 40, 40, 40, 40,  # growing again, up to 40
    ]  # fmt: skip
    assert [day for day, _ in seen[anna.id]][11:16] == [12, 4, 4, 4, 5]
    assert seen[ben.id] == [(d, min(40, 8 + 2 * d)) for d in range(1, 31)]  # not his complaint
    # Each sends its target to the other each day, within the warm-up hours.
    assert planned == [a + b for (_, a), (_, b) in zip(seen[anna.id], seen[ben.id], strict=True)]
    messages = await warmup_messages(db, tenant)
    by_day: dict[date, int] = {}
    for m in messages:
        assert m.to_account_id == (ben.id if m.from_account_id == anna.id else anna.id)
        assert 8 <= m.send_at.astimezone(UTC).hour < 18 and m.send_at.date() == m.day
        by_day[m.day] = by_day.get(m.day, 0) + (m.from_account_id == anna.id)
    assert by_day[first.date()] == 10 and by_day[(first + timedelta(days=12)).date()] == 16


async def test_a_hard_bounce_steps_the_ramp_back_and_a_soft_one_does_not(
    db: Database, settings: Settings, dovecot: Dovecot
) -> None:
    first = datetime(datetime.now(UTC).year + 2, 5, 1, 0, 30, tzinfo=UTC)
    ramp = Ramp(10, 5, 100)
    tenant, (anna, ben) = await warm_accounts(db, settings, dovecot, [ramp, ramp], first)
    for n in range(6):  # to day 6: target 35
        await warmup.tick(db, settings, tenant, first + timedelta(days=n))
    noon = first + timedelta(days=5, hours=12)
    await bad_news(db, tenant, anna.id, EventKind.BOUNCE, noon, hard=True)
    await bad_news(db, tenant, ben.id, EventKind.BOUNCE, noon, hard=False)

    result = await warmup.tick(db, settings, tenant, first + timedelta(days=6))

    after = await states(db, tenant)
    assert result.stepped_back == 1
    [event] = result.events
    assert (event.kind, event.subject_id) == ("warmup_stepped_back", anna.id)
    assert "from 35 to 15 a day" in event.message
    assert (after[anna.id].day, after[anna.id].today_target, after[anna.id].hold_days) == (
        2, 15, settings.warmup_hold_days,
    )  # fmt: skip
    assert (after[ben.id].day, after[ben.id].today_target) == (7, 40)


async def test_an_account_with_no_partner_sends_no_warmup_mail_but_its_ramp_moves_on(
    db: Database, settings: Settings, dovecot: Dovecot
) -> None:
    first = datetime(datetime.now(UTC).year + 2, 7, 1, 0, 30, tzinfo=UTC)
    tenant, [anna] = await warm_accounts(db, settings, dovecot, [Ramp()], first)

    results = [await warmup.tick(db, settings, tenant, first + timedelta(days=n)) for n in (0, 1)]

    assert [(r.ticked, r.alone, r.planned) for r in results] == [(1, 1, 0), (1, 1, 0)]
    state = (await states(db, tenant))[anna.id]
    assert (state.day, state.today_target) == (2, 12)
    assert await warmup_messages(db, tenant) == []


async def test_the_scheduler_queues_one_tick_per_tenant_with_warmup_on_per_interval(
    db: Database, settings: Settings, dovecot: Dovecot
) -> None:
    tenant, _ = await warm_accounts(db, settings, dovecot, [Ramp(), Ramp()])
    now = datetime.now(UTC)

    for at in (now, now, now + timedelta(seconds=settings.warmup_tick_seconds)):
        async with db.system_session() as s:
            await warmup.queue_ticks(s, settings, at)

    async with db.system_session("queue") as s:
        jobs = list(
            await s.scalars(
                select(Job).where(Job.kind == warmup.TICK_KIND, Job.tenant_id == tenant)
            )
        )
    assert len(jobs) == 2
    await quiet_queue(db, settings)  # the jobs are not for a worker of another test


# --- campaign mail of a warming account ------------------------------------------------------


async def test_a_warming_accounts_campaign_mail_is_capped_at_todays_target(
    db: Database, settings: Settings, dovecot: Dovecot
) -> None:
    tenant, [anna] = await warm_accounts(db, settings, dovecot, [Ramp(start=7)])
    async with db.tenant_session(tenant) as s:
        spec = campaigns.CampaignSpec(
            name="warm campaign",
            account_ids=[anna.id],
            steps=[campaigns.StepSpec(delay_days=0, subject="Hi", text="Hello")],
            window=campaigns.WindowSpec(timezone="UTC", days=list(range(1, 8)), start_hour=0,
                                        end_hour=24),
        )  # fmt: skip
        campaign = await campaigns.create_campaign(s, tenant, spec)
        campaign.send_spacing_seconds = 0
        csv = "email\n" + "".join(f"lead{n}@inbox.example\n" for n in range(20))
        await leads.import_leads(s, settings, campaign.id, csv)
        await campaigns.launch(s, campaign.id)
    async with db.tenant_session(tenant) as s:
        at = datetime(datetime.now(UTC).year + 2, 1, 1, 0, 0, tzinfo=UTC)
        await planning.plan_campaign(s, campaign.id, now=at)

    async with db.tenant_session(tenant, tier="queue") as s:
        days = (
            await s.execute(
                select(func.date(Job.run_at), func.count())
                .where(Job.campaign_id == campaign.id, Job.kind == planning.SEND_KIND)
                .group_by(func.date(Job.run_at))
                .order_by(func.date(Job.run_at))
            )
        ).all()
    assert [count for _, count in days] == [7, 7, 6]  # 20 leads, 7 a day: the ramp's start
    await quiet_queue(db, settings)


# --- warm-up mail, sent and received ---------------------------------------------------------


def _dns_for(domain: Domain):
    records = {r["host"] + ".": r["value"].encode() for r in domain.dns_records}
    return lambda name, timeout=5: records.get(name.decode() if isinstance(name, bytes) else name)


async def test_warmup_mail_is_exchanged_rescued_from_junk_and_answered_at_the_senders_rate(
    db: Database, settings: Settings, redis: Redis, dovecot: Dovecot, start_worker, run_queuer
) -> None:
    """Anna's ramp asks for every message to be answered, Ben's for none: Ben answers both of
    Anna's, Anna answers neither of Ben's."""
    await quiet_queue(db, settings)
    tenant, (anna, ben), planned = await due_warmup(
        db, settings, dovecot, [Ramp(2, 1, 5, reply_rate=1.0), Ramp(2, 1, 5, reply_rate=0.0)]
    )
    assert len(planned) == 4
    address = {anna.id: anna.address, ben.id: ben.address}
    with running_sink() as (sink, port):
        start_worker(processes=1, threads=2, smtp_relay_port=port, **FAST)
        run_queuer()

        async def sent(count: int):
            async def arrived() -> bool:
                return len(sink.messages) >= count

            return arrived

        await wait_for(await sent(4))
        async with db.tenant_session(tenant) as s:
            domain = await s.get(Domain, anna.domain_id)
        tokens = {}
        for mail_from, [rcpt], raw in sink.messages:
            parsed = email.message_from_bytes(raw, policy=policy.default)
            assert dkim.verify(raw, dnsfunc=_dns_for(domain))
            assert mail_from == parsed["From"].addresses[0].addr_spec  # a person's own mail
            assert parsed["List-Unsubscribe"] is None and parsed.get_content_type() == "text/plain"
            sender = anna if mail_from == anna.address else ben
            assert parsed["Feedback-ID"] == f":{tenant.hex}:warmup:{sender.id.hex}"
            tokens[parsed[warmup.TAG_HEADER]] = parsed["Message-ID"]
            dovecot.append(rcpt, PASSWORD, raw, JUNK)  # the provider took it for spam

        polls = {
            a.address: await replies.poll_account(db, local(settings), redis, tenant, a.id)
            for a in (anna, ben)
        }

        for account in (anna, ben):
            assert dovecot.folder(account.address, PASSWORD, JUNK) == []
            inbox = dovecot.folder(account.address, PASSWORD, "INBOX")
            assert [flags >= {"\\Seen", "\\Flagged"} for flags, _ in inbox] == [True, True]
            poll = polls[account.address]
            assert (poll.warmup_found, poll.warmup_rescued, poll.replies) == (2, 2, 0)
        await wait_for(await sent(6))
        await asyncio.sleep(1)  # and no more
        assert len(sink.messages) == 6
        answers = [
            email.message_from_bytes(raw, policy=policy.default) for *_, raw in sink.messages[4:]
        ]
        for answer in answers:
            assert (answer["From"].addresses[0].addr_spec, answer["To"]) == (
                ben.address,
                anna.address,
            )
            assert answer["Subject"].startswith("Re: ")
            assert (
                answer["In-Reply-To"] in tokens.values() and answer[warmup.TAG_HEADER] not in tokens
            )
            dovecot.append(anna.address, PASSWORD, answer.as_bytes())  # straight to her INBOX

        # Anna's poll finds the answers: read, important, never answered, never campaign replies.
        again = await replies.poll_account(db, local(settings), redis, tenant, anna.id)
        once_more = await replies.poll_account(db, local(settings), redis, tenant, anna.id)
        await asyncio.sleep(1)

    assert (again.warmup, again.warmup_found, again.replies) == (4, 2, 0)
    assert (once_more.warmup_found, once_more.replies) == (0, 0)
    assert len(sink.messages) == 6
    flags = [f for f, _ in dovecot.folder(anna.address, PASSWORD, "INBOX")]
    assert len(flags) == 4 and all(f >= {"\\Seen", "\\Flagged"} for f in flags)
    rows = await warmup_messages(db, tenant)
    assert {m.status for m in rows} == {WarmupMessageStatus.SENT}
    assert all(m.received_at is not None for m in rows)
    assert sorted(
        (address[m.from_account_id], m.replied_at is not None, m.reply_to_id is not None)
        for m in rows
    ) == sorted([(anna.address, True, False)] * 2 + [(ben.address, False, False)] * 2
                + [(ben.address, False, True)] * 2)  # fmt: skip
    await quiet_queue(db, settings)


async def test_a_warmup_message_is_sent_once_however_often_its_job_runs(
    db: Database, settings: Settings, redis: Redis, dovecot: Dovecot
) -> None:
    tenant, _, (first, second) = await due_warmup(
        db, settings, dovecot, [Ramp(1, 0, 1), Ramp(1, 0, 1)]
    )
    # A worker died during the second's transaction.
    await change(db, tenant, WarmupMessage, second.id, status=WarmupMessageStatus.SENDING)

    with running_sink() as (sink, port):
        fast = settings.model_copy(update={**FAST, "smtp_relay_port": port})
        outcomes = [await warmup.send(db, fast, redis, tenant, first.id) for _ in range(2)]
        assumed = await warmup.send(db, fast, redis, tenant, second.id)

    assert outcomes == ["sent", "skipped: already SENT"]
    assert assumed == "sent" and len(sink.messages) == 1  # taken as sent, not sent again
    assert {m.status for m in await warmup_messages(db, tenant)} == {WarmupMessageStatus.SENT}
    await quiet_queue(db, settings)


async def test_warmup_mail_of_a_paused_account_is_cancelled_not_sent(
    db: Database, settings: Settings, redis: Redis, dovecot: Dovecot
) -> None:
    tenant, (anna, _), planned = await due_warmup(
        db, settings, dovecot, [Ramp(1, 0, 1), Ramp(1, 0, 1)]
    )
    await change(db, tenant, EmailAccount, anna.id, status=AccountStatus.PAUSED)
    [hers] = [m for m in planned if m.from_account_id == anna.id]

    outcome = await warmup.send(db, settings, redis, tenant, hers.id)

    assert outcome == f"skipped: {anna.address} is PAUSED"
    [after] = [m for m in await warmup_messages(db, tenant) if m.id == hers.id]
    assert after.status == WarmupMessageStatus.CANCELLED
    await quiet_queue(db, settings)


async def test_without_move_warmup_mail_is_copied_out_of_junk_and_expunged_there(
    db: Database, settings: Settings, redis: Redis, dovecot_without_move: Dovecot
) -> None:
    tenant, (anna, ben), planned = await due_warmup(
        db, settings, dovecot_without_move, [Ramp(1, 0, 1), Ramp(1, 0, 1, reply_rate=0.0)]
    )
    [to_ben] = [m for m in planned if m.to_account_id == ben.id]
    await change(  # sent, as the send job records it
        db, tenant, WarmupMessage, to_ben.id, status=WarmupMessageStatus.SENT, sent_at=func.now()
    )
    raw = (
        f"From: {anna.address}\r\nTo: {ben.address}\r\nSubject: {to_ben.subject}\r\n"
        f"Message-ID: {to_ben.message_id_header}\r\n{warmup.TAG_HEADER}: {to_ben.token}\r\n\r\n"
        "Hi Ben\r\n"
    ).encode()
    unrelated = f"From: x@elsewhere.example\r\nMessage-ID: {make_msgid()}\r\n\r\nspam\r\n".encode()
    dovecot_without_move.append(ben.address, PASSWORD, raw, JUNK)
    dovecot_without_move.append(ben.address, PASSWORD, unrelated, JUNK)

    poll = await replies.poll_account(db, local(settings), redis, tenant, ben.id)

    assert (poll.warmup_found, poll.warmup_rescued) == (1, 1)
    [(flags, moved)] = dovecot_without_move.folder(ben.address, PASSWORD, "INBOX")
    assert flags >= {"\\Seen", "\\Flagged"} and moved == raw
    assert [m for _, m in dovecot_without_move.folder(ben.address, PASSWORD, JUNK)] == [unrelated]
    await quiet_queue(db, settings)


@pytest.mark.parametrize(
    ("listed", "junk"),
    [
        ([b'(\\HasNoChildren \\Junk) "." "Bulk Mail"', b'(\\HasNoChildren) "." INBOX'],
         '"Bulk Mail"'),
        ([b'(\\HasNoChildren) "/" INBOX', b'(\\HasNoChildren) "/" Spam'], "Spam"),
        ([(b'(\\HasNoChildren) "/" {11}', b"Junk E-mail"), b"", b'(\\HasNoChildren) "/" INBOX'],
         '"Junk E-mail"'),
        ([b'(\\HasNoChildren) "/" Junk', b'(\\HasNoChildren \\Junk) "/" Quarantine'],
         "Quarantine"),
        ([b"(\\HasNoChildren) NIL INBOX"], None),
    ],
)  # fmt: skip
def test_the_junk_folder_is_the_special_use_one_else_one_of_the_usual_names(
    listed: list, junk: str | None
) -> None:
    assert replies.junk_folder(listed) == junk
