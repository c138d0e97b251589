"""Benchmark: live subscriptions, 500 and then 5,000 websocket subscribers on one API process.

A scratch database with TENANTS tenants (an API key and a campaign each). Started beforehand: a
real worker (`penguinmails worker`), a queuer, and one API process (uvicorn, as `penguinmails
api` serves it, plus a counter of the statements it sends to PostgreSQL). For each size, the
subscribers are spread evenly over the tenants, half `queueStatus`, half `campaignProgress` of
the tenant's campaign, one per websocket, in CLIENT_PROCESSES client processes (uvloop). Each
has its first state before the clock starts. Then for `--seconds` the bench enqueues `noop` jobs
of random tenants and their campaigns at `--jobs-per-second` (one job per Dramatiq message, so
each is a batch of its own): the queuer publishes a change when it dispatches them, the worker
when it finishes them — about 200 change events a second in all, counted by an observer.

Printed per size:
- event-to-client latency p50 / p95 / max: for each change event of a subscriber's topic, from
  its publication (the event's `at`) to the arrival of the first push whose state was read after
  it (the push's `at` is when its read began);
- the API process's CPU (share of one core) and RSS;
- statements per second the API sent to PostgreSQL (counted in the API process), and the
  transactions per second of the whole platform on the scratch database (pg_stat_database);
- the Redis connections held by the API's live hub (CLIENT LIST, by the hub's connection name).
Last: `ratio 500/5000 DB statements per second: X` (1.0: the database load does not grow with
the number of subscribers).

Runs against DATABASE_URL and REDIS_URL (or embedded servers), on a database and a Redis
namespace of its own, both removed at the end:

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/0 \
        uv run python scripts/bench_realtime.py [--seconds 60] [--sizes 500,5000]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import random
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import psutil
import redis.asyncio as aioredis
from sqlalchemy import insert, select

from bench_common import (
    admin,
    free_port,
    platform_env,
    run_with_servers,
    start,
    stop,
    wait_for_workers,
    with_database,
)
from graphql_api.ids import encode_id
from models.campaigns import Campaign
from models.sessions import Database
from models.sqlfiles import statement
from models.tenancy import Tenant
from penguinmails import migrations
from penguinmails.settings import PROJECT_ROOT, Settings
from services import auth, live

TENANTS = 100
CLIENT_PROCESSES = 2
CONNECTS_AT_ONCE = 200
RUN_DELAY = 1.0  # seconds from a job's enqueue to its run_at
LOGS = Path(tempfile.gettempdir()) / "bench_realtime"
QUEUE_STATUS = "subscription { queueStatus { queued running at } }"
PROGRESS = "subscription($id: ID!) { campaignProgress(campaignId: $id) { sent queued at } }"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--sizes", default="500,5000")
    parser.add_argument("--jobs-per-second", type=float, default=85.0)
    parser.add_argument("--serve-api", type=int, help=argparse.SUPPRESS)  # internal: the API
    parser.add_argument("--clients", help=argparse.SUPPRESS)  # internal: a client process
    parser.add_argument("--count-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_fd_limit()
    if args.serve_api:
        serve_api(args.serve_api, Path(args.count_file))
    elif args.clients:
        run_clients(Path(args.clients))
    else:
        run_with_servers(lambda settings: bench(settings, args))


def raise_fd_limit() -> None:
    """Every websocket is a descriptor, in the API and in a client process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


# --- the API process --------------------------------------------------------------------------


def serve_api(port: int, count_file: Path) -> None:
    """`penguinmails api`'s app and uvicorn options, plus a count of the statements sent and a
    record of the hub's shared reads (topic, when each began), for the latency."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from graphql_api import live as hub
    from graphql_api.app import create_app, serve
    from penguinmails.settings import get_settings

    sent, reads = [0], []

    @event.listens_for(Engine, "before_cursor_execute")
    def count(*_) -> None:
        sent[0] += 1

    follow = hub.Hub._follow

    def recorded(self, key, read, websocket):
        topic = f"q:{key[1]}" if key[0] == "queue" else f"c:{key[-1]}"

        async def timed():
            began = time.time()
            value = await read()
            reads.append(f"{topic} {began} {time.time() - began}\n")
            return value

        return follow(self, key, timed if read is not None else None, websocket)

    hub.Hub._follow = recorded

    def write_count() -> None:
        written = 0
        with count_file.with_suffix(".reads").open("w") as out:
            while True:
                count_file.write_text(str(sent[0]))
                upto = len(reads)
                out.writelines(reads[written:upto])
                out.flush()
                written = upto
                time.sleep(0.2)

    threading.Thread(target=write_count, daemon=True).start()
    settings = get_settings().model_copy(update={"log_level": "WARNING"})
    serve(create_app(settings), "127.0.0.1", port, settings, backlog=8192)


# --- the client processes ---------------------------------------------------------------------


def run_clients(spec_file: Path) -> None:
    import uvloop

    uvloop.run(clients(json.loads(spec_file.read_text()), spec_file.with_suffix(".out")))


async def clients(spec: dict, out: Path) -> None:
    """Opens every subscription of the spec, says "ready", records each push's read time and
    arrival until SIGTERM, then writes them."""
    from websockets.asyncio.client import connect

    pushes: list[list[tuple[float, float]]] = [[] for _ in spec["subscriptions"]]
    ready, stopping = asyncio.Semaphore(CONNECTS_AT_ONCE), asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    firsts: list[asyncio.Future] = []

    async def follow(n: int, sub: dict, first: asyncio.Future) -> None:
        async with ready:
            ws = await connect(spec["url"], subprotocols=["graphql-transport-ws"],
                               open_timeout=120, ping_interval=None, max_queue=None)  # fmt: skip
            init = {"Authorization": f"Bearer {sub['key']}"}
            await ws.send(json.dumps({"type": "connection_init", "payload": init}))
            await ws.recv()
            payload = {"query": sub["query"], "variables": sub["variables"]}
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
            await ws.recv()
        first.set_result(None)
        async for raw in ws:
            arrived = time.time()
            data = json.loads(raw)["payload"]["data"]
            at = next(iter(data.values()))["at"]
            pushes[n].append((datetime.fromisoformat(at).timestamp(), arrived))

    loop = asyncio.get_running_loop()
    tasks = []
    for n, sub in enumerate(spec["subscriptions"]):
        firsts.append(loop.create_future())
        tasks.append(asyncio.create_task(follow(n, sub, firsts[-1])))
    done = asyncio.ensure_future(asyncio.gather(*firsts))
    await asyncio.wait([done, *tasks], return_when=asyncio.FIRST_COMPLETED)
    if not done.done():  # a subscription ended before its first push
        raise next(t for t in tasks if t.done()).exception() or RuntimeError("closed early")
    print("ready", flush=True)
    await stopping.wait()
    write_and_exit(out, pushes)


def write_and_exit(out: Path, pushes: list) -> None:
    out.write_text(json.dumps(pushes))
    os._exit(0)  # thousands of sockets: no orderly close needed


def spawn_clients(spec: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, "--clients", str(spec)], cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE, stderr=log.open("w"), text=True,
    )  # fmt: skip


# --- the bench --------------------------------------------------------------------------------


async def bench(settings: Settings, args: argparse.Namespace) -> None:
    LOGS.mkdir(exist_ok=True)
    server_url = settings.require_database_url()
    name = namespace = f"pm_bench_realtime_{uuid.uuid4().hex[:12]}"
    await admin(server_url, f'CREATE DATABASE "{name}"')
    procs: list[subprocess.Popen] = []
    redis = aioredis.Redis.from_url(settings.redis_url)
    scratch = settings.model_copy(
        update={"database_url": with_database(server_url, name), "redis_namespace": namespace}
    )
    try:
        await asyncio.to_thread(migrations.upgrade, scratch)
        tenants = await set_up(scratch)
        env = platform_env(
            scratch.database_url, settings.redis_url, namespace, queue_jobs_per_message=1,
            queue_max_messages_per_tier=1000, queue_poll_seconds=0.2,
            live_max_connections_per_tenant=1000, api_rate_per_ip=0, api_rate_per_token=0,
        )  # fmt: skip
        worker_log = LOGS / "worker.log"
        procs.append(start([sys.executable, "-m", "penguinmails", "worker", "--processes", "1",
                            "--threads", "4"], env, worker_log))  # fmt: skip
        wait_for_workers(procs[-1], worker_log, 1)
        procs.append(start([sys.executable, "-m", "penguinmails", "queuer"], env,
                           LOGS / "queuer.log"))  # fmt: skip
        port, count_file = free_port(), LOGS / "api-statements"
        api = start([sys.executable, __file__, "--serve-api", str(port), "--count-file",
                     str(count_file)], env, LOGS / "api.log")  # fmt: skip
        procs.append(api)
        await wait_for_api(port, api)
        print(f"{TENANTS} tenants; {args.jobs_per_second:g} noop jobs/s for {args.seconds:g} s "
              f"per size; API pid {api.pid}; logs in {LOGS}", flush=True)  # fmt: skip
        per_second = {}
        for size in (int(s) for s in args.sizes.split(",")):
            result = await measure(
                size, tenants, port, api, count_file, scratch, redis, args, namespace
            )
            per_second[size] = result["statements_per_second"]
            report(size, result)
        if len(per_second) >= 2:
            small, large = min(per_second), max(per_second)
            ratio = per_second[small] / per_second[large] if per_second[large] else float("inf")
            print(f"ratio {small}/{large} DB statements per second: {ratio:.2f}", flush=True)
    finally:
        for proc in procs:
            stop(proc)
        await admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        keys = [k async for k in redis.scan_iter(f"{namespace}:*", count=1000)]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


async def set_up(settings: Settings) -> list[dict]:
    """TENANTS tenants, each with an API key and a campaign."""
    db = Database(settings)
    tenants = []
    try:
        async with db.system_session() as s:
            for n in range(TENANTS):
                tenant = uuid.uuid4()
                await s.execute(
                    insert(Tenant).values(id=tenant, name=f"Live {n}", slug=f"t-{tenant.hex[:12]}")
                )
                tenants.append({"id": tenant})
        for t in tenants:
            async with db.tenant_session(t["id"]) as s:
                _, t["key"] = await auth.create_api_key(s, t["id"], None, "bench")
                t["campaign"] = await s.scalar(
                    insert(Campaign).values(tenant_id=t["id"], name="bench").returning(Campaign.id)
                )
            async with db.tenant_session(t["id"]) as s:
                assert await s.scalar(select(Campaign.id).where(Campaign.id == t["campaign"]))
    finally:
        await db.dispose()
    return tenants


async def wait_for_api(port: int, api: subprocess.Popen) -> None:
    async with httpx.AsyncClient() as http:
        deadline = time.monotonic() + 60
        while True:
            try:
                if (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if api.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start; see {LOGS / 'api.log'}")
            await asyncio.sleep(0.2)


def subscriptions(size: int, tenants: list[dict]) -> list[dict]:
    """Spread over the tenants, alternately queueStatus and its campaign's progress."""
    subs = []
    for n in range(size):
        t = tenants[n % len(tenants)]
        if (n // len(tenants)) % 2 == 0:
            subs.append({"key": t["key"], "query": QUEUE_STATUS, "variables": {},
                         "topic": f"q:{t['id']}"})  # fmt: skip
        else:
            subs.append({"key": t["key"], "query": PROGRESS,
                         "variables": {"id": encode_id("Campaign", t["campaign"])},
                         "topic": f"c:{t['campaign']}"})  # fmt: skip
    return subs


async def measure(size, tenants, port, api, count_file, settings, redis, args, namespace) -> dict:
    subs = subscriptions(size, tenants)
    url = f"ws://127.0.0.1:{port}/graphql"
    shares = [subs[n::CLIENT_PROCESSES] for n in range(CLIENT_PROCESSES)]
    specs, clients = [], []
    began = time.monotonic()
    for n, share in enumerate(shares):
        spec = LOGS / f"clients-{size}-{n}.json"
        spec.write_text(json.dumps({"url": url, "subscriptions": share}))
        specs.append(spec)
        clients.append(spawn_clients(spec, LOGS / f"clients-{size}-{n}.log"))
    for client in clients:
        line = await asyncio.to_thread(client.stdout.readline)
        if line.strip() != "ready":
            raise RuntimeError(f"a client process failed; see {LOGS}")
    print(f"  {size:,} subscribers connected in {time.monotonic() - began:.1f} s", flush=True)

    observer = redis.pubsub()
    await observer.psubscribe(live.CHANNEL_PATTERN)
    events: list[tuple[float, str, list[str]]] = []
    watching = asyncio.create_task(observe(observer, events))
    proc, client_procs = psutil.Process(api.pid), [psutil.Process(c.pid) for c in clients]
    cpu0, statements0, xacts0 = cpu_seconds(proc), read_count(count_file), await xacts(settings)
    clients_cpu0 = sum(cpu_seconds(c) for c in client_procs)
    t0 = time.time()
    await load(settings, redis, tenants, args.jobs_per_second, args.seconds)
    t1 = time.time()
    cpu1, statements1, xacts1 = cpu_seconds(proc), read_count(count_file), await xacts(settings)
    clients_cpu = (sum(cpu_seconds(c) for c in client_procs) - clients_cpu0) / (time.time() - t0)
    load_average = os.getloadavg()[0]
    rss = proc.memory_info().rss
    hub_connections = sum(
        1 for c in await redis.client_list() if c["name"].startswith(f"penguinmails-live-{api.pid}-")
    )  # fmt: skip
    await asyncio.sleep(3)  # the last events' pushes arrive
    watching.cancel()
    await observer.aclose()
    for client in clients:
        client.send_signal(signal.SIGTERM)
    for client in clients:
        await asyncio.to_thread(client.wait, 120)
    pushes = [p for spec in specs for p in json.loads(spec.with_suffix(".out").read_text())]
    topics = [s["topic"] for share in shares for s in share]
    reads: dict[str, list[float]] = {}
    read_seconds: list[float] = []
    for line in count_file.with_suffix(".reads").read_text().splitlines():
        topic, at, spent = line.split()
        reads.setdefault(topic, []).append(float(at))
        if t0 <= float(at) <= t1:  # the file holds every read since the API started
            read_seconds.append(float(spent))
    latencies = {
        kind: event_latencies(events, topics, pushes, reads, t0, t1, prefix)
        for kind, prefix in (("queueStatus", "q:"), ("campaignProgress", "c:"))
    }
    await asyncio.sleep(5)  # the API notices the clients went
    wall = t1 - t0
    return {
        "events_per_second": sum(1 for e in events if t0 <= e[0] <= t1) / wall,
        "latencies": latencies,
        "cpu": (cpu1 - cpu0) / wall,
        "clients_cpu": clients_cpu,
        "load": load_average,
        "rss": rss,
        "statements_per_second": (statements1 - statements0) / wall,
        "xacts_per_second": (xacts1 - xacts0) / wall,
        "hub_connections": hub_connections,
        "read_seconds": sorted(read_seconds),
    }


async def observe(observer, events: list) -> None:
    async for message in observer.listen():
        if message["type"] == "pmessage":
            body = json.loads(message["data"])
            tenant = message["channel"].decode().split(":", 1)[1]
            events.append((body["at"], tenant, body["campaignIds"]))


async def load(
    settings: Settings, redis, tenants: list[dict], per_second: float, seconds: float
) -> None:
    """noop jobs of random tenants and their campaigns, due RUN_DELAY later, in ticks of 0.1 s;
    each tick's enqueues published once committed, as the API or the scheduler publishes its
    own (so the jobs' whole life is seen: scheduled, running, gone)."""
    conn = await asyncpg.connect(settings.require_database_url())
    enqueue = statement("queue.sql", "enqueue_many")
    rng = random.Random(18)
    owed, tick, began = 0.0, 0.1, time.monotonic()
    try:
        while (elapsed := time.monotonic() - began) < seconds:
            owed += per_second * tick
            picked = [rng.choice(tenants) for _ in range(int(owed))]
            due = datetime.now(UTC) + timedelta(seconds=RUN_DELAY)
            for t in picked:
                await conn.execute(enqueue, t["id"], "noop", ["{}"], 100, [due], 5,
                                   t["campaign"], [None])  # fmt: skip
            await live.publish(redis, [live.Change(t["id"], t["campaign"]) for t in picked])
            owed -= int(owed)
            await asyncio.sleep(max(0.0, (elapsed // tick + 1) * tick - (time.monotonic() - began)))
    finally:
        await conn.close()


def event_latencies(events, topics, pushes, reads, t0, t1, prefix) -> tuple[list[float], int]:
    """Per subscriber of a `prefix` topic, per event of its topic published in [t0, t1]: the
    first shared read that began after the event; when that read was pushed (its state had
    changed), from the event to the push's arrival; when it was not, the client had that state
    already and the event adds no sample. Also: the events no read followed."""
    by_topic: dict[str, list[float]] = {}
    for at, tenant, campaigns in events:
        if t0 <= at <= t1:
            by_topic.setdefault(f"q:{tenant}", []).append(at)
            for campaign in campaigns:
                by_topic.setdefault(f"c:{campaign}", []).append(at)
    latencies, missed = [], 0
    for topic, seen in zip(topics, pushes, strict=True):
        if not topic.startswith(prefix):
            continue
        pushed_at, began = [p[0] for p in seen], reads.get(topic, [])
        for at in by_topic.get(topic, []):
            i = bisect.bisect_left(began, at)
            if i == len(began):
                missed += 1
                continue
            # The push of that read carries the time taken just before it began.
            j = bisect.bisect_left(pushed_at, began[i] - 0.005)
            if j < len(seen) and pushed_at[j] <= began[i]:
                latencies.append(seen[j][1] - at)
    return latencies, missed


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def read_count(path: Path) -> int:
    return int(path.read_text() or 0)


async def xacts(settings: Settings) -> int:
    conn = await asyncpg.connect(settings.require_database_url())
    try:
        return await conn.fetchval(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        )
    finally:
        await conn.close()


def report(size: int, r: dict) -> None:
    every = sorted(x for lat, _ in r["latencies"].values() for x in lat)
    kinds = "; ".join(
        f"{kind} {percentiles(sorted(lat))} ({len(lat):,}, {missed} without a push)"
        for kind, (lat, missed) in r["latencies"].items()
    )
    print(
        f"{size:>6,} subscribers: {r['events_per_second']:.0f} events/s; event-to-client "
        f"{percentiles(every)} [{kinds}]; API CPU {r['cpu'] * 100:.0f} % "
        f"of a core, RSS {r['rss'] / 2**20:.0f} MiB; API DB statements "
        f"{r['statements_per_second']:.1f}/s (platform {r['xacts_per_second']:.0f} xact/s); "
        f"Redis subscriptions held by the API: {r['hub_connections']}; shared reads "
        f"{len(r['read_seconds']):,} ({percentiles(r['read_seconds'])} each); the bench's "
        f"clients {r['clients_cpu'] * 100:.0f} % of a core; load average {r['load']:.1f}",
        flush=True,
    )


def percentiles(lat: list[float]) -> str:
    if not lat:
        return "no pushes"
    p50, p95 = statistics.median(lat), lat[int(0.95 * (len(lat) - 1))]
    return f"p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms"


if __name__ == "__main__":
    main()
