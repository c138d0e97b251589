"""Open, click and unsubscribe tracking: the signed tokens put into each message's links, and what
happens when one comes back (an email event, a Redis publish for live views, and for an
unsubscribe the lead, the suppression list and the lead's pending sends)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from models.campaigns import LeadStatus, SuppressionReason
from models.content import EmailEvent, EmailMessage, EventKind
from models.sessions import Database
from penguinmails.settings import Settings
from services import live, stopping

log = logging.getLogger("penguinmails.tracking")

Kind = Literal["o", "c", "u"]
OPEN: Kind = "o"
CLICK: Kind = "c"
UNSUBSCRIBE: Kind = "u"

# An HMAC-SHA256 tag truncated to 128 bits (RFC 2104 allows truncation to half the output): a
# forgery still takes 2^128 guesses, and every tracked link in a message is 22 characters shorter.
_TAG_BYTES = 16
_MAX_TOKEN_CHARS = 4096  # a signed URL longer than this is refused at signing time too
_SCHEMES = ("http", "https")

# Fetches no person made: mail providers' image proxies prefetch the open pixel, link scanners
# of corporate gateways follow every link. Matched case-insensitively anywhere in the User-Agent.
MACHINE_AGENTS = (
    "googleimageproxy",  # Gmail's image proxy
    "yahoomailproxy",  # Yahoo Mail's image proxy
    "ms-office",  # Outlook / Office fetching images and probing links before opening them
    "barracuda",
    "mimecast",
    "proofpoint",
    "symantec",
    "messagelabs",
    "forcepoint",
    "trendmicro",
    "bitdefender",
    "safelinks",
    "slackbot",
    "facebookexternalhit",
    "skypeuripreview",
    "whatsapp",
    "headlesschrome",
    "python-requests",
    "python-httpx",
    "go-http-client",
    "curl/",
    "wget/",
    "bot/",  # Googlebot/2.1, bingbot/2.0, …
    "bot;",
    "crawler",
    "spider",
)
# Apple Mail Privacy Protection fetches every image through Apple's proxy as soon as the mail
# arrives, with the bare User-Agent "Mozilla/5.0". Real browsers and mail clients always add a
# platform in parentheses after it, so the bare string (or no User-Agent at all) is a machine.
_BARE_AGENTS = ("", "mozilla/5.0")


@dataclass(frozen=True)
class Token:
    kind: Kind
    message_id: uuid.UUID
    url: str | None = None  # clicks only: where the recipient is sent


# --- tokens ---------------------------------------------------------------------------------


def open_url(settings: Settings, message_id: uuid.UUID) -> str:
    return f"{settings.public_url}/t/o/{sign(settings, OPEN, message_id)}"


def click_url(settings: Settings, message_id: uuid.UUID, url: str) -> str:
    """The tracked form of a link; the target URL travels inside the signed token."""
    return f"{settings.public_url}/t/c/{sign(settings, CLICK, message_id, url)}"


def unsubscribe_url(settings: Settings, message_id: uuid.UUID) -> str:
    return f"{settings.public_url}/u/{sign(settings, UNSUBSCRIBE, message_id)}"


def sign(settings: Settings, kind: Kind, message_id: uuid.UUID, url: str | None = None) -> str:
    """base64url(kind ‖ message id ‖ url ‖ tag), unpadded. Raises ValueError for a click without
    an http(s) URL (javascript:, data:, …) or a URL on anything else."""
    if kind == CLICK:
        if url is None or not _is_web_url(url):
            raise ValueError(f"only http and https links are tracked, not {url!r}")
    elif url is not None:
        raise ValueError("only click tokens carry a URL")
    payload = kind.encode() + message_id.bytes + (url or "").encode()
    token = _b64encode(payload + _tag(settings, payload))
    if len(token) > _MAX_TOKEN_CHARS:
        raise ValueError("link too long to track")
    return token


def verify(settings: Settings, token: str, kind: Kind) -> Token | None:
    """The token's contents when it was signed by us for `kind`; None for anything else
    (malformed, tampered, another kind, a non-canonical encoding of a valid token)."""
    if len(token) > _MAX_TOKEN_CHARS:
        return None
    raw = _b64decode(token)
    if raw is None or len(raw) < 1 + 16 + _TAG_BYTES:
        return None
    payload, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
    if not hmac.compare_digest(tag, _tag(settings, payload)):
        return None
    if payload[:1] != kind.encode():
        return None
    message_id = uuid.UUID(bytes=payload[1:17])
    rest = payload[17:]
    if kind != CLICK:
        return Token(kind, message_id) if not rest else None
    try:
        url = rest.decode()
    except UnicodeDecodeError:
        return None
    return Token(kind, message_id, url) if _is_web_url(url) else None


def _tag(settings: Settings, payload: bytes) -> bytes:
    # A key of its own, so a tracking tag can never be replayed as any other signature made
    # with secret_key.
    key = hmac.new(
        settings.secret_key.get_secret_value().encode(), b"tracking", hashlib.sha256
    ).digest()
    return hmac.new(key, payload, hashlib.sha256).digest()[:_TAG_BYTES]


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64decode(token: str) -> bytes | None:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    # base64 decoding ignores stray characters and the unused bits of the last one: only the
    # one encoding we produce is accepted, so a changed character never passes.
    return raw if _b64encode(raw) == token else None


def _is_web_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in _SCHEMES and bool(parts.netloc)


def is_machine(user_agent: str | None) -> bool:
    """Whether a fetch came from a proxy or scanner rather than a person (see MACHINE_AGENTS)."""
    agent = (user_agent or "").strip().lower()
    return agent in _BARE_AGENTS or any(marker in agent for marker in MACHINE_AGENTS)


# --- recording ------------------------------------------------------------------------------


def email_channel(tenant_id: uuid.UUID) -> str:
    """The Redis channel live views of a tenant's email events listen on."""
    return f"events:{tenant_id}:email"


async def find_message(db: Database, message_id: uuid.UUID) -> EmailMessage | None:
    """The message a token names. Looked up across tenants: a valid signature is the authority,
    and the message says which tenant it belongs to."""
    async with db.system_session("content") as session:
        return await session.get(EmailMessage, message_id)


async def record_open(
    db: Database, redis: Redis, message: EmailMessage, *, user_agent: str | None
) -> EmailEvent:
    """Every fetch of the pixel is an OPEN event; proxy prefetches are flagged machine. The first
    open and the total are read back with `open_counts`."""
    return await record_event(
        db, redis, message, EventKind.OPEN, machine=is_machine(user_agent),
        details={"user_agent": (user_agent or "")[:500]},
    )  # fmt: skip


async def record_click(
    db: Database, redis: Redis, message: EmailMessage, url: str, *, user_agent: str | None
) -> EmailEvent:
    return await record_event(
        db, redis, message, EventKind.CLICK, machine=is_machine(user_agent), url=url,
        details={"user_agent": (user_agent or "")[:500]},
    )  # fmt: skip


async def open_counts(
    session: AsyncSession, message_id: uuid.UUID, *, include_machine: bool = False
) -> tuple[datetime | None, int]:
    """(first open, number of opens) of a message. Machine opens (proxy prefetches) are left out
    unless asked for: they say the mail arrived, not that anyone read it."""
    query = select(func.min(EmailEvent.occurred_at), func.count()).where(
        EmailEvent.message_id == message_id, EmailEvent.kind == EventKind.OPEN
    )
    if not include_machine:
        query = query.where(EmailEvent.machine.is_(False))
    first, total = (await session.execute(query)).one()
    return first, total


async def unsubscribe(db: Database, redis: Redis, message: EmailMessage) -> bool:
    """The recipient of `message` asked to hear no more: the lead is UNSUBSCRIBED, the address
    suppressed for the tenant, the lead's pending sends cancelled, and one UNSUBSCRIBE event
    recorded. Idempotent: returns False, and records nothing, when there was nothing left to do.
    """
    return await stopping.stop_lead(
        db, message, LeadStatus.UNSUBSCRIBED, suppress=SuppressionReason.UNSUBSCRIBE,
        then=lambda: record_event(db, redis, message, EventKind.UNSUBSCRIBE, machine=False),
    )  # fmt: skip


async def record_event(
    db: Database,
    redis: Redis,
    message: EmailMessage,
    kind: EventKind,
    *,
    machine: bool,
    url: str | None = None,
    details: dict | None = None,
) -> EmailEvent:
    """One row in content.email_events, then (once committed) a publish for live views."""
    async with db.tenant_session(message.tenant_id, tier="content") as session:
        event = await session.scalar(
            insert(EmailEvent)
            .values(
                tenant_id=message.tenant_id,
                kind=kind,
                message_id=message.id,
                campaign_id=message.campaign_id,
                lead_id=message.lead_id,
                account_id=message.account_id,
                step_position=message.step_position,
                machine=machine,
                url=url,
                details=details or {},
            )
            .returning(EmailEvent)
        )
    await publish(redis, [event])
    return event


async def publish(redis: Redis, events: list[EmailEvent]) -> None:
    """Tells live views about stored events, in one round trip. A failure only logs: the events
    are stored, and live views catch up from the tables."""
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for event in events:
                body = {
                    "kind": EventKind(event.kind).value,
                    "messageId": str(event.message_id),
                    "campaignId": str(event.campaign_id) if event.campaign_id else None,
                    "leadId": str(event.lead_id) if event.lead_id else None,
                    "machine": event.machine,
                    "url": event.url,
                    "at": event.occurred_at.isoformat(),
                }
                pipe.publish(email_channel(event.tenant_id), json.dumps(body))
            # Live views: one change per tenant for the lot, in the same round trip.
            live.add(pipe, (live.Change(e.tenant_id, e.campaign_id) for e in events))
            await pipe.execute()
    except RedisError:
        log.warning("could not publish %d events", len(events), exc_info=True)
