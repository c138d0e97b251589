"""SMTP delivery over pooled, reused aiosmtplib connections, one pool per server and login.

A connection stays open between messages (the expensive part is the TCP and TLS handshake,
not the transaction); STARTTLS is used whenever the server offers it. A connection that
failed is closed, never returned to the pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiosmtplib


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    require_tls: bool = False
    connections: int = 8  # the pool's size: transactions to this server at once


class ConnectionPool:
    def __init__(self, server: Server, size: int = 8, timeout: float = 30.0) -> None:
        self.server, self.size, self.timeout = server, size, timeout
        # Batches of messages take turns: one at a time leases (nearly) every connection, so it
        # claims its messages in a few large waves rather than many small ones.
        self.turn = asyncio.Lock()
        self._idle: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
        self._slots = asyncio.Semaphore(size)

    @asynccontextmanager
    async def lease(self, wanted: int) -> AsyncIterator[list[aiosmtplib.SMTP]]:
        """Between 1 and `wanted` connections at once: waits for the first, and takes more only
        while they are free (so two leases never wait on each other). A connection that was
        closed while leased (it failed) is not given back."""
        await self._slots.acquire()
        held = 1
        while held < wanted and not self._slots.locked():
            await self._slots.acquire()  # free: does not wait
            held += 1
        connections: list[aiosmtplib.SMTP] = []
        try:
            for _ in range(held):
                connections.append(await self._take())
            yield connections
        except BaseException:
            for smtp in connections:
                smtp.close()
            raise
        else:
            for smtp in connections:
                if smtp.is_connected:
                    self._idle.put_nowait(smtp)
        finally:
            for _ in range(held):
                self._slots.release()

    async def _take(self) -> aiosmtplib.SMTP:
        while not self._idle.empty():
            smtp = self._idle.get_nowait()
            if smtp.is_connected:
                return smtp
        s = self.server
        smtp = aiosmtplib.SMTP(
            hostname=s.host, port=s.port, timeout=self.timeout,
            start_tls=True if s.require_tls else None,  # None: upgrade when offered
        )  # fmt: skip
        await smtp.connect()
        if s.username:
            await smtp.login(s.username, s.password or "")
        return smtp

    async def close(self) -> None:
        while not self._idle.empty():
            smtp = self._idle.get_nowait()
            try:
                await smtp.quit()
            except aiosmtplib.SMTPException:
                smtp.close()


_pools: dict[Server, ConnectionPool] = {}


def pool_for(server: Server) -> ConnectionPool:
    """The process's pool for a server (pools belong to the event loop that made them)."""
    if server not in _pools:
        _pools[server] = ConnectionPool(server, size=server.connections)
    return _pools[server]


async def transact(smtp: aiosmtplib.SMTP, sender: str, recipient: str, message: bytes) -> str:
    """One SMTP transaction on a leased connection; returns the server's final reply. Raises
    aiosmtplib's SMTPRecipientRefused / SMTPDataError / SMTPSenderRefused (carrying the code) or
    connection errors; the caller decides what a code means, and closes the connection."""
    try:
        errors, reply = await smtp.sendmail(sender, [recipient], message)
    except aiosmtplib.SMTPRecipientsRefused as e:  # the only recipient: say which code
        raise e.recipients[0] from e
    if errors:  # the only recipient was refused
        code, text = errors[recipient]
        raise aiosmtplib.SMTPRecipientRefused(code, text, recipient)
    return reply
