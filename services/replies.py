"""Replies to sent mail, read from each email account's inbox over IMAP. A reply names a sent
message in In-Reply-To or References; it is kept in content.inbound_messages, recorded as one
REPLY event, and stops the lead's sequence (lead REPLIED, pending sends cancelled). The address
is not suppressed: the person answered, and may well be written to again by hand.

How the inbox is read:
- Log-in: the account's SMTP credentials (username, else the address; the stored password).
  Port 993 (the default) is IMAPS; any other port is plain IMAP upgraded with STARTTLS, and a
  server that does not offer it is refused unless IMAP_ALLOW_PLAINTEXT is set (a local server).
  Certificates are verified. For replies the inbox is opened read-only and only BODY.PEEK is
  fetched, so nothing is marked seen or changed in the user's mail.
- imaplib blocks, so each call runs on a thread of IMAP_THREADS, a pool of the replies' own:
  a server slow to answer (up to IMAP_TIMEOUT_SECONDS a call) holds one of its threads, never
  the event loop's default pool or another poll. A poll cut short (time limit, shutdown) keeps
  the UIDs it processed; each reply is recorded in its own transactions, whole or not at all.
- Progress: `email_accounts.imap_last_uid`, the highest UID read. A first poll reads the inbox
  from the start, at most MAX_MESSAGES_PER_POLL messages a poll; the next poll goes on.
- The inbox's UIDVALIDITY is stored with the UID (`imap_uidvalidity`). When the server reports
  another one, or a UIDNEXT at or below the stored UID, the mailbox was renumbered and is read
  again from the start: a reply already counted is not counted again.

What counts as a reply: the first genuine answer to a sent message. Mail that matches no message
of the tenant is ignored and not stored. A second reply to the same message (or the same reply
read twice) changes nothing. Automatic answers (RFC 3834 Auto-Submitted other than "no",
X-Autoreply / X-Autorespond, Precedence auto_reply/bulk/junk/list, delivery reports, and
"Automatic reply:" / "Out of office" subjects) are not replies: a vacation notice says nothing
about interest, and the sequence goes on. Mail from the account itself is not a reply either.
Nor is warm-up mail (tagged X-PenguinMails-Warmup), whatever it names.

Warm-up mail (services/warmup.py): when warm-up mail sent to the account lately has not been
found yet, the same connection then looks for it by its tag, read-write, in the Junk folder
(the mailbox with SPECIAL-USE \\Junk, else one named Junk, Spam or Junk E-mail) and in INBOX
(there only what is not yet flagged). What is the tenant's is marked \\Seen and \\Flagged
(important) and moved out of Junk to INBOX (UID MOVE, or COPY, \\Deleted and EXPUNGE where the
server has no MOVE); services/warmup.py records it and plans the replies. It is recorded before
the mailbox is changed, so a poll that fails half-way does the rest next time, and nothing
twice.
"""

from __future__ import annotations

import asyncio
import email
import email.message
import imaplib
import logging
import re
import ssl
import uuid
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.utils import parseaddr

from redis.asyncio import Redis
from sqlalchemy import exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from jobs.queue import enqueue_per_tenant
from models.campaigns import LeadStatus
from models.content import EmailEvent, EmailMessage, EventKind, InboundKind, InboundMessage
from models.infrastructure import AccountStatus, EmailAccount
from models.sessions import Database
from penguinmails.settings import Settings
from services import accounts, stopping, tracking, warmup

log = logging.getLogger("penguinmails.replies")

POLL_KIND = "poll_replies"
POLL_PRIORITY = 120
# A transient failure is retried soon; a lasting one dies, and the next interval polls again.
POLL_ATTEMPTS = 3
IMAPS_PORT = 993
MAX_MESSAGES_PER_POLL = 500
MAX_STORED_BYTES = 1024 * 1024  # of a reply kept in inbound_messages: its text, not attachments
MAX_REFERENCES = 10  # the most recent ids of References tried; ours is among the last
HEADER_FIELDS = (
    "MESSAGE-ID", "IN-REPLY-TO", "REFERENCES", "FROM", "SUBJECT", "CONTENT-TYPE",
    "AUTO-SUBMITTED", "PRECEDENCE", "X-AUTOREPLY", "X-AUTORESPOND", warmup.TAG_HEADER.upper(),
)  # fmt: skip
# A reply moves a lead on from these; a bounced, complained or unsubscribed lead keeps its status.
REPLIABLE = (LeadStatus.ACTIVE, LeadStatus.CONTACTED, LeadStatus.FINISHED)
AUTOMATIC_PRECEDENCE = ("auto_reply", "bulk", "junk", "list")
AUTOMATIC_SUBJECTS = (
    "automatic reply:", "auto:", "autoreply:", "auto-reply:", "auto reply:", "out of office",
    "out-of-office",
)  # fmt: skip
# Where a provider puts what it takes for spam, when the server does not say (SPECIAL-USE).
JUNK_NAMES = ("junk", "spam", "junk e-mail")

_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
_UID = re.compile(rb"\bUID (\d+)")
# A LIST response: (attributes) "delimiter" name, the name quoted or an atom.
_LISTED = re.compile(r'\((?P<attributes>[^)]*)\) (?:NIL|"(?:[^"\\]|\\.)*") (?P<name>.+)')


class ImapError(Exception):
    """The account's IMAP server could not be reached, refused the log-in, or failed a command."""


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    username: str
    password: str
    timeout: float
    allow_plaintext: bool = False  # log in without TLS when the server offers none


@dataclass(frozen=True)
class Header:
    """The header fields of one message in the inbox (HEADER_FIELDS only)."""

    uid: int
    fields: email.message.Message


@dataclass
class Sent:
    """A sent message a reply may name, and whether it has its reply already."""

    message: EmailMessage
    replied: bool


@dataclass
class PollResult:
    """What one poll of one inbox read and did."""

    account_id: uuid.UUID
    read: int = 0  # messages looked at
    replies: int = 0  # recorded now
    repeated: int = 0  # replies to a message that has its reply already
    automatic: int = 0  # auto-replies to our messages, not counted
    unmatched: int = 0  # naming none of the tenant's messages (or from the account itself)
    warmup: int = 0  # warm-up mail, never a reply
    warmup_found: int = 0  # warm-up mail to the account found, marked read and important
    warmup_rescued: int = 0  # of it, moved out of Junk
    last_uid: int | None = None
    more: bool = False  # more new mail than one poll reads
    renumbered: bool = False  # UIDs were reset (UIDVALIDITY changed): read again from the start


# --- polling ---------------------------------------------------------------------------------

# Threads for imaplib's blocking calls: as many polls of slow servers as a worker may run at
# once (a worker's threads × a batch's job_concurrency) wait here without delaying the others.
IMAP_THREADS = ThreadPoolExecutor(max_workers=256, thread_name_prefix="imap")


async def _blocking(call: Callable, *args):
    return await asyncio.get_running_loop().run_in_executor(IMAP_THREADS, call, *args)


async def poll_account(
    db: Database, settings: Settings, redis: Redis, tenant_id: uuid.UUID, account_id: uuid.UUID
) -> PollResult:
    """Reads the account's new mail and records the replies in it. Raises ImapError when the
    server cannot be read; the UIDs processed before a failure stay processed."""
    async with db.tenant_session(tenant_id) as session:
        account = await session.get(EmailAccount, account_id)
    if account is None or not account.imap_host or account.status == AccountStatus.DISABLED:
        return PollResult(account_id)  # deleted or changed since the poll was queued
    mailbox = Mailbox(_server(settings, account))
    try:
        result = await _read(db, redis, account, mailbox)
        if await warmup.expecting(db, account):
            await _receive_warmup(db, settings, account, mailbox, result)
    finally:
        await _blocking(mailbox.close)
    log.log(
        logging.INFO if result.replies else logging.DEBUG,
        "polled %s: %d read, %d replies, %d automatic, %d unmatched",
        account.address, result.read, result.replies, result.automatic, result.unmatched,
    )  # fmt: skip
    return result


def _server(settings: Settings, account: EmailAccount) -> Server:
    host = account.imap_host or ""
    password = accounts.smtp_password(settings, account)
    if password is None:
        raise ImapError(f"{account.address} has no password stored to log in to {host} with")
    return Server(
        host=host,
        port=account.imap_port or IMAPS_PORT,
        username=account.smtp_username or account.address,
        password=password,
        timeout=settings.imap_timeout_seconds,
        allow_plaintext=settings.imap_allow_plaintext,
    )


async def _read(db: Database, redis: Redis, account: EmailAccount, mailbox: Mailbox) -> PollResult:
    result = PollResult(account.id, last_uid=account.imap_last_uid)
    validity, uid_next = await _blocking(mailbox.open)
    after = account.imap_last_uid or 0
    reset = validity is not None and account.imap_uidvalidity not in (None, validity)
    if after and (reset or (uid_next is not None and after >= uid_next)):
        result.renumbered, after = True, 0
    uids = await _blocking(mailbox.new_uids, after)
    batch, result.more = uids[:MAX_MESSAGES_PER_POLL], len(uids) > MAX_MESSAGES_PER_POLL
    headers = await _blocking(mailbox.headers, batch) if batch else []
    sent = await _sent_messages(db, account.tenant_id, headers)
    done = after
    try:
        for header in headers:
            await _apply(db, redis, account, mailbox, header, sent, result)
            done = header.uid
        done = batch[-1] if batch else done  # UIDs expunged between SEARCH and FETCH too
    finally:
        result.last_uid = await _advance(db, account, done, validity)
    return result


async def _apply(
    db: Database,
    redis: Redis,
    account: EmailAccount,
    mailbox: Mailbox,
    header: Header,
    sent: dict[str, Sent],
    result: PollResult,
) -> None:
    result.read += 1
    fields = header.fields
    if fields.get(warmup.TAG_HEADER) is not None:
        result.warmup += 1
        return
    found = next((sent[i] for i in replied_to(fields) if i in sent), None)
    sender = parseaddr(fields.get("From", ""))[1].lower()
    if found is None or sender in (account.address, found.message.from_address.lower()):
        result.unmatched += 1
        return
    if automatic(fields) is not None:
        result.automatic += 1
        return
    if found.replied:
        result.repeated += 1
        return
    raw = await _blocking(mailbox.message, header.uid)
    details = {
        "from": sender[:320],
        "subject": _text(fields.get("Subject"))[:300],
        "message_id": " ".join(str(fields.get("Message-ID", "")).split())[:255],
    }
    if await record_reply(db, redis, found.message, raw, rcpt_to=account.address, details=details):
        result.replies += 1
    else:
        result.repeated += 1
    found.replied = True


async def _receive_warmup(
    db: Database, settings: Settings, account: EmailAccount, mailbox: Mailbox, result: PollResult
) -> None:
    """Warm-up mail in Junk, then new warm-up mail in INBOX: recorded (services/warmup.py), then
    marked read and important, and moved out of Junk."""
    junk = await _blocking(mailbox.junk)
    for folder in ([junk] if junk else []) + ["INBOX"]:
        tagged = await _blocking(mailbox.tagged, folder, folder == "INBOX")
        ours = await warmup.received(db, settings, account, set(tagged.values()))
        uids = [uid for uid, token in tagged.items() if token in ours]
        if uids:
            await _blocking(mailbox.keep, folder, uids)
            result.warmup_found += len(uids)
            result.warmup_rescued += len(uids) if folder != "INBOX" else 0


async def _sent_messages(
    db: Database, tenant_id: uuid.UUID, headers: list[Header]
) -> dict[str, Sent]:
    """The tenant's sent messages the headers name, by Message-ID, in one query."""
    ids = {i for header in headers for i in replied_to(header.fields)}
    if not ids:
        return {}
    replied = exists().where(
        EmailEvent.message_id == EmailMessage.id, EmailEvent.kind == EventKind.REPLY
    )
    async with db.tenant_session(tenant_id, tier="content") as session:
        rows = await session.execute(
            select(EmailMessage, replied).where(EmailMessage.message_id_header.in_(ids))
        )
        return {message.message_id_header: Sent(message, was) for message, was in rows}


async def _advance(
    db: Database, account: EmailAccount, done: int, validity: int | None
) -> int | None:
    """Stores the last UID read (and the UIDVALIDITY it belongs to), unless another poll of the
    account moved it meanwhile."""
    if done == account.imap_last_uid and validity == account.imap_uidvalidity:
        return done
    async with db.tenant_session(account.tenant_id) as session:
        moved = await session.execute(
            update(EmailAccount)
            .where(
                EmailAccount.id == account.id,
                EmailAccount.imap_last_uid.is_not_distinct_from(account.imap_last_uid),
            )
            .values(imap_last_uid=done, imap_uidvalidity=validity)
        )
    return done if moved.rowcount else account.imap_last_uid


async def record_reply(
    db: Database,
    redis: Redis,
    message: EmailMessage,
    raw: bytes,
    *,
    rcpt_to: str,
    details: dict,
) -> bool:
    """The lead REPLIED and its pending sends cancelled, the reply kept in inbound_messages and
    one REPLY event; False, with no second row or event, when the message has its reply already.
    Called when a first look found no reply yet."""
    # The lead first, outside the lock: stopping it twice is harmless, and the transaction below
    # then holds one connection while record_event uses another, never three at once.
    await stopping.stop_lead(db, message, LeadStatus.REPLIED, suppress=None, only_from=REPLIABLE)
    async with db.tenant_session(message.tenant_id, tier="content") as content:
        # The message's row lock makes overlapping polls of one inbox record one reply.
        await content.execute(
            select(EmailMessage.id).where(EmailMessage.id == message.id).with_for_update()
        )
        replied = exists().where(
            EmailEvent.message_id == message.id, EmailEvent.kind == EventKind.REPLY
        )
        if await content.scalar(select(replied)):
            return False
        stored = InboundMessage(
            tenant_id=message.tenant_id,
            kind=InboundKind.REPLY,
            mail_from=details["from"] or None,
            rcpt_to=rcpt_to[:320],
            matched_message_id=message.id,
            raw_compressed=zlib.compress(raw),
        )
        content.add(stored)
        await content.flush()
        await tracking.record_event(
            db, redis, message, EventKind.REPLY, machine=False,
            details={**details, "inbound_id": str(stored.id)},
        )  # fmt: skip
    return True


# --- reading headers -------------------------------------------------------------------------


def replied_to(fields: email.message.Message) -> list[str]:
    """The Message-IDs a mail answers, best first: In-Reply-To, then References newest first."""
    in_reply_to = _MESSAGE_ID.findall(str(fields.get("In-Reply-To", "")))
    references = _MESSAGE_ID.findall(str(fields.get("References", "")))[::-1][:MAX_REFERENCES]
    return list(dict.fromkeys(in_reply_to + references))


def automatic(fields: email.message.Message) -> str | None:
    """Why a mail is an automatic answer rather than a person's, or None."""
    submitted = str(fields.get("Auto-Submitted", "")).strip().lower()
    if submitted and not submitted.startswith("no"):
        return f"Auto-Submitted: {submitted}"
    for name in ("X-Autoreply", "X-Autorespond"):
        if fields.get(name) is not None:
            return name
    precedence = str(fields.get("Precedence", "")).strip().lower()
    if precedence in AUTOMATIC_PRECEDENCE:
        return f"Precedence: {precedence}"
    if fields.get_content_type() == "multipart/report":
        return "a delivery or feedback report"
    subject = _text(fields.get("Subject")).strip().lower()
    if subject.startswith(AUTOMATIC_SUBJECTS):
        return f"subject {subject[:60]!r}"
    return None


def _text(value: object) -> str:
    """A header's text with RFC 2047 encoded words decoded."""
    if value is None:
        return ""
    try:
        return str(make_header(decode_header(str(value))))
    except (LookupError, UnicodeError, ValueError):
        return str(value)


# --- the IMAP connection ---------------------------------------------------------------------


class Mailbox:
    """One IMAP connection to an account's INBOX (imaplib, blocking: call it in a thread)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.imap: imaplib.IMAP4 | None = None

    def open(self) -> tuple[int | None, int | None]:
        """Connects, logs in and opens INBOX read-only; the server's UIDVALIDITY and UIDNEXT,
        each None when it does not say."""
        s = self.server
        context = ssl.create_default_context()
        with self._failing("connection to"):
            if s.port == IMAPS_PORT:
                self.imap = imaplib.IMAP4_SSL(
                    s.host, s.port, ssl_context=context, timeout=s.timeout
                )
            else:
                self.imap = imaplib.IMAP4(s.host, s.port, timeout=s.timeout)
                if "STARTTLS" in self.imap.capabilities:
                    self.imap.starttls(ssl_context=context)
                elif not s.allow_plaintext:  # (or someone in the path removed it)
                    raise ImapError(
                        f"{s.host}:{s.port} offers no STARTTLS: the password is not sent in clear"
                    )
        with self._failing(f"log-in as {s.username} to"):
            self.imap.login(s.username, s.password)
        with self._failing("SELECT INBOX on"):
            _ok(self.imap.select("INBOX", readonly=True))
            _, validity = self.imap.response("UIDVALIDITY")
            _, uid_next = self.imap.response("UIDNEXT")
        return _number(validity), _number(uid_next)

    def new_uids(self, after: int) -> list[int]:
        """UIDs above `after`, ascending."""
        with self._failing("UID SEARCH on"):
            data = _ok(self.imap.uid("SEARCH", f"UID {after + 1}:*"))
        # "n:*" always includes the highest UID, even below n: hence the filter.
        return sorted(u for u in {int(x) for x in (data[0] or b"").split()} if u > after)

    def headers(self, uids: list[int]) -> list[Header]:
        fields = f"BODY.PEEK[HEADER.FIELDS ({' '.join(HEADER_FIELDS)})]"
        with self._failing("UID FETCH on"):
            data = _ok(self.imap.uid("FETCH", ",".join(map(str, uids)), f"(UID {fields})"))
        found = _literals(data)
        return [Header(uid, email.message_from_bytes(found[uid])) for uid in sorted(found)]

    def message(self, uid: int) -> bytes:
        """The message, its first MAX_STORED_BYTES at most."""
        with self._failing("UID FETCH on"):
            data = _ok(self.imap.uid("FETCH", str(uid), f"(UID BODY.PEEK[]<0.{MAX_STORED_BYTES}>)"))
        return _literals(data).get(uid, b"")

    # The warm-up pass: read-write, in INBOX and Junk.

    def junk(self) -> str | None:
        """The Junk folder (see junk_folder), or None."""
        with self._failing("LIST on"):
            return junk_folder(_ok(self.imap.list()))

    def tagged(self, folder: str, unflagged_only: bool) -> dict[int, str]:
        """The warm-up mail in `folder` (opened read-write), by UID: its tag's token."""
        tag = warmup.TAG_HEADER
        with self._failing(f"SELECT {folder} on"):
            _ok(self.imap.select(_quoted(folder)))
        with self._failing("UID SEARCH on"):
            criteria = ("UNFLAGGED",) if unflagged_only else ()
            data = _ok(self.imap.uid("SEARCH", *criteria, "HEADER", tag, '""'))
        uids = sorted(int(x) for x in (data[0] or b"").split())
        if not uids:
            return {}
        with self._failing("UID FETCH on"):
            data = _ok(
                self.imap.uid(
                    "FETCH", ",".join(map(str, uids)), f"(UID BODY.PEEK[HEADER.FIELDS ({tag})])"
                )
            )
        found = {
            uid: email.message_from_bytes(raw).get(tag, "") for uid, raw in _literals(data).items()
        }
        return {uid: " ".join(str(token).split()) for uid, token in found.items() if token}

    def keep(self, folder: str, uids: list[int]) -> None:
        """Marks the messages of the selected `folder` \\Seen and \\Flagged, and moves them to
        INBOX unless they are there (the flags go with them)."""
        listed = ",".join(map(str, uids))
        with self._failing("UID STORE on"):
            _ok(self.imap.uid("STORE", listed, "+FLAGS.SILENT", "(\\Seen \\Flagged)"))
        if folder == "INBOX":
            return
        with self._failing("CAPABILITY on"):
            capabilities = set(_ok(self.imap.capability())[0].upper().split())
        with self._failing(f"moving messages from {folder} to INBOX on"):
            if b"MOVE" in capabilities:
                _ok(self.imap.uid("MOVE", listed, "INBOX"))
                return
            _ok(self.imap.uid("COPY", listed, "INBOX"))
            _ok(self.imap.uid("STORE", listed, "+FLAGS.SILENT", "(\\Deleted)"))
            # UID EXPUNGE (UIDPLUS) removes only these; plain EXPUNGE, every \\Deleted one.
            _ok(
                self.imap.uid("EXPUNGE", listed)
                if b"UIDPLUS" in capabilities
                else self.imap.expunge()
            )

    def close(self) -> None:
        if self.imap is not None:
            try:
                self.imap.logout()
            except (imaplib.IMAP4.error, OSError, EOFError):
                pass  # the connection is going away either way
            self.imap = None

    @contextmanager
    def _failing(self, doing: str) -> Iterator[None]:
        try:
            yield
        except (imaplib.IMAP4.error, OSError, EOFError) as e:
            # imaplib's errors carry the server's words, as bytes or text.
            reason = e.args[0] if isinstance(e, imaplib.IMAP4.error) and e.args else e
            if isinstance(reason, bytes):
                reason = reason.decode(errors="replace")
            raise ImapError(
                f"IMAP {doing} {self.server.host}:{self.server.port} failed: "
                f"{str(reason) or type(e).__name__}"
            ) from e


def junk_folder(listed: list) -> str | None:
    """The Junk folder's name as the server writes it, from its LIST response: the folder with
    SPECIAL-USE \\Junk, else one named as in JUNK_NAMES; None when there is neither."""
    folders = [f for f in (_listed(line) for line in listed if line) if f is not None]
    special = next((name for name, attributes in folders if "\\junk" in attributes), None)
    named = (name for name, _ in folders if _unquoted(name).lower() in JUNK_NAMES)
    return special or next(named, None)


def _listed(line: bytes | tuple) -> tuple[str, str] | None:
    """(name as the server writes it, attributes in lower case) of a LIST response line."""
    if isinstance(line, tuple):  # a name sent as a literal
        name = line[1].replace(b"\\", b"\\\\").replace(b'"', b'\\"')
        line = line[0].rsplit(b"{", 1)[0] + b'"' + name + b'"'
    match = _LISTED.match(line.decode(errors="replace"))
    return (match["name"], match["attributes"].lower()) if match else None


def _unquoted(name: str) -> str:
    if name.startswith('"') and name.endswith('"'):
        return re.sub(r"\\(.)", r"\1", name[1:-1])
    return name


def _quoted(name: str) -> str:
    """A mailbox name for a command: quoted, unless the server wrote it quoted already."""
    if name.startswith('"'):
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _number(data: list | None) -> int | None:
    return int(data[0]) if data and data[0] else None


def _ok(response: tuple[str, list]) -> list:
    status, data = response
    if status != "OK":
        raise imaplib.IMAP4.error(b" ".join(d for d in data if isinstance(d, bytes)))
    return data


def _literals(data: list) -> dict[int, bytes]:
    """The literal of each FETCH response by UID. imaplib gives a (prefix, literal) tuple, then
    the rest of the response as bytes; a server may put UID in either."""
    found: dict[int, bytes] = {}
    waiting: bytes | None = None
    for item in data:
        if isinstance(item, tuple):
            prefix, literal = item
            uid = _UID.search(prefix)
            if uid:
                found[int(uid.group(1))] = literal
                waiting = None
            else:
                waiting = literal
        elif isinstance(item, bytes) and waiting is not None:
            uid = _UID.search(item)
            if uid:
                found[int(uid.group(1))] = waiting
            waiting = None
    return found


# --- scheduling ------------------------------------------------------------------------------


async def queue_polls(
    session: AsyncSession, settings: Settings, now: datetime | None = None
) -> int:
    """One poll job per account with an IMAP server (not disabled), at most one per account per
    `reply_poll_seconds`. Runs on a system session; returns how many jobs were queued."""
    now = now or datetime.now(UTC)
    interval = int(now.timestamp() // settings.reply_poll_seconds)
    accounts = await session.execute(
        select(EmailAccount.id, EmailAccount.tenant_id).where(
            EmailAccount.imap_host.is_not(None),
            EmailAccount.imap_host != "",
            EmailAccount.status != AccountStatus.DISABLED,
        )
    )
    return await enqueue_per_tenant(
        session, POLL_KIND,
        ((tenant_id, {"account_id": str(a)}, f"{POLL_KIND}:{a}:{interval}")
         for a, tenant_id in accounts),
        priority=POLL_PRIORITY, max_attempts=POLL_ATTEMPTS,
    )  # fmt: skip
