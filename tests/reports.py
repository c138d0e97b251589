"""Reports as receiving mail servers send them back (RFC 3464 DSNs, RFC 5965 ARF complaints),
and the inbound SMTP server on a free loopback port to deliver them to."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.message import Message
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import aiosmtplib
from aiosmtpd.controller import Controller
from redis.asyncio import Redis

from models.sessions import Database
from penguinmails.settings import Settings
from services import inbound
from tests.factories import Sent
from tests.imap import free_port

BOUNCE_HOST = "bounces.mail.example.com"


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


def bounce_address(sent: Sent) -> str:
    return f"bounce+{sent.message.verp_token}@{BOUNCE_HOST}"


async def deliver(port: int, rcpt: str, raw: bytes) -> str:
    """Sends as a mail server sends a DSN: from the null sender <>."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as client:
        _, reply = await client.sendmail("", [rcpt], raw)
    return reply


@asynccontextmanager
async def running_inbound(
    db: Database, redis: Redis, settings: Settings
) -> AsyncIterator[tuple[Controller, int]]:
    """The inbound SMTP server (services.inbound) on a free loopback port; (controller, port)."""
    port = free_port()
    controller = inbound.start_inbound(
        db, redis, settings.model_copy(update={"inbound_host": "127.0.0.1", "inbound_port": port})
    )
    try:
        yield controller, port
    finally:
        controller.stop()
