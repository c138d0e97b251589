"""A real SMTP server for the sending tests (aiosmtpd on its own thread), which the test can
make refuse, fail, slow down or pace like a relay with a rate limit."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from aiosmtpd.controller import Controller


class Sink:
    """Records every message it is given (at once, before it answers: from then on the server
    has it), with the time it arrived; refuses recipients on `refuse` with 550 at RCPT."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.arrived: list[float] = []  # time.monotonic() of each message, in order
        self.refuse: set[str] = set()
        self.policy: set[str] = set()  # refused as Microsoft refuses unauthenticated bulk mail
        self.unavailable = False
        self.delay = 0.0  # seconds before answering the end of DATA, for every message
        self.slow: dict[str, float] = {}  # ... and for these recipients instead
        self.per_second = 0.0  # a relay's rate: messages accepted per second overall (0: no limit)
        self._next_slot = 0.0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.unavailable:
            return "451 4.3.0 try again later"
        if address in self.refuse:
            return "550 5.1.1 no such user"
        if address in self.policy:
            return "550 5.7.515 Access denied, sending domain does not meet the required level"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.per_second:  # each message takes the next free slot of the relay's rate
            now = time.monotonic()
            slot = max(now, self._next_slot)
            self._next_slot = slot + 1 / self.per_second
            await asyncio.sleep(slot - now)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        self.arrived.append(time.monotonic())
        await asyncio.sleep(self.slow.get(envelope.rcpt_tos[0], self.delay))
        return "250 OK"

    def received_by(self, recipient: str) -> int:
        return sum(1 for _, rcpts, _ in self.messages if recipient in rcpts)


@contextmanager
def running_sink() -> Iterator[tuple[Sink, int]]:
    """A Sink listening on a free loopback port; (handler, port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    handler = Sink()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()
