"""The live hub: one Redis subscription per API process, fanned out to its websocket clients.

Workers, the queuer and the API publish change events (services/live.py) and deliverability
events (services/deliverability_events.py). The hub PSUBSCRIBEs to both on one connection
(named `penguinmails-live-<pid>-<random>`). What subscribers share is a topic:

- a tenant's queue status or a campaign's progress: read from PostgreSQL once per tick for all
  its subscribers (Hasura's multiplexing), a tick only after a change event, at most
  `live_max_hz` a second, plus a safety refresh every `live_refresh_seconds` (a lost event);
  a push only when the state differs from the last one;
- a tenant's deliverability events: relayed as they come.

What a subscriber is sent is the same for every subscriber of a topic with the same document and
variables (a cohort), so it is made once (Hasura's way): the resolvers turn a reading into its
GraphQL object once (`Reading.view`), `CohortExecutor` executes a document on that shared object
once, and `pushed` sends every push after the first as the cohort's one rendered JSON, straight
to the websocket, without going through Strawberry's per-result machinery again.

Each subscription has a bounded queue; a client whose queue is full is too slow: it is dropped
(its websocket closed with 4408) and nobody waits for it. A lost Redis connection is retried
with backoff; once subscribed again every state topic is read afresh.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import secrets
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from graphql import ExecutionResult
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from jobs.status import queue_status
from models.sessions import Database
from penguinmails.settings import Settings
from services import deliverability_events, live
from services.progress import campaign_progress

log = logging.getLogger("penguinmails.live")

CLIENT_NAME = "penguinmails-live"
TOO_SLOW = 4408  # the client's queue filled up: it was not reading
TOO_MANY_CONNECTIONS = 4429  # the tenant holds live_max_connections_per_tenant already
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0

Key = tuple[str, ...]  # ("queue", tenant) | ("campaign", tenant, campaign) | ("events", tenant)


def queue_key(tenant_id: uuid.UUID) -> Key:
    return ("queue", str(tenant_id))


def campaign_key(tenant_id: uuid.UUID, campaign_id: uuid.UUID) -> Key:
    return ("campaign", str(tenant_id), str(campaign_id))


def events_key(tenant_id: uuid.UUID) -> Key:
    return ("events", str(tenant_id))


SHARED_RESULTS = "_penguinmails_cohort_results"  # on a shared payload: its results per cohort


@dataclass(frozen=True)
class Reading:
    """A state as read, and when the read began (what it shows happened before that)."""

    value: Any
    at: datetime
    views: dict = field(default_factory=dict, compare=False, repr=False)

    def view(self, make: Callable[[Reading], Any]) -> Any:
        """`make(self)`, made once for every subscriber of the reading, and marked as shared: a
        document executed on it is executed once per cohort (see `CohortExecutor`). `make` is a
        module-level function (its identity is the view's), and it sees the reading alone,
        nothing of the subscriber."""
        made = self.views.get(make)
        if made is None:
            made = self.views[make] = make(self)
            setattr(made, SHARED_RESULTS, {})
        return made


# Set in a subscription's task: its graphql-transport-ws operation id (graphql_api/app.py), and
# the executor of its last shared event (`CohortExecutor`).
OPERATION_ID: ContextVar[str | None] = ContextVar("penguinmails_live_operation", default=None)
_EVENT_EXECUTOR: ContextVar[Any] = ContextVar("penguinmails_live_executor", default=None)


class CohortExecutor(StrawberryGraphQLCoreExecutionContext):
    """Executes a subscription event whose payload is shared (`Reading.view`) once per document
    and variables: every subscriber of a topic gets the same object, and its fields are resolved
    from that object alone, so the result is the same for all of them. Other events, queries and
    mutations execute as usual. A result with errors is not shared (each subscriber's own)."""

    def execute_operation(self, serially: bool | None = None) -> Any:
        results = getattr(self.root_value, SHARED_RESULTS, None)
        if results is None:
            return super().execute_operation(serially)
        _EVENT_EXECUTOR.set(self)  # `pushed` executes the subscriber's later events with it
        key = _cohort(self)
        result = results.get(key)
        if result is None:
            result = super().execute_operation(serially)
            if isinstance(result, ExecutionResult) and not result.errors:
                results[key] = result
        return result


def _cohort(executor: CohortExecutor) -> tuple:
    """What makes subscribers of one topic receive the same result: document, operation name
    and variables."""
    operation, variables = executor.operation, executor.variable_values.coerced
    document = operation.loc.source.body if operation.loc else id(operation)
    name = operation.name.value if operation.name else None
    return (document, name, repr(sorted(variables.items())))


def _rendered(executor: CohortExecutor, key: tuple, view: Any) -> str | None:
    """The `next` payload of the executor's cohort (`key`: its `_cohort`, with "json") for a
    shared view, as JSON, made once for the cohort; None when the result has errors (Strawberry
    reports those)."""
    results = getattr(view, SHARED_RESULTS)
    text = results.get(key)
    if text is None:
        result = executor.build_per_event_executor(view).execute_operation(False)
        if not isinstance(result, ExecutionResult) or result.errors:
            return None
        text = results[key] = json.dumps({"data": result.data}, separators=(",", ":"))
    return text


async def pushed(
    websocket: Any, readings: AsyncIterator[Reading], make: Callable[[Reading], Any]
) -> AsyncIterator[Any]:
    """A live subscription resolver's stream: the view (`Reading.view(make)`) of each reading.

    The first goes the usual way, through Strawberry. Each later one is the cohort's rendered
    payload, sent straight to the websocket as graphql-transport-ws's `next` message (what
    Strawberry would send), so that a push costs its subscriber a string and a write, not an
    execution, an encoding and Strawberry's extensions. Over another transport, or when a
    result has errors, views are yielded as usual."""
    operation_id = OPERATION_ID.get()
    prefix = (
        None
        if operation_id is None
        else f'{{"id":{json.dumps(operation_id)},"type":"next","payload":'
    )
    executor, key = None, None  # the subscriber's, from its first shared event on
    async for reading in readings:
        view = reading.view(make)
        if executor is None and (executor := _EVENT_EXECUTOR.get()) is not None:
            key = ("json", _cohort(executor))
        text = None if prefix is None or executor is None else _rendered(executor, key, view)
        if text is None:
            yield view
            continue
        if websocket.application_state == WebSocketState.DISCONNECTED:
            return  # dropped by the hub, or gone
        try:
            await websocket.send_text(f"{prefix}{text}}}")
        except WebSocketDisconnect:
            return


@dataclass(eq=False)
class Client:
    """One subscription: its pushes waiting to be sent, and the websocket to close if it lags."""

    websocket: WebSocket | None
    queue: asyncio.Queue
    dropped: bool = False


@dataclass(eq=False)
class Topic:
    key: Key
    read: Callable[[], Awaitable[Any]] | None  # None: a stream, relayed as is
    clients: set[Client] = field(default_factory=set)
    reading: Reading | None = None
    fingerprint: Any = None
    dirty: bool = True  # a read is due
    last_read: float = float("-inf")
    ticking: asyncio.Task | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # the first value is there


class Hub:
    def __init__(self, settings: Settings, redis_url: str) -> None:
        self.settings = settings
        # Its own engines, without a ping per checkout: the reads come several times a second,
        # and a read that fails on a stale connection is tried again at the next interval.
        self.db = Database(settings.model_copy(update={"db_pool_pre_ping": False}))
        self._autocommit = self.db.engine().execution_options(isolation_level="AUTOCOMMIT")
        self._reading = asyncio.Semaphore(settings.db_pool_size)
        self.interval = 1.0 / settings.live_max_hz
        # Named so that operators (and tests) can find it in CLIENT LIST: one per API process.
        self.client_name = f"{CLIENT_NAME}-{os.getpid()}-{secrets.token_hex(2)}"
        self.redis = Redis.from_url(
            redis_url, client_name=self.client_name, health_check_interval=10,
            retry=Retry(ExponentialWithJitterBackoff(BACKOFF_MAX, BACKOFF_FIRST), 3),
        )  # fmt: skip
        self.topics: dict[Key, Topic] = {}
        self.connections: Counter[uuid.UUID] = Counter()  # open websockets per tenant
        self.dropped = 0  # clients dropped for being too slow, since start
        self.reads = 0  # shared reads from PostgreSQL, since start
        self.subscribed = asyncio.Event()  # set while the Redis subscription is live
        self._tasks: list[asyncio.Task] = []
        self._closing: set[asyncio.Task] = set()  # websockets of dropped clients being closed

    # --- what the metrics read ---------------------------------------------------------------

    @property
    def clients(self) -> int:
        """Websocket connections admitted and still open."""
        return sum(self.connections.values())

    # --- the process's lifetime ---------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._listen()), asyncio.create_task(self._refresh())]

    async def stop(self) -> None:
        for task in [*self._tasks, *(t.ticking for t in self.topics.values() if t.ticking)]:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        await self.redis.aclose()
        await self.db.dispose()

    # --- connections --------------------------------------------------------------------------

    def admit(self, tenant_id: uuid.UUID) -> bool:
        """Counts a new websocket of the tenant in, unless it holds its cap already."""
        if self.connections[tenant_id] >= self.settings.live_max_connections_per_tenant:
            return False
        self.connections[tenant_id] += 1
        return True

    def release(self, tenant_id: uuid.UUID) -> None:
        self.connections[tenant_id] -= 1
        if self.connections[tenant_id] <= 0:
            del self.connections[tenant_id]

    # --- subscriptions ------------------------------------------------------------------------

    def queue_status(self, tenant_id: uuid.UUID, websocket: WebSocket | None) -> AsyncIterator:
        async def read():
            async with self._connection() as connection:
                return await queue_status(connection, tenant_id)

        return self._follow(queue_key(tenant_id), read, websocket)

    def campaign_progress(
        self, tenant_id: uuid.UUID, campaign_id: uuid.UUID, websocket: WebSocket | None
    ) -> AsyncIterator:
        async def read():
            async with self._connection() as connection:
                return await campaign_progress(connection, tenant_id, campaign_id)

        return self._follow(campaign_key(tenant_id, campaign_id), read, websocket)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection]:
        """A connection of the application role outside any transaction: a read is one
        statement that binds its tenant for itself (sql/queue.sql, sql/progress.sql), so one
        round trip. Under load each round trip waits for a turn of the API's loop: five of them
        (begin, bind, two statements, commit) made a read take 0.9 s at p95 with 5,000
        subscribers. No more reads at once than the pool holds connections: a read past them
        opened a connection of its own and closed it after (5 % of the API's time)."""
        async with self._reading, self._autocommit.connect() as connection:
            yield connection

    def deliverability_events(
        self, tenant_id: uuid.UUID, websocket: WebSocket | None
    ) -> AsyncIterator:
        return self._follow(events_key(tenant_id), None, websocket)

    async def _follow(
        self, key: Key, read: Callable[[], Awaitable[Any]] | None, websocket: WebSocket | None
    ) -> AsyncIterator:
        """A state topic's current Reading first, then each changed one; a stream's events as
        they come. Until the client goes or is dropped."""
        topic = self.topics.get(key)
        if topic is None:
            topic = self.topics[key] = Topic(key, read)
            if read is None:
                topic.ready.set()
            else:
                self._schedule(topic)
        client = Client(websocket, asyncio.Queue(self.settings.live_client_queue))
        topic.clients.add(client)
        try:
            if read is not None:
                await topic.ready.wait()
                if client.queue.empty():  # else a newer reading came meanwhile
                    client.queue.put_nowait(topic.reading)
            while not client.dropped:
                value = await client.queue.get()
                if client.dropped:
                    return
                yield value
        finally:
            self._leave(topic, client)

    def _leave(self, topic: Topic, client: Client) -> None:
        topic.clients.discard(client)
        if not topic.clients and self.topics.get(topic.key) is topic:
            del self.topics[topic.key]
            if topic.ticking is not None:
                topic.ticking.cancel()

    # --- ticks: one shared read, fanned out ----------------------------------------------------

    def _changed(self, key: Key) -> None:
        topic = self.topics.get(key)
        if topic is not None:
            topic.dirty = True
            self._schedule(topic)

    def _schedule(self, topic: Topic) -> None:
        if topic.ticking is None or topic.ticking.done():
            topic.ticking = asyncio.create_task(self._tick(topic))

    async def _tick(self, topic: Topic) -> None:
        """Reads while events keep coming, at most once per interval; pushes what changed."""
        loop = asyncio.get_running_loop()
        while topic.dirty and topic.clients:
            wait = topic.last_read + self.interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            topic.dirty, topic.last_read = False, loop.time()
            at = datetime.now(UTC)
            try:
                value = await topic.read()
            except Exception:
                log.warning("live read of %s failed; tried again", topic.key, exc_info=True)
                topic.dirty = True
                continue
            self.reads += 1
            fingerprint = _fingerprint(value)
            if fingerprint == topic.fingerprint:
                continue
            topic.reading, topic.fingerprint = Reading(value, at), fingerprint
            if topic.ready.is_set():
                self._fan_out(topic, topic.reading)
            topic.ready.set()

    def _fan_out(self, topic: Topic, value: Any) -> None:
        for client in list(topic.clients):
            try:
                client.queue.put_nowait(value)
            except asyncio.QueueFull:
                self._drop(topic, client)

    def _drop(self, topic: Topic, client: Client) -> None:
        """A client that does not keep up is cut off; the others never wait for it."""
        client.dropped = True
        topic.clients.discard(client)
        self.dropped += 1
        log.info("dropped a live client of %s: its queue is full", topic.key)
        if client.websocket is not None:
            closing = asyncio.create_task(_close(client.websocket))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    def _refresh_all(self) -> None:
        for key in list(self.topics):
            if self.topics[key].read is not None:
                self._changed(key)

    async def _refresh(self) -> None:
        """The safety net for lost events and for time alone (a scheduled job falling due)."""
        while True:
            await asyncio.sleep(self.settings.live_refresh_seconds)
            self._refresh_all()

    # --- the one Redis subscription ------------------------------------------------------------

    async def _listen(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.psubscribe(live.CHANNEL_PATTERN, deliverability_events.PATTERN)
                async for message in pubsub.listen():
                    delay = BACKOFF_FIRST
                    if self._on_message(message):
                        await asyncio.sleep(0)  # its clients take it before the next one comes
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("live subscription lost (%s); again in %.1f s", e, delay)
                self.subscribed.clear()
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
            finally:
                with suppress(Exception):
                    await pubsub.aclose()

    def _on_message(self, message: dict) -> bool:
        """Marks the topics a change touches (their ticks read later), or relays a stream's
        event to its clients: True then, when their queues took it. A change is not waited on:
        under load the loop's every turn is long, and a turn per change fell seconds behind."""
        kind = message["type"]
        if kind == "psubscribe":  # (re)subscribed: what happened meanwhile was missed
            self.subscribed.set()
            self._refresh_all()
            return False
        if kind != "pmessage":
            return False
        channel = message["channel"].decode()
        if channel.startswith("live:"):
            tenant = channel[5:]
            self._changed(("queue", tenant))
            for campaign in json.loads(message["data"])["campaignIds"]:
                self._changed(("campaign", tenant, campaign))
            return False
        topic = self.topics.get(("events", channel.split(":")[1]))
        if topic is None:
            return False
        self._fan_out(topic, json.loads(message["data"]))
        return True


def _fingerprint(value: Any) -> Any:
    """The state without its read time: equal fingerprints are not pushed again."""
    fields = dataclasses.asdict(value)
    fields.pop("at", None)
    return fields


async def _close(websocket: WebSocket) -> None:
    # Its writes may be stuck on a full socket: the close waits for them, never the hub.
    if websocket.application_state != WebSocketState.DISCONNECTED:
        with suppress(Exception):
            await websocket.close(code=TOO_SLOW, reason="too slow: live updates dropped")
