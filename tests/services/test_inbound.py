"""Inbound mail: bounces (RFC 3464 DSNs) and complaints (RFC 5965 ARF reports) stop the lead and
suppress the address, a mailto unsubscribe unsubscribes, and nothing a sender can put in a
message stops the server; all of it is kept in content.inbound_messages."""

from __future__ import annotations

import socket
import uuid
from email.message import Message
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
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

BOUNCE_HOST = "bounces.mail.example.com"


@pytest.fixture
async def redis(settings: Settings):
    client = Redis.from_url(settings.redis_url or "redis://127.0.0.1:6379/0")
    yield client
    await client.aclose()


# --- building reports as mail servers send them ---------------------------------------------


def original_headers(sent: Sent) -> str:
    m = sent.message
    return (
        f"Return-Path: <bounce+{m.verp_token}@{BOUNCE_HOST}>\r\n"
        f"From: {m.from_address}\r\nTo: {m.to_address}\r\nSubject: {m.subject}\r\n"
        f"Message-ID: {m.message_id_header}\r\nDate: Mon, 3 Jun 2024 09:00:00 +0000\r\n"
    )


def dsn(
    sent: Sent, *, action: str, status: str, diagnostic: str, message_id: str | None = None
) -> bytes:
    """A DSN as Postfix writes it: explanation, delivery-status, the original's headers."""
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = "MAILER-DAEMON@mx.example.net (Mail Delivery System)"
    report["To"] = f"bounce+{sent.message.verp_token}@{BOUNCE_HOST}"
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report.attach(MIMEText("I'm sorry to have to inform you that your message could not\n"
                           "be delivered to one or more recipients.\n"))  # fmt: skip
    per_message = Message()
    per_message["Reporting-MTA"] = "dns; mx.example.net"
    per_message["Arrival-Date"] = "Mon, 3 Jun 2024 09:00:01 +0000"
    per_recipient = Message()
    per_recipient["Final-Recipient"] = f"rfc822; {sent.email}"
    per_recipient["Original-Recipient"] = f"rfc822;{sent.message.to_address}"
    per_recipient["Action"] = action
    per_recipient["Status"] = status
    per_recipient["Remote-MTA"] = "dns; mx.recipient.example"
    per_recipient["Diagnostic-Code"] = diagnostic
    status_part = Message()
    status_part.set_type("message/delivery-status")
    status_part.set_payload([per_message, per_recipient])
    report.attach(status_part)
    headers = original_headers(sent)
    if message_id is not None:
        headers = headers.replace(sent.message.message_id_header, message_id)
    report.attach(MIMEText(headers, "rfc822-headers"))
    return report.as_bytes()


def arf(sent: Sent, *, feedback_type: str = "abuse") -> bytes:
    """A complaint report as a feedback loop sends it (RFC 5965 §2), with the whole original."""
    report = MIMEMultipart("report", report_type="feedback-report")
    report["From"] = "staff@fbl.example.net"
    report["To"] = "fbl@mail.example.com"
    report["Subject"] = "FW: Hello"
    report.attach(MIMEText("This is an email abuse report for an email message received\n"
                           "from IP 192.0.2.1 on Mon, 3 Jun 2024 09:00:00 +0000.\n"))  # fmt: skip
    feedback = Message()
    feedback.set_type("message/feedback-report")
    feedback.set_payload(
        f"Feedback-Type: {feedback_type}\r\nUser-Agent: SomeGenerator/1.0\r\nVersion: 1\r\n"
        f"Original-Mail-From: <bounce+{sent.message.verp_token}@{BOUNCE_HOST}>\r\n"
        f"Original-Rcpt-To: <{sent.email}>\r\nArrival-Date: Mon, 3 Jun 2024 09:00:00 +0000\r\n"
        "Source-IP: 192.0.2.1\r\nReported-Domain: mail.example.com\r\n"
    )
    report.attach(feedback)
    original = MIMEText("Hi there, quick question about your roadmap.")
    for line in original_headers(sent).splitlines():
        name, _, value = line.partition(": ")
        original[name] = value
    report.attach(MIMEMessage(original))
    return report.as_bytes()


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


def bounce_address(sent: Sent) -> str:
    return f"bounce+{sent.message.verp_token}@{BOUNCE_HOST}"


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
    assert event.details == {"hard": True, "status": "5.1.1", "diagnostic": diagnostic}
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
        EventKind.BOUNCE, {"hard": False, "status": "4.2.2", "diagnostic": diagnostic},
    )  # fmt: skip
    assert await lead_status(db, sent) == LeadStatus.ACTIVE
    assert await suppressions(db, sent) == []
    assert await job_statuses(db, jobs) == [JobStatus.QUEUED, JobStatus.QUEUED]


async def test_a_bounce_to_the_feedback_address_is_matched_by_the_original_message_id(
    db: Database, redis: Redis
) -> None:
    sent = await sent_message(db)
    raw = dsn(sent, action="failed", status="5.7.1", diagnostic="smtp; 550 5.7.1 blocked")

    outcome = await inbound.process(db, redis, "", "fbl@mail.example.com", raw)

    assert outcome.action == "hard_bounce"
    assert outcome.inbound.matched_message_id == sent.message.id
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def deliver(port: int, rcpt: str, raw: bytes) -> str:
    """Sends as a mail server sends a DSN: from the null sender <>."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as client:
        _, reply = await client.sendmail("", [rcpt], raw)
    return reply


async def test_the_smtp_server_applies_a_bounce_refuses_strangers_and_survives_garbage(
    db: Database, redis: Redis, settings: Settings
) -> None:
    sent = await sent_message(db)
    port = free_port()
    controller = inbound.start_inbound(
        db, redis, settings.model_copy(update={"inbound_host": "127.0.0.1", "inbound_port": port})
    )
    try:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as client:
            await client.mail("")
            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
                await client.rcpt(f"someone-{uuid.uuid4().hex[:6]}@{BOUNCE_HOST}")
            assert refused.value.code == 550
        garbage_reply = await deliver(port, bounce_address(sent), b"\x00\xff not mail\r\n")
        raw = dsn(sent, action="failed", status="5.1.1", diagnostic="smtp; 550 5.1.1 unknown")
        reply = await deliver(port, bounce_address(sent), raw)
    finally:
        controller.stop()

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
