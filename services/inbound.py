"""Mail coming back to the platform: delivery status notifications (RFC 3464) and complaint
reports (RFC 5965) sent to a message's VERP return path or the feedback-loop address, and the
List-Unsubscribe mailto. Every message is kept in content.inbound_messages; what it says about a
sent message is applied to its lead (suppressed, sequence stopped) and recorded as an event.

Parsing is pure (`parse_recipient`, `parse_report`); `process` records; `start_inbound` serves
SMTP with aiosmtpd.
"""

from __future__ import annotations

import asyncio
import email
import email.message
import logging
import re
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from aiosmtpd.controller import Controller
from redis.asyncio import Redis
from sqlalchemy import insert, select, update

from models.campaigns import LeadStatus, SuppressionReason
from models.content import EmailMessage, EventKind, InboundKind, InboundMessage, MessageStatus
from models.sessions import Database, driver_connection
from models.sqlfiles import statement
from penguinmails.settings import Settings
from services import bounces, metrics, stopping, tracking
from services.bounces import BounceClass

log = logging.getLogger("penguinmails.inbound")

BOUNCE_PREFIX = "bounce+"
UNSUBSCRIBE_PREFIX = "unsubscribe+"
# The local part mailbox providers' feedback loops are registered with, at any of our domains.
FEEDBACK_LOCAL_PART = "fbl"

# A VERP token as services.sending makes them (secrets.token_hex(16)); anything else is refused
# at RCPT, before any data is accepted.
_TOKEN = re.compile(r"[0-9a-f]{16,64}")
# An enhanced status code (RFC 3463): class.subject.detail.
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_CODE = re.compile(r"\b([245])\d\d\b")
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")

Route = Literal["bounce", "unsubscribe", "feedback"]


@dataclass(frozen=True)
class Recipient:
    """What an address we accept mail for stands for."""

    route: Route
    token: str | None = None  # the VERP token, for bounce+ and unsubscribe+ addresses


@dataclass(frozen=True)
class Failure:
    """One per-recipient block of a DSN that reports a failure or a delay."""

    action: str  # failed | delayed
    status: str  # e.g. "5.1.1"; derived from the diagnostic when the block has none
    diagnostic: str | None
    final_recipient: str | None

    @property
    def bounce_class(self) -> BounceClass:
        return bounces.classify(self.status, self.diagnostic)

    @property
    def hard(self) -> bool:
        return self.bounce_class == BounceClass.HARD


@dataclass(frozen=True)
class Report:
    """What a received message turned out to be. `error` says why it could not be used."""

    kind: InboundKind
    failures: tuple[Failure, ...] = ()
    feedback_type: str | None = None
    original_message_ids: tuple[str, ...] = ()  # Message-IDs naming the original, best first
    original_token: str | None = None  # a VERP token in the original's Return-Path
    error: str | None = None


@dataclass
class Outcome:
    """What `process` did with one message for one recipient: the stored row, what was done
    (hard_bounce, soft_bounce, complaint, unsubscribe, nothing, unmatched, error) and why not."""

    action: str
    message: EmailMessage | None = None
    error: str | None = None
    details: dict = field(default_factory=dict)
    inbound: InboundMessage | None = None


# --- parsing ---------------------------------------------------------------------------------


def parse_recipient(address: str) -> Recipient | None:
    """The route of an RCPT address, or None for anything we do not receive mail for."""
    local, at, domain = address.strip().strip("<>").rpartition("@")
    if not at or not local or not domain:
        return None
    local = local.lower()
    for prefix, route in ((BOUNCE_PREFIX, "bounce"), (UNSUBSCRIBE_PREFIX, "unsubscribe")):
        if local.startswith(prefix):
            token = local.removeprefix(prefix)
            return Recipient(route, token) if _TOKEN.fullmatch(token) else None
    return Recipient("feedback") if local == FEEDBACK_LOCAL_PART else None


def parse_report(raw: bytes) -> Report:
    """A DSN (multipart/report; report-type=delivery-status), an ARF report (report-type=
    feedback-report), or UNKNOWN with the reason. Never raises for any input."""
    try:
        message = email.message_from_bytes(raw)
    except Exception as e:  # the parser is lenient; this is a guard, not a path
        return Report(InboundKind.UNKNOWN, error=f"unparseable: {e!r}"[:500])
    if message.get_content_type() != "multipart/report":
        return Report(
            InboundKind.UNKNOWN,
            error=f"not a report: {message.get_content_type()}",
        )
    report_type = message.get_param("report-type")
    report_type = report_type.lower() if isinstance(report_type, str) else ""
    parts = list(message.walk())
    if report_type == "delivery-status":
        return _parse_dsn(parts)
    if report_type == "feedback-report":
        return _parse_arf(parts)
    return Report(InboundKind.UNKNOWN, error=f"unknown report type {report_type!r}")


def _parse_dsn(parts: list[email.message.Message]) -> Report:
    status_part = _first(parts, "message/delivery-status")
    if status_part is None:
        return Report(InboundKind.DSN, error="no message/delivery-status part")
    # The parser splits the part into header blocks: per-message fields, then one per recipient.
    blocks = status_part.get_payload()
    if not isinstance(blocks, list) or not blocks:
        return Report(InboundKind.DSN, error="empty delivery-status part")
    failures = tuple(
        failure for block in blocks[1:] if (failure := _failure(block)) is not None
    )  # fmt: skip
    ids = [_header(blocks[0], "Original-Message-ID")]
    ids += [_header(b, "Original-Message-ID") for b in blocks[1:]]
    original = _original_headers(parts)
    if original is not None:
        ids.append(_header(original, "Message-ID"))
    return Report(
        InboundKind.DSN,
        failures=failures,
        original_message_ids=_message_ids(ids),
        original_token=_return_path_token(original),
        error=None if failures else "no failed or delayed recipient",
    )


def _failure(block: email.message.Message) -> Failure | None:
    action = (_header(block, "Action") or "").lower()
    if action not in ("failed", "delayed"):
        return None  # delivered, relayed, expanded: nothing went wrong
    diagnostic = _header(block, "Diagnostic-Code")
    status = _status(_header(block, "Status")) or _status(diagnostic)
    if status is None:
        code = _SMTP_CODE.search(diagnostic or "")
        status = f"{code.group(1)}.0.0" if code else ("5.0.0" if action == "failed" else "4.0.0")
    final = _header(block, "Final-Recipient") or _header(block, "Original-Recipient")
    return Failure(action, status, diagnostic, _address(final))


def _parse_arf(parts: list[email.message.Message]) -> Report:
    feedback = _first(parts, "message/feedback-report")
    if feedback is None:
        return Report(InboundKind.ARF, error="no message/feedback-report part")
    # Like message/delivery-status, the body is one block of fields (RFC 5965 §3.1); the email
    # package leaves it as text, so it is parsed as headers here.
    payload = feedback.get_payload()
    if isinstance(payload, list):
        fields = payload[0] if payload else email.message.Message()
    else:
        fields = email.message_from_string(str(payload or ""))
    feedback_type = (_header(fields, "Feedback-Type") or "").lower() or None
    original = _original_headers(parts)
    ids = [_header(fields, "Original-Message-ID")]
    if original is not None:
        ids.insert(0, _header(original, "Message-ID"))
    return Report(
        InboundKind.ARF,
        feedback_type=feedback_type,
        original_message_ids=_message_ids(ids),
        original_token=_return_path_token(original),
        error=None if feedback_type else "no Feedback-Type",
    )


def _first(parts: list[email.message.Message], content_type: str) -> email.message.Message | None:
    return next((p for p in parts if p.get_content_type() == content_type), None)


def _original_headers(parts: list[email.message.Message]) -> email.message.Message | None:
    """The headers of the original message: a message/rfc822 part (whole or truncated) or a
    text/rfc822-headers part."""
    for part in parts:
        kind = part.get_content_type()
        if kind in ("message/rfc822", "message/rfc822-headers"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload:
                return payload[0]
        if kind == "text/rfc822-headers":
            text = part.get_payload(decode=True) or b""
            return email.message_from_bytes(text)
    return None


def _header(message: email.message.Message, name: str) -> str | None:
    value = message.get(name)
    if value is None:
        return None
    return " ".join(str(value).split()) or None


def _status(value: str | None) -> str | None:
    found = _STATUS.search(value or "")
    return ".".join(found.groups()) if found else None


def _address(value: str | None) -> str | None:
    """The address of a Final-Recipient field ("rfc822; someone@example.com")."""
    if not value:
        return None
    return value.rpartition(";")[2].strip().strip("<>").lower() or None


def _message_ids(values: list[str | None]) -> tuple[str, ...]:
    found: list[str] = []
    for value in values:
        if not value:
            continue
        ids = _MESSAGE_ID.findall(value) or [f"<{value.strip().strip('<>')}>"]
        found += [i for i in ids if i not in found and len(i) > 2]
    return tuple(found)


def _return_path_token(original: email.message.Message | None) -> str | None:
    if original is None:
        return None
    recipient = parse_recipient(_header(original, "Return-Path") or "")
    return recipient.token if recipient and recipient.route == "bounce" else None


# --- recording -------------------------------------------------------------------------------


async def process(
    db: Database, redis: Redis, mail_from: str | None, rcpt_to: str, raw: bytes
) -> Outcome:
    """Stores one received message, then applies it. Never raises for the message's content:
    anything that cannot be parsed, matched or applied is left on the row's `error`. (A
    failure to store the row at all does raise: the SMTP server then asks the sender to retry.)
    """
    recipient = parse_recipient(rcpt_to)
    report = (
        Report(InboundKind.UNSUBSCRIBE)
        if recipient is not None and recipient.route == "unsubscribe"
        else parse_report(raw)
    )
    async with db.system_session("content") as session:
        inbound = await session.scalar(
            insert(InboundMessage)
            .values(
                kind=report.kind,
                mail_from=(mail_from or None) and mail_from[:320],
                rcpt_to=rcpt_to[:320],
                raw_compressed=zlib.compress(raw),
            )
            .returning(InboundMessage)
        )
    try:
        outcome = await _apply(db, redis, recipient, report)
    except Exception as e:
        log.exception("inbound message %s could not be applied", inbound.id)
        outcome = Outcome("error", error=f"not applied: {e!r}"[:1000])
    message = outcome.message
    async with db.system_session("content") as session:
        outcome.inbound = await session.scalar(
            update(InboundMessage)
            .where(InboundMessage.id == inbound.id)
            .values(
                tenant_id=message.tenant_id if message else None,
                matched_message_id=message.id if message else None,
                error=outcome.error,
            )
            .returning(InboundMessage)
        )
    return outcome


async def _apply(
    db: Database, redis: Redis, recipient: Recipient | None, report: Report
) -> Outcome:
    token = recipient.token if recipient else None
    message = await _find(db, token, report)
    if message is None:
        return Outcome("unmatched", error=report.error or "no sent message matches")
    found = {"message": message, "error": report.error}
    if recipient is not None and recipient.route == "unsubscribe":
        await tracking.unsubscribe(db, redis, message)
        return Outcome("unsubscribe", **found)
    if report.error is not None:
        return Outcome("nothing", **found)
    if report.kind == InboundKind.DSN:
        failure = _failure_for(report.failures, message)
        details = {"hard": failure.hard, "status": failure.status}
        details["class"] = failure.bounce_class.value
        details["diagnostic"] = (failure.diagnostic or "")[:500]
        if failure.hard:
            await record_hard_bounce(db, redis, message, details)
            return Outcome("hard_bounce", **found, details=details)
        await record_soft_bounce(db, redis, message, details)
        return Outcome("soft_bounce", **found, details=details)
    if report.kind == InboundKind.ARF:
        if report.feedback_type not in ("abuse", "fraud", "virus"):
            # not-spam, auth-failure reports and the like say nothing against the recipient.
            return Outcome("nothing", **found, details={"feedback_type": report.feedback_type})
        await _record_complaint(db, redis, message, report.feedback_type)
        return Outcome("complaint", **found, details={"feedback_type": report.feedback_type})
    return Outcome("nothing", **found)


async def _find(db: Database, token: str | None, report: Report) -> EmailMessage | None:
    """The sent message a report is about: by the VERP token of the address it came to, else
    by the original's Message-ID, else by the token in the original's Return-Path."""
    async with db.system_session("content") as session:
        if token is not None:
            found = await session.scalar(
                select(EmailMessage).where(EmailMessage.verp_token == token)
            )
            if found is not None:
                return found
        for message_id in report.original_message_ids:
            found = await session.scalar(
                select(EmailMessage).where(EmailMessage.message_id_header == message_id)
            )
            if found is not None:
                return found
        if report.original_token is not None:
            return await session.scalar(
                select(EmailMessage).where(EmailMessage.verp_token == report.original_token)
            )
    return None


def _failure_for(failures: tuple[Failure, ...], message: EmailMessage) -> Failure:
    """The block about the message's recipient (a DSN may list several), hard before soft."""
    own = [f for f in failures if f.final_recipient == message.to_address.lower()] or failures
    return next((f for f in own if f.hard), own[0])


async def record_hard_bounce(
    db: Database, redis: Redis, message: EmailMessage, details: dict
) -> None:
    """Message and lead BOUNCED, the address suppressed, the lead's pending sends cancelled, one
    BOUNCE event. A repeated DSN changes nothing and records nothing."""
    changed = await stopping.stop_lead(
        db, message, LeadStatus.BOUNCED, suppress=SuppressionReason.HARD_BOUNCE
    )
    if await _mark_bounced(db, message, details) or changed:
        await tracking.record_event(
            db, redis, message, EventKind.BOUNCE, machine=False, details=details
        )
        metrics.BOUNCES.inc()


async def _mark_bounced(db: Database, message: EmailMessage, details: dict) -> bool:
    """The message BOUNCED with the server's reply; whether it was not already."""
    reply = f"{details['status']} {details['diagnostic']}".strip()
    async with db.tenant_session(message.tenant_id, tier="content") as content:
        bounced = await content.execute(
            update(EmailMessage)
            .where(EmailMessage.id == message.id, EmailMessage.status != MessageStatus.BOUNCED)
            .values(status=MessageStatus.BOUNCED, smtp_response=reply[:500])
        )
    return bounced.rowcount > 0


async def record_soft_bounce(
    db: Database, redis: Redis, message: EmailMessage, details: dict, *, refused: bool = False
) -> None:
    """One BOUNCE event that is not hard (soft, mailbox full, policy). A message refused during
    the SMTP transaction is BOUNCED (it is not tried again; a repeated write of that refusal
    records nothing). The address is suppressed once its soft and mailbox-full bounces reach
    bounces.SOFT_LIMIT within bounces.SOFT_WINDOW; a policy refusal is about the sender, not
    the address, and does not count."""
    if refused and not await _mark_bounced(db, message, details):
        return
    await tracking.record_event(
        db, redis, message, EventKind.BOUNCE, machine=False, details=details
    )
    metrics.BOUNCES.inc()
    if details.get("class") == BounceClass.POLICY:
        return
    async with db.tenant_session(message.tenant_id, tier="content") as content:
        recent = await (await driver_connection(content)).fetchval(
            statement("bounces.sql", "recent_soft_bounces"),
            message.to_address.lower(), datetime.now(UTC) - bounces.SOFT_WINDOW,
        )  # fmt: skip
    if recent >= bounces.SOFT_LIMIT:
        await stopping.stop_lead(
            db, message, LeadStatus.BOUNCED, suppress=SuppressionReason.REPEATED_SOFT_BOUNCE
        )


async def _record_complaint(
    db: Database, redis: Redis, message: EmailMessage, feedback_type: str
) -> None:
    """Lead COMPLAINED, the address suppressed, the lead's pending sends cancelled, one
    COMPLAINT event. A repeated report changes nothing and records nothing."""
    if await stopping.stop_lead(
        db, message, LeadStatus.COMPLAINED, suppress=SuppressionReason.COMPLAINT,
        then=lambda: tracking.record_event(
            db, redis, message, EventKind.COMPLAINT, machine=False,
            details={"feedback_type": feedback_type},
        ),
    ):  # fmt: skip
        metrics.COMPLAINTS.inc()


# --- the SMTP server -------------------------------------------------------------------------


class InboundHandler:
    """aiosmtpd handler. aiosmtpd's Controller runs the server on a thread of its own; the work
    is handed to `loop`, the event loop `db` and `redis` belong to."""

    def __init__(self, db: Database, redis: Redis, loop: asyncio.AbstractEventLoop) -> None:
        self.db, self.redis, self.loop = db, redis, loop
        self.received = 0
        self.unprocessed = 0  # stored with an error: unparsed, unmatched or not applied

    async def handle_RCPT(self, server, session, envelope, address: str, rcpt_options) -> str:
        if parse_recipient(address) is None:
            return "550 5.1.1 No such recipient here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        for rcpt in envelope.rcpt_tos:
            work = process(self.db, self.redis, envelope.mail_from, rcpt, raw)
            try:
                outcome = await asyncio.wrap_future(
                    asyncio.run_coroutine_threadsafe(work, self.loop)
                )
            except Exception:
                log.exception("could not store inbound message for %s", rcpt)
                return "451 4.3.0 Temporary failure storing the message, try again later"
            self.received += 1
            if outcome.inbound.error is not None:
                self.unprocessed += 1
        return "250 OK"


def start_inbound(db: Database, redis: Redis, settings: Settings) -> Controller:
    """Starts the inbound SMTP server on settings.inbound_host:inbound_port. Call it from the
    event loop `db` and `redis` are used on; stop it with `.stop()`."""
    handler = InboundHandler(db, redis, asyncio.get_running_loop())
    controller = Controller(handler, hostname=settings.inbound_host, port=settings.inbound_port)
    controller.start()
    return controller
