"""Benchmark: the durable queue against plain Dramatiq on the same Redis and the same workers.

(a) baseline: Dramatiq over Redis with a no-op actor (scripts/bench_queue_raw.py), 2 worker
    processes at its best configuration: each (threads, prefetch) of RAW_CONFIGS is run and the
    fastest kept. The messages are written to Redis before the workers start and made visible
    at once (one RENAME of the staged list), so enqueueing is not measured; the clock stops when
    the last message is acked (the broker's message hash is empty).
(b) durable: JOBS "noop" jobs bulk-enqueued with jobs.queue.enqueue_many (timed, reported
    separately) in one transaction left open while the queuers (`penguinmails queuer`) and
    `penguinmails worker` (same processes and threads as the best baseline) start; the clock
    starts at COMMIT (whose NOTIFY wakes the queuers) and stops at the last job's finished_at,
    once all are `succeeded` (polled every 0.5 s with a count on the pending rows).

Runs on a scratch database created on the server DATABASE_URL names and a Redis namespace of
its own (the embedded servers when DATABASE_URL / REDIS_URL are unset); every process it starts
is stopped, the database dropped and the Redis keys deleted:

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/0 \
        uv run python scripts/bench_queue.py [--jobs 100000] [--queuers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import redis
from dramatiq import Message

from bench_common import (
    admin,
    platform_env,
    run_with_servers,
    start,
    stop,
    wait_for_workers,
    with_database,
)
from jobs.queue import enqueue_many
from models.sessions import Database
from penguinmails import migrations
from penguinmails.settings import PROJECT_ROOT, Settings

PROCESSES = 2
# (threads per process, dramatiq_queue_prefetch), all tried for the baseline.
RAW_CONFIGS = [(8, 0), (8, 100), (8, 500), (4, 100), (16, 100), (16, 500)]
ENQUEUE_CHUNK = 10_000
TIMEOUT_SECONDS = 300
LOGS = Path(tempfile.mkdtemp(prefix="pm_bench_queue_"))


@dataclass
class Result:
    label: str
    seconds: float
    jobs: int

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--queuers", type=int, default=1)
    parser.add_argument(
        "--raw", default=None, help="only these baseline configs, e.g. '8:100,16:500'"
    )
    parser.add_argument("--threads", type=int, default=None, help="durable threads (default: best)")
    parser.add_argument("--skip-raw", action="store_true", help="durable only (tuning)")
    parser.add_argument("--skip-durable", action="store_true", help="baseline only (tuning)")
    args = parser.parse_args()

    run_with_servers(lambda settings: bench(settings, args))


async def bench(settings: Settings, args: argparse.Namespace) -> None:
    server_url = settings.require_database_url()
    run_id = uuid.uuid4().hex[:12]
    name, namespace = f"pm_bench_{run_id}", f"pm_bench_{run_id}"
    client = redis.Redis.from_url(settings.redis_url)
    await admin(server_url, f'CREATE DATABASE "{name}"')
    try:
        scratch = settings.model_copy(
            update={"database_url": with_database(server_url, name), "redis_namespace": namespace}
        )
        await asyncio.to_thread(migrations.upgrade, scratch)
        env = platform_env(scratch.database_url, settings.redis_url, namespace)
        print(f"{args.jobs:,} jobs, {PROCESSES} worker processes; logs in {LOGS}", flush=True)

        raws: list[tuple[tuple[int, int], Result]] = []
        if not args.skip_raw:
            configs = RAW_CONFIGS
            if args.raw:
                configs = [tuple(int(x) for x in c.split(":")) for c in args.raw.split(",")]
            for threads, prefetch in configs:
                result = raw_run(client, env, namespace, args.jobs, threads, prefetch)
                raws.append(((threads, prefetch), result))
                print(f"  raw {result.label}: {result.rate:,.0f} jobs/s ({result.seconds:.2f} s)",
                      flush=True)  # fmt: skip
        best = max(raws, key=lambda r: r[1].rate) if raws else None
        threads = args.threads or (best[0][0] if best else scratch.worker_threads)

        if args.skip_durable:
            return
        durable, enqueue_s = await durable_run(scratch, env, args.jobs, threads, args.queuers)
        print(f"  enqueue_many: {args.jobs:,} jobs in {enqueue_s:.2f} s "
              f"({args.jobs / enqueue_s:,.0f} jobs/s, chunks of {ENQUEUE_CHUNK:,})")  # fmt: skip
        if best:
            print(f"(a) raw Dramatiq, {best[1].label}: {best[1].rate:>8,.0f} jobs/s "
                  f"({best[1].seconds:.2f} s)")  # fmt: skip
        print(f"(b) durable, {durable.label}: {durable.rate:>8,.0f} jobs/s "
              f"({durable.seconds:.2f} s)")  # fmt: skip
        if best:
            print(f"ratio (b)/(a): {durable.rate / best[1].rate:.2f}")
    finally:
        await admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        keys = list(client.scan_iter(f"{namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def raw_run(
    client: redis.Redis, env: dict, namespace: str, jobs: int, threads: int, prefetch: int
) -> Result:
    """Stages `jobs` messages, starts the workers, releases the messages, waits for the acks."""
    queue, msgs, staged = f"{namespace}:bench", f"{namespace}:bench.msgs", f"{namespace}:staged"
    client.delete(queue, msgs, staged)
    pipe = client.pipeline(transaction=False)
    for i in range(jobs):
        message_id = str(uuid.uuid4())
        message = Message(
            queue_name="bench", actor_name="noop", args=(), kwargs={},
            options={"redis_message_id": message_id},
        )  # fmt: skip
        pipe.hset(msgs, message_id, message.encode())
        pipe.rpush(staged, message_id)
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()

    worker_env = {**env, "dramatiq_queue_prefetch": str(prefetch)}
    log = LOGS / f"raw-{threads}-{prefetch}.log"
    proc = start(
        [sys.executable, "-m", "dramatiq", "bench_queue_raw", "--path", str(PROJECT_ROOT / "scripts"),
         "--processes", str(PROCESSES), "--threads", str(threads), "--queues", "bench"],
        worker_env, log,
    )  # fmt: skip
    try:
        wait_for_workers(proc, log, PROCESSES)
        began = time.perf_counter()
        client.rename(staged, queue)
        deadline = began + TIMEOUT_SECONDS
        while client.hlen(msgs):
            if time.perf_counter() > deadline:
                raise TimeoutError(f"raw run unfinished after {TIMEOUT_SECONDS} s; see {log}")
            time.sleep(0.02)
        seconds = time.perf_counter() - began
    finally:
        stop(proc)
    label = f"{PROCESSES} x {threads} threads, prefetch {prefetch or 'default'}"
    return Result(label, seconds, jobs)


async def durable_run(
    settings: Settings, env: dict, jobs: int, threads: int, queuers: int
) -> tuple[Result, float]:
    db = Database(settings)
    procs: list[subprocess.Popen] = []
    try:
        async with db.system_session("queue") as session:
            began = time.perf_counter()
            for start_at in range(0, jobs, ENQUEUE_CHUNK):
                count = min(ENQUEUE_CHUNK, jobs - start_at)
                await enqueue_many(session, "noop", [{}] * count, tenant_id=None)
            enqueue_s = time.perf_counter() - began

            # The jobs stay invisible until COMMIT: start and warm everything up meanwhile.
            log = LOGS / "durable-worker.log"
            procs.append(start(
                [sys.executable, "-m", "penguinmails", "worker", "--processes", str(PROCESSES),
                 "--threads", str(threads)], env, log,
            ))  # fmt: skip
            wait_for_workers(procs[0], log, PROCESSES)
            for i in range(queuers):
                procs.append(start([sys.executable, "-m", "penguinmails", "queuer"], env,
                                   LOGS / f"durable-queuer-{i}.log"))  # fmt: skip
            await wait_for_queuers(settings, procs[1:])
            began_wall = time.time()
        # The session's block committed: the clock runs from just before COMMIT.

        pending = (
            "SELECT count(*) FROM queue.jobs "
            "WHERE status IN ('queued', 'failed', 'dispatched', 'running')"
        )
        conn = await asyncpg.connect(settings.database_url)
        try:
            while await conn.fetchval(pending):
                if time.time() - began_wall > TIMEOUT_SECONDS:
                    raise TimeoutError(f"durable run unfinished after {TIMEOUT_SECONDS} s")
                for proc in procs:
                    if proc.poll() is not None:
                        raise RuntimeError(f"{proc.args} exited; see {LOGS}")
                await asyncio.sleep(0.5)
            row = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE status = 'succeeded') AS succeeded, "
                "extract(epoch FROM max(finished_at))::float8 AS last FROM queue.jobs"
            )
            logs = await conn.fetchval(
                "SELECT count(*) FROM queue.job_logs WHERE status = 'succeeded'"
            )
        finally:
            await conn.close()
        assert row["succeeded"] == jobs == logs, (dict(row), logs)
    finally:
        for proc in procs:
            stop(proc)
        await db.dispose()
    s = settings
    label = (
        f"{PROCESSES} x {threads} threads, prefetch {s.worker_prefetch}, {queuers} queuer(s), "
        f"claim {s.queue_claim_batch}, {s.queue_jobs_per_message} jobs/message"
    )
    return Result(label, row["last"] - began_wall, jobs), enqueue_s


async def wait_for_queuers(settings: Settings, procs: list[subprocess.Popen]) -> None:
    """Until each queuer has made its first (empty) claim and sleeps, LISTENing."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        deadline = time.monotonic() + 60
        while True:
            ready = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND usename = $1 AND query LIKE '%SET status = ''dispatched''%'",
                settings.system_db_role,
            )
            if ready >= len(procs):
                return
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"queuers did not start; see {LOGS}")
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(main())
