"""SMTP delivery: one transaction at a time per connection, with RFC 5321's timeouts, and the
rule that decides what a transaction's end means for its message.

Each server gets a lane per process: up to `Server.connections` connection workers, each
holding one reused aiosmtplib connection (STARTTLS whenever offered) and taking the next
delivery off the lane's queue when it is free. A slow server reply holds that one connection;
the others, and every other server's lane, go on. A connection that failed is closed and
opened again for the next delivery.

What a transaction's end means is `OUTCOMES`, one table checked against RFC 5321: a failure
before the final dot of DATA was written is retried (nothing was delivered); after it, a
reply decides, and no reply at all (a timeout, a lost connection, the batch cut short) is an
unknown outcome, taken as sent and never sent again (§4.5.3.2.6 gives that reply 10 minutes;
§6.1: once the server has the message it may deliver it whatever the client heard).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiosmtplib
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

log = logging.getLogger("penguinmails.smtp")


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait: for the connection and greeting, for each command's reply, and for the
    reply to the end of DATA (RFC 5321 §4.5.3.2: 5 minutes, 5 minutes and 10 minutes)."""

    connect: float = 30.0
    command: float = 60.0
    data: float = 600.0


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    require_tls: bool = False
    connections: int = 8  # transactions to this server at once, per process
    timeouts: Timeouts = Timeouts()
    # The name this client greets with (None: the machine's), and the CA certificates its TLS
    # certificate is checked against (None: the system's).
    local_hostname: str | None = None
    cert_bundle: str | None = None


# --- the outcome rule ------------------------------------------------------------------------


class Phase(enum.IntEnum):
    """How far a transaction got. Everything before AFTER_DOT leaves the server without the
    message; from AFTER_DOT on, the server may have it."""

    CONNECTING = 1  # connect, greeting, EHLO, STARTTLS, AUTH
    MAIL = 2
    RCPT = 3
    DATA = 4  # the DATA command, then the message being written
    AFTER_DOT = 5  # the final "." was handed to the connection: waiting for the reply


class Outcome(enum.Enum):
    SENT = "sent"  # 250 to the end of DATA
    BOUNCED = "bounced"  # a permanent refusal of the recipient or of the message
    RETRY = "retry"  # nothing was delivered: the message goes back to PENDING, the job retries
    ASSUMED = "assumed"  # unknown: the server may have it; recorded as sent, never resent


class Ended(enum.Enum):
    """How a transaction ended, as far as the outcome rule cares."""

    ACCEPTED = "a 2xx reply"
    REFUSED_PERMANENTLY = "a 5xx reply"
    REFUSED_TEMPORARILY = "a 4xx reply"
    NO_REPLY = "a timeout or a lost connection"
    CUT_SHORT = "the batch was cut short (time limit, shutdown)"


# (phase, how it ended) -> outcome. Read it against RFC 5321:
# - §4.2.5 / §3.3: a 5xx to RCPT or to the end of DATA refuses this recipient or message for
#   good (a hard bounce); a 4xx is "try again later".
# - A refused sender (MAIL) is the account's or the server's problem, not the lead's: retried,
#   and counted against the server (services/sending: the account pauses after a run of them).
# - §4.1.1.4: a message is the server's only once it has replied to the end of DATA; before
#   the final dot nothing is delivered, so any failure there is retried.
# - §4.5.3.2.6 and §6.1: after the final dot, no reply is not "not delivered". Resending would
#   risk a second copy, so it is taken as sent ("assumed") and never sent again.
OUTCOMES: dict[tuple[Phase, Ended], Outcome] = {
    **{(p, Ended.NO_REPLY): Outcome.RETRY for p in Phase if p < Phase.AFTER_DOT},
    **{(p, Ended.CUT_SHORT): Outcome.RETRY for p in Phase if p < Phase.AFTER_DOT},
    **{(p, Ended.REFUSED_TEMPORARILY): Outcome.RETRY for p in Phase},
    (Phase.CONNECTING, Ended.REFUSED_PERMANENTLY): Outcome.RETRY,  # the server's, not the lead's
    (Phase.MAIL, Ended.REFUSED_PERMANENTLY): Outcome.RETRY,  # the sender's, not the lead's
    (Phase.RCPT, Ended.REFUSED_PERMANENTLY): Outcome.BOUNCED,
    (Phase.DATA, Ended.REFUSED_PERMANENTLY): Outcome.BOUNCED,
    (Phase.AFTER_DOT, Ended.REFUSED_PERMANENTLY): Outcome.BOUNCED,
    (Phase.AFTER_DOT, Ended.ACCEPTED): Outcome.SENT,
    (Phase.AFTER_DOT, Ended.NO_REPLY): Outcome.ASSUMED,
    (Phase.AFTER_DOT, Ended.CUT_SHORT): Outcome.ASSUMED,
}


@dataclass
class Result:
    """What one delivery came to."""

    outcome: Outcome
    phase: Phase
    reply: str  # the server's reply, or what happened instead
    code: int | None = None  # the reply's code, when there was one
    error: BaseException | None = None

    @property
    def server_failed(self) -> bool:
        """The server, not the recipient, failed (4xx, refused sender, no connection, no
        reply before the dot): one more in a run that pauses the account."""
        return self.outcome == Outcome.RETRY and isinstance(
            self.error, aiosmtplib.SMTPException | OSError
        )


def outcome_of(phase: Phase, error: BaseException | None, reply: str = "") -> Result:
    """The rule applied to how a transaction ended: `error` is None for a 250 to DATA."""
    if error is None:
        return Result(Outcome.SENT, phase, reply)
    if isinstance(error, asyncio.CancelledError):
        ended, code, text = Ended.CUT_SHORT, None, Ended.CUT_SHORT.value
    elif isinstance(error, aiosmtplib.SMTPResponseException) and error.code >= 400:
        code, text = error.code, f"{error.code} {error.message}"
        ended = Ended.REFUSED_PERMANENTLY if code >= 500 else Ended.REFUSED_TEMPORARILY
    else:  # timeouts, lost connections, refused connections, TLS and protocol errors
        ended, code, text = Ended.NO_REPLY, None, str(error) or repr(error)
    if phase == Phase.AFTER_DOT and ended in (Ended.NO_REPLY, Ended.CUT_SHORT):
        text = f"outcome unknown: {ended.value} after the end of DATA; not resent ({text})"
    outcome = OUTCOMES[(phase, ended)]
    return Result(outcome, phase, text[:500], code, None if outcome == Outcome.ASSUMED else error)


# --- one transaction -------------------------------------------------------------------------


async def transact(
    smtp: aiosmtplib.SMTP,
    timeouts: Timeouts,
    sender: str,
    recipient: str,
    message: bytes,
    at: Callable[[Phase], None],
) -> str:
    """MAIL, RCPT, DATA on an open connection, calling `at` as each phase begins; returns the
    reply to the end of DATA. The final dot goes to the connection in the same write as the
    message, and `at(AFTER_DOT)` is called right after that write: a failure before it means
    the server cannot have the message."""
    at(Phase.MAIL)
    await smtp.mail(sender, timeout=timeouts.command)
    at(Phase.RCPT)
    await smtp.rcpt(recipient, timeout=timeouts.command)
    at(Phase.DATA)
    start = await smtp.execute_command(b"DATA", timeout=timeouts.command)
    if start.code != 354:
        raise aiosmtplib.SMTPDataError(start.code, start.message)
    body = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message))
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    smtp.protocol.write(body + b".\r\n")  # raises when the connection is gone: before the dot
    await _handed_to_the_network(smtp, timeouts.command)
    at(Phase.AFTER_DOT)
    reply = await smtp.protocol.read_response(timeout=timeouts.data)
    if reply.code != 250:
        raise aiosmtplib.SMTPDataError(reply.code, reply.message)
    return f"{reply.code} {reply.message}"


async def _handed_to_the_network(smtp: aiosmtplib.SMTP, within: float) -> None:
    """Until the message and its dot have left our write buffer (at once, unless the message
    is large and the link slow): while any of it is still ours, the server cannot have the
    dot, and a failure is still one before it."""
    transport = smtp.protocol.transport if smtp.protocol else None
    async with asyncio.timeout(within):
        while transport is not None and transport.get_write_buffer_size():
            if transport.is_closing():
                raise aiosmtplib.SMTPServerDisconnected("connection lost while writing DATA")
            await asyncio.sleep(0.005)


async def connect(server: Server) -> aiosmtplib.SMTP:
    smtp = aiosmtplib.SMTP(
        hostname=server.host, port=server.port, timeout=server.timeouts.connect,
        start_tls=True if server.require_tls else None,  # None: upgrade when offered
        local_hostname=server.local_hostname, cert_bundle=server.cert_bundle,
    )  # fmt: skip
    try:
        await smtp.connect()
        if server.username:
            await smtp.login(server.username, server.password or "")
    except BaseException:  # a refused log-in, a timeout, a cut: the socket is not kept
        smtp.close()
        raise
    return smtp


# --- the lane: a server's connections in this process ----------------------------------------


@dataclass(eq=False)
class Delivery:
    """One message for a lane. `claim` commits it SENDING once a connection is ready for it
    (False: it may not go out); `record` commits its result. Both are the sender's, so the
    lane never touches the database itself."""

    sender: str
    recipient: str
    data: bytes
    claim: Callable[[], Awaitable[bool]]
    record: Callable[[Result], Awaitable[None]]
    result: Result | None = None
    claimed: bool = False
    phase: Phase | None = None  # None: still waiting for a connection
    withdrawn: bool = False
    record_error: BaseException | None = None  # recording the result failed
    done: asyncio.Event = field(default_factory=asyncio.Event)
    _transaction: asyncio.Task | None = None

    def cut(self, grace: float) -> None:
        """Cut short: a delivery still waiting is withdrawn; one before the dot is stopped
        now; one after the dot gets `grace` seconds for its reply before it is stopped."""
        if self.phase is None:
            self.withdrawn = True
            self.done.set()
        elif self._transaction is not None and not self._transaction.done():
            if self.phase == Phase.AFTER_DOT:
                asyncio.get_running_loop().call_later(grace, self._transaction.cancel)
            else:
                self._transaction.cancel()


class Lane:
    """Up to `server.connections` connection workers, started as deliveries arrive."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self._queue: asyncio.Queue[Delivery] = asyncio.Queue()
        self._workers: set[asyncio.Task] = set()
        self._idle = 0

    def submit(self, delivery: Delivery) -> None:
        self._queue.put_nowait(delivery)
        if self._idle < self._queue.qsize() and len(self._workers) < self.server.connections:
            task = asyncio.create_task(self._work())
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)

    async def _work(self) -> None:
        connection = _Connection()
        try:
            while True:
                self._idle += 1
                try:
                    delivery = await self._queue.get()
                finally:
                    self._idle -= 1
                if not delivery.withdrawn:
                    await self._deliver(delivery, connection)
        finally:
            connection.close()

    async def _deliver(self, delivery: Delivery, connection: _Connection) -> None:
        """One delivery, from its claim to its recorded result. The transaction runs as a task
        of its own, so cutting it short never stops this worker."""

        def at(phase: Phase) -> None:
            delivery.phase = phase

        at(Phase.CONNECTING)
        transaction = asyncio.ensure_future(self._transact(delivery, connection, at))
        delivery._transaction = transaction
        await asyncio.wait([transaction])
        try:
            result: Result | None = outcome_of(Phase.AFTER_DOT, None, transaction.result())
        except _NotClaimed as e:
            result = e.result
        except (Exception, asyncio.CancelledError) as e:
            connection.close()
            result = outcome_of(delivery.phase, e)
        delivery.result = result
        try:
            if delivery.claimed:
                await _record(delivery, result)
        finally:
            delivery.done.set()

    async def _transact(self, delivery: Delivery, connection: _Connection, at) -> str:
        if not connection.open:
            try:
                connection.smtp = await connect(self.server)
            except Exception as e:  # before the claim: the message never was SENDING
                raise _NotClaimed(outcome_of(Phase.CONNECTING, e)) from e
        # The claim commits or not as a whole: a cut waits for it, so that a claimed message
        # is always released or recorded.
        claim = asyncio.ensure_future(delivery.claim())
        try:
            delivery.claimed = await asyncio.shield(claim)
        except asyncio.CancelledError:
            delivery.claimed = await claim
            raise
        if not delivery.claimed:
            raise _NotClaimed(None)
        return await transact(
            connection.smtp, self.server.timeouts, delivery.sender, delivery.recipient,
            delivery.data, at,
        )  # fmt: skip


async def cut_short(deliveries: list[Delivery], grace: float) -> None:
    """Cuts the deliveries short (see Delivery.cut) and waits until each one is done, however
    often the wait itself is cancelled: a claimed message must be released or have its result
    recorded by its live process, never be left SENDING."""
    for delivery in deliveries:
        delivery.cut(grace)
    waiting = asyncio.ensure_future(asyncio.gather(*(d.done.wait() for d in deliveries)))
    while not waiting.done():
        try:
            await asyncio.shield(waiting)
        except asyncio.CancelledError:
            continue


RECORD_RETRIES = (0.2, 1.0, 3.0)  # seconds before each new try to commit a known result


async def _record(delivery: Delivery, result: Result | None) -> None:
    """Commits a result, trying again on failure (each write is idempotent): a known result
    left uncommitted would leave its row SENDING, which a retry can only take as sent."""
    for pause in (*RECORD_RETRIES, None):
        try:
            await delivery.record(result)
            return
        except Exception as e:
            if pause is None:  # the row stays SENDING: its job's retry takes it as sent
                delivery.record_error = e
                log.error(
                    "could not record the result of a delivery to %s: %r", delivery.recipient, e
                )
                return
            await asyncio.sleep(pause)


class _Connection:
    """A connection worker's connection, kept from one delivery to the next while it works."""

    def __init__(self) -> None:
        self.smtp: aiosmtplib.SMTP | None = None

    @property
    def open(self) -> bool:
        return self.smtp is not None and self.smtp.is_connected

    def close(self) -> None:
        if self.smtp is not None:
            self.smtp.close()
        self.smtp = None


class _NotClaimed(Exception):
    """No transaction happened (no connection could be had, or the claim was refused)."""

    def __init__(self, result: Result | None) -> None:
        super().__init__(result.reply if result else "claim refused")
        self.result = result


_lanes: dict[Server, Lane] = {}


def lane_for(server: Server) -> Lane:
    """The process's lane for a server (lanes belong to the event loop that made them)."""
    if server not in _lanes:
        _lanes[server] = Lane(server)
    return _lanes[server]
