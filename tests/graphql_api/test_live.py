"""The live hub: one Redis subscription per API process, shared reads, dropped slow clients,
recovery after Redis restarts, the caps, and the publishers (send outcomes)."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import strawberry
from sqlalchemy import event
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from graphql_api import live as hub_module
from graphql_api.ids import encode_id, parse_id
from jobs.queue import enqueue
from models.sessions import Database
from penguinmails import embedded
from penguinmails.settings import Settings
from services import auth, deliverability_events, live
from tests.factories import UNLIMITED_RATES, sending_campaign
from tests.graphql_api.conftest import Account, Api, serve, sign_up
from tests.jobs.conftest import queue_settings, run_queuer, start_worker  # noqa: F401 (fixtures)
from tests.smtp import running_sink

QUEUE_STATUS = "subscription { queueStatus { queued running } }"
PROGRESS = "subscription($id: ID!) { campaignProgress(campaignId: $id) { sent queued at } }"
EVENTS = "subscription { deliverabilityEvents { kind message } }"


@asynccontextmanager
async def api_with(settings: Settings, **overrides) -> AsyncIterator[Api]:
    """An API process of its own (its own hub), with `overrides` to its settings."""
    async for api in serve(settings.model_copy(update=overrides)):
        yield api


async def open_client(api: Api, bearer: str, tenant: str | None, **options) -> ClientConnection:
    ws = await connect(
        api.url.replace("http://", "ws://") + "/graphql",
        subprotocols=["graphql-transport-ws"],
        **options,
    )
    params = {"Authorization": f"Bearer {bearer}"} | ({"tenantId": tenant} if tenant else {})
    await ws.send(json.dumps({"type": "connection_init", "payload": params}))
    ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert ack["type"] == "connection_ack", ack
    return ws


async def subscribe(ws: ClientConnection, query: str, variables: dict | None = None, id="1"):
    payload = {"query": query, "variables": variables or {}}
    await ws.send(json.dumps({"id": id, "type": "subscribe", "payload": payload}))


async def next_data(ws: ClientConnection, field: str, within: float = 10) -> dict:
    message = json.loads(await asyncio.wait_for(ws.recv(), within))
    assert message["type"] == "next", message
    return message["payload"]["data"][field]


async def subscribed(api: Api, account: Account, query: str = QUEUE_STATUS) -> ClientConnection:
    ws = await open_client(api, account.token, account.tenant)
    await subscribe(ws, query)
    return ws


def tenant_of(account: Account) -> uuid.UUID:
    return uuid.UUID(str(parse_id(account.tenant)[1]))


async def enqueue_and_publish(api: Api, db: Database, tenant: uuid.UUID) -> None:
    """A job for the tenant, committed, then its change published (as the queuer would)."""
    async with db.tenant_session(tenant) as s:
        await enqueue(s, "noop", {}, tenant_id=tenant, priority=10)
    await live.publish(api.app.state.redis, [live.Change(tenant)])


async def clients_named(redis_url: str, name: str) -> int:
    client = aioredis.Redis.from_url(redis_url)
    try:
        return sum(1 for c in await client.client_list() if c["name"] == name)
    finally:
        await client.aclose()


async def close_all(clients: list[ClientConnection]) -> None:
    await asyncio.gather(*(ws.close() for ws in clients), return_exceptions=True)


# --- access ------------------------------------------------------------------------------------


async def test_a_campaign_the_tenant_does_not_have_is_a_not_found_error(
    api: Api, db: Database
) -> None:
    from tests.graphql_api.flows import build_estate

    account, other = await sign_up(api), await sign_up(api, "Other")
    theirs = await build_estate(api, db, other, "theirs")
    ws = await open_client(api, account.token, account.tenant)
    for n, campaign_id in enumerate([theirs.campaign["id"], encode_id("Campaign", uuid.uuid4())]):
        await subscribe(ws, PROGRESS, {"id": campaign_id}, id=str(n))
        answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert answer["payload"]["errors"][0]["extensions"]["code"] == "NOT_FOUND", answer
        assert answer["payload"]["data"] is None
        ended = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert ended == {"id": str(n), "type": "complete"}
    await ws.close()


async def test_a_subscriber_never_receives_another_tenants_changes(api: Api, db: Database) -> None:
    account, other = await sign_up(api), await sign_up(api, "Other")
    mine, theirs = await subscribed(api, account), await subscribed(api, other)
    assert (await next_data(mine, "queueStatus"))["queued"] == 0
    assert (await next_data(theirs, "queueStatus"))["queued"] == 0
    await enqueue_and_publish(api, db, tenant_of(other))
    assert (await next_data(theirs, "queueStatus"))["queued"] == 1
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(mine.recv(), 1.5)
    await close_all([mine, theirs])


async def test_later_pushes_go_under_each_operations_id_with_its_own_selection(
    api: Api, db: Database
) -> None:
    """After the first push (Strawberry's), each change is sent by the live hub's own path:
    every operation still gets its id, its document's fields, and nothing once completed."""
    account = await sign_up(api)
    short, long = "subscription { queueStatus { queued } }", QUEUE_STATUS
    ws = await open_client(api, account.token, account.tenant)
    other = await open_client(api, account.token, account.tenant)
    await subscribe(ws, short, id="a")
    await subscribe(ws, long, id="b")
    await subscribe(other, short, id="x")

    async def pushes(client: ClientConnection, n: int) -> dict[str, dict]:
        got = [json.loads(await asyncio.wait_for(client.recv(), 10)) for _ in range(n)]
        assert all(m["type"] == "next" and set(m) == {"id", "type", "payload"} for m in got), got
        return {m["id"]: m["payload"]["data"]["queueStatus"] for m in got}

    assert await pushes(ws, 2) == {"a": {"queued": 0}, "b": {"queued": 0, "running": 0}}
    assert await pushes(other, 1) == {"x": {"queued": 0}}
    for queued in (1, 2):
        await enqueue_and_publish(api, db, tenant_of(account))
        assert await pushes(ws, 2) == {
            "a": {"queued": queued},
            "b": {"queued": queued, "running": 0},
        }
        assert await pushes(other, 1) == {"x": {"queued": queued}}
    await ws.send(json.dumps({"id": "a", "type": "complete"}))
    await asyncio.sleep(0.3)
    await enqueue_and_publish(api, db, tenant_of(account))
    assert await pushes(ws, 1) == {"b": {"queued": 3, "running": 0}}
    assert await pushes(other, 1) == {"x": {"queued": 3}}
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), 1.0)
    await close_all([ws, other])


async def test_a_connection_holds_at_most_the_configured_number_of_subscriptions(
    settings: Settings,
) -> None:
    async with api_with(settings, live_max_subscriptions_per_connection=2) as api:
        account = await sign_up(api)
        ws = await open_client(api, account.token, account.tenant)
        for n in range(2):
            await subscribe(ws, QUEUE_STATUS, id=str(n))
            await next_data(ws, "queueStatus")
        await subscribe(ws, QUEUE_STATUS, id="refused")
        refused = json.loads(await asyncio.wait_for(ws.recv(), 10))
        await ws.close()
    assert refused["type"] == "error" and refused["id"] == "refused"
    assert "limit" in refused["payload"][0]["message"]


async def test_a_tenant_past_its_connection_cap_is_refused_with_4429(settings: Settings) -> None:
    async with api_with(settings, live_max_connections_per_tenant=2) as api:
        account = await sign_up(api)
        held = [await open_client(api, account.token, account.tenant) for _ in range(2)]
        with pytest.raises(ConnectionClosed) as closed:
            await open_client(api, account.token, account.tenant)
        assert closed.value.rcvd.code == hub_module.TOO_MANY_CONNECTIONS
        assert api.app.state.live.clients == 2
        await held.pop().close()
        await asyncio.sleep(0.2)  # the server sees it go
        held.append(await open_client(api, account.token, account.tenant))  # room again
        await close_all(held)


# --- one subscription, shared reads --------------------------------------------------------------


async def test_three_hundred_clients_are_served_by_one_redis_subscription(
    settings: Settings, db: Database
) -> None:
    async with api_with(settings) as api:
        accounts = [await sign_up(api, f"Fan {n}") for n in range(3)]
        clients = [
            await subscribed(api, account) for account in accounts for _ in range(100)
        ]  # 100 each: the default cap per tenant
        firsts = await asyncio.gather(*(next_data(ws, "queueStatus") for ws in clients))
        assert all(first["queued"] == 0 for first in firsts)
        for account in accounts:
            await enqueue_and_publish(api, db, tenant_of(account))
        pushed = await asyncio.gather(*(next_data(ws, "queueStatus") for ws in clients))
        hub = api.app.state.live
        held = await clients_named(settings.redis_url, hub.client_name)
        assert hub.clients == 300
        await close_all(clients)
    assert all(status["queued"] == 1 for status in pushed)
    assert held == 1


async def test_fifty_subscribers_of_a_tenant_cost_one_read_per_change(
    settings: Settings, db: Database
) -> None:
    async with api_with(settings) as api:
        account = await sign_up(api)
        clients = [await subscribed(api, account) for _ in range(50)]
        await asyncio.gather(*(next_data(ws, "queueStatus") for ws in clients))
        with counted_statements(api.app.state.live.db, "") as statements:
            await enqueue_and_publish(api, db, tenant_of(account))
            await asyncio.gather(*(next_data(ws, "queueStatus") for ws in clients))
        await close_all(clients)
    # One statement, once for the fifty: it binds the tenant itself, outside a transaction.
    assert len(statements) == 1 and "queue.tenant_queue_status(" in statements[0], statements


@contextmanager
def counted_statements(db: Database, mentioning: str) -> Iterator[list[str]]:
    """The statements the API process sends to PostgreSQL that mention `mentioning`."""
    seen: list[str] = []
    engine = db.engine().sync_engine

    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        if mentioning in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


# --- slow clients, Redis outages -----------------------------------------------------------------


async def test_a_slow_client_is_dropped_while_the_others_keep_receiving(
    settings: Settings,
) -> None:
    async with api_with(settings, live_client_queue=8) as api:
        account = await sign_up(api)
        tenant, hub = tenant_of(account), api.app.state.live
        fast = [await subscribed(api, account, EVENTS) for _ in range(3)]
        slow = await open_client(api, account.token, account.tenant, **not_reading(api))
        await subscribe(slow, EVENTS)
        await asyncio.sleep(0.3)  # the subscriptions are registered with the hub
        received = [0] * len(fast)

        async def read(n: int, ws: ClientConnection) -> None:
            while True:
                await next_data(ws, "deliverabilityEvents")
                received[n] += 1

        readers = [asyncio.create_task(read(n, ws)) for n, ws in enumerate(fast)]
        published = 0

        async def publish() -> None:
            nonlocal published
            noise = secrets.token_urlsafe(24_000)  # 32 KB that compression does not shrink
            event = deliverability_events.Event(
                tenant, "alert", "SendingIp", uuid.uuid4(), noise, datetime.now(UTC)
            )
            await deliverability_events.publish(api.app.state.redis, [event])
            published += 1
            await asyncio.sleep(0.002)

        while hub.dropped == 0:  # until the slow client's socket and queue are full
            assert published < 3000, "the slow client was never dropped"
            await publish()
        for _ in range(20):  # and the others still receive
            await publish()
        await wait_until(lambda: received == [published] * len(fast))
        for reader in readers:
            reader.cancel()
        with pytest.raises(ConnectionClosed) as closed:
            while True:  # it reads at last: what was sent, then the close
                await asyncio.wait_for(slow.recv(), 10)
        metrics = (await api.http.get(f"{api.url}/metrics")).text
        connected = hub.clients
        await close_all(fast)
    assert hub.dropped == 1
    assert closed.value.rcvd.code == hub_module.TOO_SLOW
    assert "penguinmails_websocket_dropped_total 1.0\n" in metrics
    assert connected >= len(fast) and f"penguinmails_websocket_clients {connected:.1f}\n" in metrics


def not_reading(api: Api) -> dict:
    """Options for a client that reads nothing until told: its library takes one frame, and its
    socket a few kilobytes, then TCP holds the server back."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", int(api.url.rsplit(":", 1)[1])))
    sock.setblocking(False)
    return {"max_queue": 1, "sock": sock}


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


class RedisServer:
    """A redis-server of the test's own on a free loopback port, to kill and start again."""

    def __init__(self, directory: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.directory, self.proc = directory, None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(embedded.redis_server_binary()), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.mark.slow
async def test_after_redis_restarts_live_clients_get_fresh_state_and_changes_again(
    settings: Settings, db: Database, own_redis: RedisServer
) -> None:
    async with api_with(settings, redis_url=own_redis.url) as api:
        account = await sign_up(api)
        tenant = tenant_of(account)
        clients = [await subscribed(api, account) for _ in range(3)]
        await asyncio.gather(*(next_data(ws, "queueStatus") for ws in clients))
        hub = api.app.state.live
        own_redis.stop()
        await wait_until(lambda: not hub.subscribed.is_set())
        async with db.tenant_session(tenant) as s:  # a change nobody can publish
            await enqueue(s, "noop", {}, tenant_id=tenant, priority=10)
        own_redis.start()
        fresh = await asyncio.gather(*(next_data(ws, "queueStatus", 30) for ws in clients))
        assert all(status["queued"] == 1 for status in fresh)  # read again once subscribed
        await enqueue_and_publish(api, db, tenant)
        changed = await asyncio.gather(*(next_data(ws, "queueStatus") for ws in clients))
        assert await clients_named(own_redis.url, hub.client_name) == 1
        await close_all(clients)
    assert all(status["queued"] == 2 for status in changed)


@pytest.mark.slow
async def test_a_change_published_on_a_connection_redis_dropped_still_goes_out(
    own_redis: RedisServer,
) -> None:
    """After a Redis restart the publisher's pooled connection is dead; the change is sent on a
    new one, not lost (it was, under load, in the restart test above)."""
    publisher = aioredis.Redis.from_url(own_redis.url)
    await publisher.ping()  # a connection in the pool
    own_redis.stop()
    own_redis.start()
    listener = aioredis.Redis.from_url(own_redis.url)
    pubsub = listener.pubsub()
    tenant = uuid.uuid4()
    await pubsub.psubscribe("live:*")
    try:
        await live.publish(publisher, [live.Change(tenant)])
        message = None
        deadline = time.monotonic() + 5
        while message is None or message["type"] != "pmessage":
            assert time.monotonic() < deadline, "the change was not published"
            message = await pubsub.get_message(timeout=1)
        assert message["channel"].decode().endswith(str(tenant))
    finally:
        await pubsub.aclose()
        await listener.aclose()
        await publisher.aclose()


async def wait_until(predicate, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


# --- the publishers --------------------------------------------------------------------------------


@pytest.fixture
def sink():
    with running_sink() as sink_and_port:
        yield sink_and_port


async def test_send_outcomes_reach_the_campaigns_progress_subscriber(
    api: Api,
    db: Database,
    settings: Settings,
    sink,
    start_worker,  # noqa: F811 (the fixture imported above)
    run_queuer,  # noqa: F811
) -> None:
    _, port = sink
    leads = 5
    tenant, campaign_id, _ = await sending_campaign(
        db, settings, lead_count=leads, steps=1, accounts_n=1
    )
    async with db.tenant_session(tenant) as s:
        _, key = await auth.create_api_key(s, tenant, None, "live")
    ws = await open_client(api, key, None)
    await subscribe(ws, PROGRESS, {"id": encode_id("Campaign", campaign_id)})
    assert (await next_data(ws, "campaignProgress"))["sent"] == 0
    start_worker(processes=1, threads=2, smtp_relay_port=port, **UNLIMITED_RATES)
    run_queuer()
    sent = 0
    while sent < leads:  # well within the hub's 30 s safety refresh: pushed by the events
        sent = (await next_data(ws, "campaignProgress", 20))["sent"]
    await ws.close()


# --- one execution per cohort ------------------------------------------------------------------

resolved: list[str] = []  # the `scaled` fields the gauge schema resolved
readings: asyncio.Queue = asyncio.Queue()  # the gauge subscription's readings, one per subscriber


@strawberry.type
class Gauge:
    level: int

    @strawberry.field
    def scaled(self, by: int) -> int:
        resolved.append(f"scaled({by})")
        return self.level * by


@strawberry.type
class GaugeSubscription:
    @strawberry.subscription
    async def gauge(self) -> AsyncIterator[Gauge]:
        yield (await readings.get()).view(gauge_of)


def gauge_of(reading: hub_module.Reading) -> Gauge:
    return Gauge(level=reading.value)


@strawberry.type
class GaugeQuery:
    ok: bool = True


async def test_a_shared_reading_is_executed_once_per_document_and_variables() -> None:
    """Subscribers of one topic get the reading's one view; a document with the same variables
    is executed on it once, whatever the number of subscribers, and its result sent to each."""
    schema = strawberry.Schema(
        GaugeQuery,
        subscription=GaugeSubscription,
        execution_context_class=hub_module.CohortExecutor,
    )
    query = "subscription($by: Int!) { gauge { level scaled(by: $by) } }"
    streams = [await schema.subscribe(query, variable_values={"by": by}) for by in (2, 2, 2, 3)]
    pending = [asyncio.ensure_future(anext(s)) for s in streams]
    await asyncio.sleep(0.1)  # each is waiting for the reading
    reading = hub_module.Reading(21, datetime.now(UTC))
    for _ in streams:
        readings.put_nowait(reading)
    results = await asyncio.gather(*pending)
    assert [r.data for r in results] == [{"gauge": {"level": 21, "scaled": 42}}] * 3 + [
        {"gauge": {"level": 21, "scaled": 63}}
    ]
    assert sorted(resolved) == ["scaled(2)", "scaled(3)"]  # once per cohort, not per subscriber
    for stream in streams:
        await stream.aclose()
