"""The queuer: moves ready jobs from Postgres (the record of truth) to Redis (the fast lane).

Each round claims, for every tier with room in Redis, a batch by priority then age (`FOR
UPDATE SKIP LOCKED`, so any number of queuers can run), marks it dispatched with a lease, and
packs the jobs into Dramatiq messages of up to `queue_jobs_per_message` [id, attempt] pairs.
The claim commits before the messages are sent: if the queuer dies in between, the lease
expires and the jobs are claimed again. NOTIFY wakes it for new work; otherwise it polls.

Backpressure is per tier: a tier whose Redis list holds `queue_max_messages_per_tier`
messages that no worker has taken yet is not claimed for, so a backed-up tier slows the
queuer, never the other tiers. A message that waits there is alive, so the queuer renews its
jobs' leases (the heartbeat of jobs in Redis; the runner's is that of running jobs): a lease
expires only when a worker died or Redis lost the message, and a job that never started gets
its attempt back (sql/queue.sql: recover_expired_leases).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict

import asyncpg
import dramatiq
from dramatiq.brokers.redis import RedisBroker
from redis.exceptions import RedisError

from jobs.broker import TIER_PRIORITIES, TIERS, build_broker, tier_of
from jobs.connections import connect, system_dsn
from models.sqlfiles import statement
from penguinmails.settings import Settings
from services import live

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
        self._renewed_at = 0.0

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
        if now - self._renewed_at > self.settings.queue_lease_seconds / 3:
            await renew_waiting_leases(conn, self.broker, self.settings)
            self._renewed_at = now
        if now - self._recovered_at > RECOVERY_INTERVAL_SECONDS:
            await recover_expired_leases(conn)
            self._recovered_at = now
        if now - self._suspended_at > SUSPENDED_REFRESH_SECONDS:
            self._suspended = await suspended_tenants(self.settings)
            self._suspended_at = now
        dispatched = 0
        # Tiers in priority order, sharing one round's claim batch: priority then age overall.
        for tier, room in (await asyncio.to_thread(self._room)).items():
            budget = self.settings.queue_claim_batch - dispatched
            if room <= 0 or budget <= 0:
                continue
            batch = min(budget, room * self.settings.queue_jobs_per_message)
            rows = await conn.fetch(
                statement("queue.sql", "claim_ready_jobs"), batch,
                self.settings.queue_lease_seconds, self._suspended, *TIER_PRIORITIES[tier],
            )  # fmt: skip
            if rows:
                await asyncio.to_thread(self._dispatch, rows)
                dispatched += len(rows)
        self.dispatched += dispatched
        return dispatched

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
        _publish_dispatched(self.broker, rows)

    def _room(self) -> dict[str, int]:
        """Per tier, how many more messages Redis may take: its limit less the messages in its
        list, which no worker has taken yet (a worker takes only what it can start at once,
        see worker_prefetch; what it runs is not waiting, and a dead worker's messages are
        not counted)."""
        pipe = self.broker.client.pipeline(transaction=False)
        for tier in TIERS:
            pipe.llen(f"{self.broker.namespace}:{tier}")
        waiting = pipe.execute()
        limit = self.settings.queue_max_messages_per_tier
        return {tier: limit - n for tier, n in zip(TIERS, waiting, strict=True)}

    async def _sleep(self, stop: asyncio.Event) -> None:
        self._wake.clear()
        waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        await asyncio.wait(
            waits, timeout=self.settings.queue_poll_seconds, return_when=asyncio.FIRST_COMPLETED
        )
        for w in waits:
            w.cancel()


def _publish_dispatched(broker: RedisBroker, rows: list[asyncpg.Record]) -> None:
    """The tenants whose jobs now run see it live: one round trip per claim, best effort."""
    pipe = broker.client.pipeline(transaction=False)
    live.add(pipe, (live.Change(row["tenant_id"]) for row in rows if row["tenant_id"]))
    try:
        pipe.execute()
    except RedisError:
        log.warning("could not publish the live changes of %d dispatched jobs", len(rows))


async def renew_waiting_leases(
    conn: asyncpg.Connection, broker: RedisBroker, settings: Settings
) -> int:
    """Renews the leases of the jobs whose messages wait in the tiers' lists; returns how many
    jobs it renewed."""
    refs = await asyncio.to_thread(waiting_refs, broker)
    if not refs:
        return 0
    ids, attempts = zip(*refs, strict=True)
    renewed = await conn.fetch(
        statement("queue.sql", "renew_leases"), list(ids), list(attempts),
        settings.queue_lease_seconds, "dispatched",
    )  # fmt: skip
    return len(renewed)


def waiting_refs(broker: RedisBroker) -> list[tuple[uuid.UUID, int]]:
    """(job id, attempt) of every job in a message waiting in a tier's list."""
    client, refs = broker.client, []
    for tier in TIERS:
        key = f"{broker.namespace}:{tier}"
        ids = client.lrange(key, 0, -1)
        if not ids:
            continue
        for body in client.hmget(f"{key}.msgs", ids):
            if body is not None:  # (None: taken and acked meanwhile)
                refs += _refs_of(body)
    return refs


def _refs_of(body: bytes) -> list[tuple[uuid.UUID, int]]:
    """The refs of one message; none for a message that is not the queuer's (the worker logs
    and drops it)."""
    try:
        return [
            (uuid.UUID(job), int(attempt)) for job, attempt in dramatiq.Message.decode(body).args[0]
        ]
    except (ValueError, TypeError, IndexError, AttributeError, dramatiq.errors.DecodeError):
        return []


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
