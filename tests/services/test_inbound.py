"""Inbound mail: bounces (RFC 3464 DSNs) and complaints (RFC 5965 ARF reports) stop the lead and
suppress the address, a mailto unsubscribe unsubscribes, and nothing a sender can put in a
message stops the server; all of it is kept in content.inbound_messages."""

from __future__ import annotations

import uuid
from email.mime.text import MIMEText

import aiosmtplib
import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select, text

from jobs.queue import enqueue
from models.campaigns import Lead, LeadStatus, Suppression, SuppressionReason
from models.content import EmailMessage, EventKind, InboundKind, InboundMessage, MessageStatus
from models.queue import Job, JobStatus
from models.sessions import Database
from penguinmails.settings import Settings
from services import inbound
from tests.factories import Sent, events, sent_message
from tests.reports import BOUNCE_HOST, arf, bounce_address, deliver, dsn, running_inbound


@pytest.fixture
async def redis(settings: Settings):
    client = Redis.from_url(settings.redis_url or "redis://127.0.0.1:6379/0")
    yield client
    await client.aclose()


# --- reading the outcome --------------------------------------------------------------------


async def lead_status(db: Database, sent: Sent) -> LeadStatus:
    async with db.system_session() as s:
        return await s.scalar(select(Lead.status).where(Lead.id == sent.lead))


async def suppressions(db: Database, sent: Sent) -> list[tuple[str, SuppressionReason]]:
    async with db.system_session() as s:
        query = select(Suppression.email, Suppression.reason)
        return list((await s.execute(query.where(Suppression.tenant_id == sent.tenant))).all())


async def unprocessed(db: Database) -> int:
    async with db.system_session("content") as s:
        return await s.scalar(
            text("SELECT count(*) FROM content.inbound_messages WHERE error IS NOT NULL")
        )


async def pending_sends(db: Database, sent: Sent) -> list[uuid.UUID]:
    async with db.tenant_session(sent.tenant) as s:
        return [
            await enqueue(s, "send_step", {"lead_id": str(sent.lead), "step": n}, tenant_id=sent.tenant)
            for n in (2, 3)
        ]  # fmt: skip


async def job_statuses(db: Database, ids: list[uuid.UUID]) -> list[JobStatus]:
    async with db.system_session("queue") as s:
        status = dict((await s.execute(select(Job.id, Job.status).where(Job.id.in_(ids)))).all())
    return [status[i] for i in ids]


# --- bounces ---------------------------------------------------------------------------------


async def test_a_hard_bounce_suppresses_the_address_and_stops_the_lead(
    db: Database, redis: Redis
) -> None:
    sent = await sent_message(db)
    jobs = await pending_sends(db, sent)
    diagnostic = "smtp; 550 5.1.1 <someone@recipient.example>: Recipient address rejected"
    raw = dsn(sent, action="failed", status="5.1.1", diagnostic=diagnostic)

    outcome = await inbound.process(db, redis, "", bounce_address(sent), raw)

    assert outcome.action == "hard_bounce"
    assert await lead_status(db, sent) == LeadStatus.BOUNCED
    assert await suppressions(db, sent) == [(sent.email, SuppressionReason.HARD_BOUNCE)]
    assert await job_statuses(db, jobs) == [JobStatus.CANCELLED, JobStatus.CANCELLED]
    async with db.system_session("content") as s:
        message = await s.get(EmailMessage, sent.message.id)
    assert message.status == MessageStatus.BOUNCED
    [event] = await events(db, sent.message.id)
    assert event.kind == EventKind.BOUNCE
    assert event.details == {
        "hard": True, "status": "5.1.1", "class": "hard", "diagnostic": diagnostic,
    }  # fmt: skip
    row = outcome.inbound
    assert (row.kind, row.tenant_id, row.matched_message_id, row.error) == (
        InboundKind.DSN, sent.tenant, sent.message.id, None,
    )  # fmt: skip
    assert row.mail_from is None and row.rcpt_to == bounce_address(sent)


async def test_the_same_hard_bounce_twice_records_one_event(db: Database, redis: Redis) -> None:
    sent = await sent_message(db)
    raw = dsn(sent, action="failed", status="5.1.1", diagnostic="smtp; 550 5.1.1 no such user")

    await inbound.process(db, redis, "", bounce_address(sent), raw)
    await inbound.process(db, redis, "", bounce_address(sent), raw)

    assert [e.kind for e in await events(db, sent.message.id)] == [EventKind.BOUNCE]


async def test_a_soft_bounce_records_an_event_and_suppresses_nothing(
    db: Database, redis: Redis
) -> None:
    sent = await sent_message(db)
    jobs = await pending_sends(db, sent)
    diagnostic = "smtp; 452 4.2.2 Mailbox full"
    raw = dsn(sent, action="delayed", status="4.2.2", diagnostic=diagnostic)

    outcome = await inbound.process(db, redis, "", bounce_address(sent), raw)

    assert outcome.action == "soft_bounce" and outcome.inbound.error is None
    [event] = await events(db, sent.message.id)
    assert (event.kind, event.details) == (
        EventKind.BOUNCE,
        {"hard": False, "status": "4.2.2", "class": "mailbox_full", "diagnostic": diagnostic},
    )  # fmt: skip
    assert await lead_status(db, sent) == LeadStatus.ACTIVE
    assert await suppressions(db, sent) == []
    assert await job_statuses(db, jobs) == [JobStatus.QUEUED, JobStatus.QUEUED]


async def test_a_bounce_to_the_feedback_address_is_matched_by_the_original_message_id(
    db: Database, redis: Redis
) -> None:
    sent = await sent_message(db)
    raw = dsn(sent, action="failed", status="5.1.1", diagnostic="smtp; 550 5.1.1 user unknown")

    outcome = await inbound.process(db, redis, "", "fbl@mail.example.com", raw)

    assert outcome.action == "hard_bounce"
    assert outcome.inbound.matched_message_id == sent.message.id
    assert await lead_status(db, sent) == LeadStatus.BOUNCED


async def test_a_policy_bounce_is_recorded_but_does_not_suppress_the_address(
    db: Database, redis: Redis
) -> None:
    sent = await sent_message(db)
    diagnostic = "smtp; 550 5.7.515 Access denied, sending domain does not meet authentication"
    raw = dsn(sent, action="failed", status="5.7.515", diagnostic=diagnostic)

    outcome = await inbound.process(db, redis, "", bounce_address(sent), raw)

    assert outcome.action == "soft_bounce"
    [event] = await events(db, sent.message.id)
    assert (event.details["hard"], event.details["class"]) == (False, "policy")
    assert await lead_status(db, sent) == LeadStatus.ACTIVE
    assert await suppressions(db, sent) == []


async def test_three_soft_bounces_within_seven_days_suppress_the_address(
    db: Database, redis: Redis
) -> None:
    sent = await sent_message(db)
    raw = dsn(sent, action="failed", status="4.2.2", diagnostic="smtp; 452 4.2.2 mailbox full")

    for n in range(3):
        assert await suppressions(db, sent) == [], f"suppressed after {n} soft bounces"
        await inbound.process(db, redis, "", bounce_address(sent), raw)

    assert [reason for _, reason in await suppressions(db, sent)] == [
        SuppressionReason.REPEATED_SOFT_BOUNCE
    ]
    assert await lead_status(db, sent) == LeadStatus.BOUNCED


# --- complaints and unsubscribes -------------------------------------------------------------


async def test_a_complaint_matched_by_message_id_suppresses_and_marks_the_lead_complained(
    db: Database, redis: Redis
) -> None:
    sent = await sent_message(db)
    jobs = await pending_sends(db, sent)

    outcome = await inbound.process(
        db, redis, "staff@fbl.example.net", "fbl@mail.example.com", arf(sent)
    )

    assert outcome.action == "complaint"
    assert await lead_status(db, sent) == LeadStatus.COMPLAINED
    assert await suppressions(db, sent) == [(sent.email, SuppressionReason.COMPLAINT)]
    assert await job_statuses(db, jobs) == [JobStatus.CANCELLED, JobStatus.CANCELLED]
    [event] = await events(db, sent.message.id)
    assert (event.kind, event.details) == (EventKind.COMPLAINT, {"feedback_type": "abuse"})
    assert (outcome.inbound.kind, outcome.inbound.tenant_id) == (InboundKind.ARF, sent.tenant)


async def test_a_not_spam_report_changes_nothing(db: Database, redis: Redis) -> None:
    sent = await sent_message(db)

    outcome = await inbound.process(
        db, redis, "staff@fbl.example.net", "fbl@mail.example.com",
        arf(sent, feedback_type="not-spam"),
    )  # fmt: skip

    assert outcome.action == "nothing" and outcome.inbound.error is None
    assert await lead_status(db, sent) == LeadStatus.ACTIVE
    assert await events(db, sent.message.id) == []


async def test_mail_to_the_unsubscribe_address_unsubscribes_the_lead(
    db: Database, redis: Redis
) -> None:
    sent = await sent_message(db)
    request = MIMEText("unsubscribe")
    request["From"], request["Subject"] = sent.email, "Unsubscribe"

    outcome = await inbound.process(
        db, redis, sent.email,
        f"unsubscribe+{sent.message.verp_token}@{BOUNCE_HOST}", request.as_bytes(),
    )  # fmt: skip

    assert outcome.action == "unsubscribe" and outcome.inbound.error is None
    assert outcome.inbound.kind == InboundKind.UNSUBSCRIBE
    assert await lead_status(db, sent) == LeadStatus.UNSUBSCRIBED
    assert await suppressions(db, sent) == [(sent.email, SuppressionReason.UNSUBSCRIBE)]
    assert [e.kind for e in await events(db, sent.message.id)] == [EventKind.UNSUBSCRIBE]


# --- what cannot be used ---------------------------------------------------------------------


async def test_malformed_and_unmatched_mail_is_stored_with_an_error_and_counted(
    db: Database, redis: Redis
) -> None:
    sent = await sent_message(db)
    before = await unprocessed(db)
    unknown = f"bounce+{uuid.uuid4().hex}@{BOUNCE_HOST}"
    stranger = await sent_message(db)
    stranger_dsn = dsn(stranger, action="failed", status="5.1.1", diagnostic="x", message_id="<nobody@x>")  # fmt: skip
    stranger_dsn = stranger_dsn.replace(stranger.message.verp_token.encode(), b"0" * 32)

    garbage = await inbound.process(db, redis, None, bounce_address(sent), b"\x00\xff\r\n\r\n--")
    no_boundary = await inbound.process(
        db, redis, "", bounce_address(sent),
        b"Content-Type: multipart/report; report-type=delivery-status\r\n\r\nnothing here\r\n",
    )  # fmt: skip
    unmatched = await inbound.process(db, redis, "", unknown, stranger_dsn)
    auto_reply = await inbound.process(
        db, redis, sent.email, bounce_address(sent),
        b"Subject: Out of office\r\n\r\nI am away until Monday.\r\n",
    )  # fmt: skip

    assert garbage.inbound.kind == InboundKind.UNKNOWN and garbage.inbound.error
    assert no_boundary.inbound.kind == InboundKind.DSN and no_boundary.inbound.error
    assert unmatched.action == "unmatched" and unmatched.inbound.tenant_id is None
    assert unmatched.inbound.error == "no sent message matches"
    assert auto_reply.inbound.error == "not a report: text/plain"
    assert auto_reply.inbound.matched_message_id == sent.message.id
    assert await unprocessed(db) == before + 4
    assert await lead_status(db, sent) == LeadStatus.ACTIVE
    assert await lead_status(db, stranger) == LeadStatus.ACTIVE


def test_only_verp_unsubscribe_and_feedback_addresses_are_ours() -> None:
    token = uuid.uuid4().hex
    assert inbound.parse_recipient(f"Bounce+{token}@X.example") == inbound.Recipient("bounce", token)  # fmt: skip
    assert inbound.parse_recipient(f"<unsubscribe+{token}@x.example>") == inbound.Recipient(
        "unsubscribe", token
    )
    assert inbound.parse_recipient("fbl@any.example") == inbound.Recipient("feedback")
    for address in ("postmaster@x.example", "bounce+@x.example", "bounce+zz!@x.example",
                    f"bounce+{token}", "someone@x.example", ""):  # fmt: skip
        assert inbound.parse_recipient(address) is None, address


# --- over SMTP -------------------------------------------------------------------------------


async def test_the_smtp_server_applies_a_bounce_refuses_strangers_and_survives_garbage(
    db: Database, redis: Redis, settings: Settings
) -> None:
    sent = await sent_message(db)
    async with running_inbound(db, redis, settings) as (controller, port):
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as client:
            await client.mail("")
            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
                await client.rcpt(f"someone-{uuid.uuid4().hex[:6]}@{BOUNCE_HOST}")
            assert refused.value.code == 550
        garbage_reply = await deliver(port, bounce_address(sent), b"\x00\xff not mail\r\n")
        raw = dsn(sent, action="failed", status="5.1.1", diagnostic="smtp; 550 5.1.1 unknown")
        reply = await deliver(port, bounce_address(sent), raw)

    assert garbage_reply.startswith("OK") and reply.startswith("OK")
    assert (controller.handler.received, controller.handler.unprocessed) == (2, 1)
    assert await lead_status(db, sent) == LeadStatus.BOUNCED
    assert await suppressions(db, sent) == [(sent.email, SuppressionReason.HARD_BOUNCE)]
    async with db.system_session("content") as s:
        stored = await s.scalar(
            select(func.count())
            .select_from(InboundMessage)
            .where(InboundMessage.matched_message_id == sent.message.id)
        )
    assert stored == 2
