"""The queuer: moves ready jobs from Postgres (the record of truth) to Redis (the fast lane).

Each round claims a batch by priority then age (`FOR UPDATE SKIP LOCKED`, so any number of
queuers can run), marks it dispatched with a lease, and packs the jobs of each tier into
Dramatiq messages of up to `queue_jobs_per_message` [id, attempt] pairs. The claim commits
before the messages are sent: if the queuer dies in between, the lease expires and the jobs
are claimed again as a new attempt. NOTIFY wakes it for new work; otherwise it polls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

import asyncpg
import dramatiq
from dramatiq.brokers.redis import RedisBroker

from jobs.broker import TIERS, build_broker, tier_of
from jobs.connections import connect, system_dsn
from models.sqlfiles import statement
from penguinmails.settings import Settings

log = logging.getLogger("penguinmails.queuer")
RECOVERY_INTERVAL_SECONDS = 5.0
SUSPENDED_REFRESH_SECONDS = 5.0
RECOVERY_BATCH = 5000


class Queuer:
    def __init__(self, settings: Settings, broker: RedisBroker | None = None) -> None:
        self.settings = settings
        self.broker = broker or build_broker(settings)
        for tier in TIERS:
            self.broker.declare_queue(tier)
        self.dispatched = 0
        self._wake = asyncio.Event()
        self.listening = asyncio.Event()  # set once NOTIFY of new jobs reaches this queuer
        self._suspended: list = []
        self._suspended_at = 0.0
        self._recovered_at = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        conn = await connect(self.settings)
        await conn.add_listener("queue_jobs", lambda *_: self._wake.set())
        self.listening.set()
        try:
            while not stop.is_set():
                claimed = await self.round(conn)
                if claimed < self.settings.queue_claim_batch:
                    await self._sleep(stop)
        finally:
            await conn.close()

    async def round(self, conn: asyncpg.Connection) -> int:
        """One claim-and-dispatch; returns how many jobs it dispatched."""
        now = time.monotonic()
        if now - self._recovered_at > RECOVERY_INTERVAL_SECONDS:
            await recover_expired_leases(conn)
            self._recovered_at = now
        if now - self._suspended_at > SUSPENDED_REFRESH_SECONDS:
            self._suspended = await suspended_tenants(self.settings)
            self._suspended_at = now
        room = await asyncio.to_thread(self._room)
        if room <= 0:
            return 0
        batch = min(self.settings.queue_claim_batch, room * self.settings.queue_jobs_per_message)
        rows = await conn.fetch(
            statement("queue.sql", "claim_ready_jobs"), batch, self.settings.queue_lease_seconds,
            self._suspended,
        )  # fmt: skip
        if rows:
            await asyncio.to_thread(self._dispatch, rows)
            self.dispatched += len(rows)
        return len(rows)

    def _dispatch(self, rows: list[asyncpg.Record]) -> None:
        by_tier: dict[str, list[list]] = defaultdict(list)
        for row in rows:
            by_tier[tier_of(row["priority"])].append([str(row["id"]), row["attempts"]])
        size = self.settings.queue_jobs_per_message
        for tier, refs in by_tier.items():
            for start in range(0, len(refs), size):
                self.broker.enqueue(
                    dramatiq.Message(
                        queue_name=tier, actor_name=f"run_{tier}", args=(refs[start : start + size],),
                        kwargs={}, options={},
                    )
                )  # fmt: skip

    def _room(self) -> int:
        """Messages Redis may still take before the workers catch up (backpressure keeps
        dispatched jobs from waiting in Redis past their lease). A message counts until it is
        acked: its body stays in `{tier}.msgs` while it waits in the list, sits in a worker's
        prefetch, or runs (the list's length alone misses the prefetched ones)."""
        pipe = self.broker.client.pipeline(transaction=False)
        for tier in TIERS:
            pipe.hlen(f"{self.broker.namespace}:{tier}.msgs")
        return self.settings.queue_max_messages_per_tier * len(TIERS) - sum(pipe.execute())

    async def _sleep(self, stop: asyncio.Event) -> None:
        self._wake.clear()
        waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        await asyncio.wait(
            waits, timeout=self.settings.queue_poll_seconds, return_when=asyncio.FIRST_COMPLETED
        )
        for w in waits:
            w.cancel()


async def recover_expired_leases(conn: asyncpg.Connection) -> int:
    """Puts jobs whose lease expired back in the queue (or dead); returns how many."""
    total = 0
    while True:
        rows = await conn.fetch(statement("queue.sql", "recover_expired_leases"), RECOVERY_BATCH)
        total += len(rows)
        if len(rows) < RECOVERY_BATCH:
            break
    if total:
        log.info("returned %d jobs with expired leases", total)
    return total


async def suspended_tenants(settings: Settings) -> list:
    """Tenants whose sending is suspended (billing): their jobs wait in Postgres."""
    dsn = system_dsn(settings, "oltp")
    conn = await asyncpg.connect(dsn)
    try:
        return [
            r[0] for r in await conn.fetch("SELECT id FROM app.tenants WHERE status = 'SUSPENDED'")
        ]
    finally:
        await conn.close()
