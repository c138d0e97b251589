"""Benchmark: a whole campaign send against raw aiosmtplib into the same local SMTP sink.

(a) raw: CONNECTIONS concurrent aiosmtplib connections (one process, uvloop when importable),
    each sending a prebuilt ~4 KB message in a loop, MESSAGES in all; the clock runs from the
    first send to the sink's count reaching MESSAGES.
(b) platform: a 20,000-lead single-step campaign on a scratch database (tenant on the "scale"
    plan, a DKIM-keyed domain, 4 accounts, window all days 0–24 UTC, spacing 0, limits high),
    `penguinmails worker --processes 2` and `penguinmails queuer` started beforehand and
    relaying to the sink; the clock runs from the launch's COMMIT until the sink has accepted
    every message (bounded wait: TIMEOUT_SECONDS, then the partial rate is reported). The SENT
    rows in content.email_messages are counted afterwards.

The sink (scripts/bench_send_sink.py) is a separate process: a minimal asyncio SMTP server
on uvloop that only counts accepted messages (its `XCOUNT` verb reports the count), so it is not
the limit. CONNECTIONS defaults to the platform's own concurrency: 2 worker processes × the
SMTP pool size (settings.smtp_pool_size, 16).

Runs on a scratch database created on the server DATABASE_URL names and a Redis namespace of
its own; every process it starts is stopped, the database dropped and the Redis keys deleted:

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/0 \
        uv run python scripts/bench_send.py [--messages 20000] [--connections 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from email.message import EmailMessage as MimeMessage
from pathlib import Path

import aiosmtplib
import redis
from sqlalchemy import func, insert, select, update

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
from models.billing import Plan
from models.content import EmailMessage, MessageStatus
from models.sessions import Database
from models.tenancy import Tenant
from penguinmails import migrations
from penguinmails.settings import PROJECT_ROOT, Settings
from services import accounts, campaigns, domains, leads
from services.demo import seed_plans

PROCESSES = 2
ACCOUNTS = 4
TIMEOUT_SECONDS = 600
HIGH_RATE = "10000000"
LOGS = Path(tempfile.mkdtemp(prefix="pm_bench_send_"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=PROCESSES * Settings().smtp_pool_size)
    parser.add_argument("--threads", type=int, default=None, help="worker threads per process")
    parser.add_argument("--skip-raw", action="store_true")
    parser.add_argument("--skip-platform", action="store_true")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy record the worker and queuer during (b) (into the log dir)",
    )
    args = parser.parse_args()

    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    run_with_servers(lambda settings: bench(settings, args), run)


async def bench(settings: Settings, args: argparse.Namespace) -> None:
    port = free_port()
    sink = start([sys.executable, str(PROJECT_ROOT / "scripts" / "bench_send_sink.py"),
                  "--port", str(port)], dict(os.environ), LOGS / "sink.log")  # fmt: skip
    print(f"{args.messages:,} messages, {args.connections} connections, sink on 127.0.0.1:{port}; "
          f"logs in {LOGS}", flush=True)  # fmt: skip
    try:
        counter = await SinkCounter.open(port)
        raw = platform = None
        if not args.skip_raw:
            raw = await raw_run(counter, port, args.messages, args.connections)
            print(f"  (a) raw: {raw[0]:,} in {raw[1]:.2f} s", flush=True)
        if not args.skip_platform:
            platform = await platform_run(settings, counter, port, args)
        print()
        if raw:
            print(f"(a) raw aiosmtplib, {args.connections} connections: "
                  f"{raw[0] / raw[1]:>8,.0f} messages/s ({raw[0]:,} in {raw[1]:.2f} s)")  # fmt: skip
        if platform:
            accepted, seconds, sent_rows = platform
            print(f"(b) platform, launch to last accept: {accepted / seconds:>8,.0f} messages/s "
                  f"({accepted:,} in {seconds:.2f} s; {sent_rows:,} SENT rows)")  # fmt: skip
        if raw and platform:
            print(f"ratio (b)/(a): {(platform[0] / platform[1]) / (raw[0] / raw[1]):.2f}")
        await counter.close()
    finally:
        stop(sink)


class SinkCounter:
    """One control connection to the sink: XCOUNT / XRESET."""

    @classmethod
    async def open(cls, port: int) -> SinkCounter:
        self = cls()
        deadline = time.monotonic() + 20
        while True:
            try:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        await self.reader.readline()  # 220
        return self

    async def _ask(self, verb: bytes) -> int:
        self.writer.write(verb + b"\r\n")
        line = await self.reader.readline()
        return int(line.split()[1])

    async def count(self) -> int:
        return await self._ask(b"XCOUNT")

    async def reset(self) -> None:
        await self._ask(b"XRESET")

    async def close(self) -> None:
        self.writer.close()


def sample_message() -> bytes:
    msg = MimeMessage()
    msg["From"] = "Rep <rep@bench.example>"
    msg["To"] = "lead@inbox.example"
    msg["Subject"] = "Hi there"
    msg["Message-ID"] = "<bench@bench.example>"
    body = ("Hello, this is a benchmark message about nothing in particular. " * 30)[:1800]
    msg.set_content(body)
    msg.add_alternative(f"<html><body><p>{body}</p></body></html>", subtype="html")
    return msg.as_bytes()


async def raw_run(counter: SinkCounter, port: int, messages: int, connections: int):
    raw = sample_message()
    await counter.reset()
    clients = []
    for _ in range(connections):
        c = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await c.connect()
        await c.ehlo()
        clients.append(c)
    per = [messages // connections + (i < messages % connections) for i in range(connections)]

    async def loop(c: aiosmtplib.SMTP, n: int) -> None:
        for _ in range(n):
            await c.sendmail("bounce@bench.example", ["lead@inbox.example"], raw)

    began = time.perf_counter()
    await asyncio.gather(*(loop(c, n) for c, n in zip(clients, per, strict=True)))
    while await counter.count() < messages:  # noqa: ASYNC110 (polls the sink process)
        await asyncio.sleep(0.01)
    seconds = time.perf_counter() - began
    for c in clients:
        await c.quit()
    print(f"  raw message size {len(raw):,} bytes", flush=True)
    return messages, seconds


async def platform_run(settings: Settings, counter: SinkCounter, port: int, args):
    server_url = settings.require_database_url()
    run_id = uuid.uuid4().hex[:12]
    name = namespace = f"pm_bench_send_{run_id}"
    client = redis.Redis.from_url(settings.redis_url)
    await admin(server_url, f'CREATE DATABASE "{name}"')
    procs: list[subprocess.Popen] = []
    profilers: list[subprocess.Popen] = []
    db = None
    try:
        scratch = settings.model_copy(update={
            "database_url": with_database(server_url, name), "redis_namespace": namespace,
            "smtp_relay_host": "127.0.0.1", "smtp_relay_port": port,
            "account_sends_per_minute": int(HIGH_RATE), "ip_sends_per_minute": int(HIGH_RATE),
        })  # fmt: skip
        await asyncio.to_thread(migrations.upgrade, scratch)
        db = Database(scratch)
        began = time.perf_counter()
        tenant, campaign_id = await setup_campaign(db, scratch, args.messages)
        print(f"  set-up (tenant, domain, {ACCOUNTS} accounts, campaign, {args.messages:,} leads): "
              f"{time.perf_counter() - began:.2f} s", flush=True)  # fmt: skip

        env = platform_env(
            scratch.database_url, settings.redis_url, namespace, smtp_relay_host="127.0.0.1",
            smtp_relay_port=port, account_sends_per_minute=HIGH_RATE, ip_sends_per_minute=HIGH_RATE,
        )  # fmt: skip
        wargs = [sys.executable, "-m", "penguinmails", "worker", "--processes", str(PROCESSES)]
        if args.threads:
            wargs += ["--threads", str(args.threads)]
        log = LOGS / "worker.log"
        procs.append(start(wargs, env, log))
        wait_for_workers(procs[0], log, PROCESSES)
        procs.append(start([sys.executable, "-m", "penguinmails", "queuer"], env,
                           LOGS / "queuer.log"))  # fmt: skip
        await asyncio.sleep(2)  # the queuer connects and LISTENs
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"worker or queuer exited; see {LOGS}")
        await counter.reset()
        if args.profile:
            profilers = start_profilers(procs)

        async with db.tenant_session(tenant) as s:
            await campaigns.launch(s, campaign_id)
            began_wall = time.perf_counter()
        # the block committed just above: the clock runs from (just before) COMMIT
        accepted, last_change, last = 0, began_wall, 0
        while True:
            accepted = await counter.count()
            now = time.perf_counter()
            if accepted != last:
                last, last_change = accepted, now
            if accepted >= args.messages:
                break
            if now - began_wall > TIMEOUT_SECONDS:
                print(f"  TIMEOUT after {TIMEOUT_SECONDS} s: {accepted:,} accepted", flush=True)
                break
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"worker or queuer exited; see {LOGS}")
            await asyncio.sleep(0.05)
        seconds = last_change - began_wall
        await asyncio.sleep(1)  # the last SENT rows commit after the 250
        async with db.tenant_session(tenant) as s:
            sent_rows = await s.scalar(
                select(func.count()).select_from(EmailMessage)
                .where(EmailMessage.status == MessageStatus.SENT)
            )  # fmt: skip
        extra = await counter.count()
        if extra > args.messages:
            print(f"  WARNING: the sink accepted {extra:,} > {args.messages:,}", flush=True)
        return accepted, seconds, sent_rows
    finally:
        for p in profilers:
            p.send_signal(signal.SIGINT)
        for p in profilers:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        for proc in procs:
            stop(proc)
        if db is not None:
            await db.dispose()
        await admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        keys = list(client.scan_iter(f"{namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


async def setup_campaign(db: Database, settings: Settings, lead_count: int):
    async with db.system_session() as s:
        await seed_plans(s)
        tenant = uuid.uuid4()
        await s.execute(insert(Tenant).values(id=tenant, name="Bench", slug=f"t-{tenant.hex[:12]}"))
        plan = await s.scalar(select(Plan.id).where(Plan.code == "scale"))
        await s.execute(update(Tenant).where(Tenant.id == tenant).values(plan_id=plan))
    async with db.tenant_session(tenant) as s:
        domain = await domains.add_domain(s, settings, tenant, f"send-{tenant.hex[:8]}.example")
        senders = [
            await accounts.create_email_account(
                s, settings, tenant, domain.id, f"rep{n}", f"Rep {n}", None
            )
            for n in range(ACCOUNTS)
        ]
        spec = campaigns.CampaignSpec(
            name="bench",
            account_ids=[a.id for a in senders],
            steps=[
                campaigns.StepSpec(
                    delay_days=0,
                    subject="Hi {{ first_name }}",
                    html=(
                        "<p>Hello {{ first_name }} at {{ company }},</p>"
                        + "<p>"
                        + "A benchmark paragraph about nothing in particular. " * 25
                        + "</p><p><a href='https://example.com/x'>link</a></p>"
                    ),
                    text="Hello {{ first_name }} at {{ company }}. "
                    + "A benchmark paragraph about nothing in particular. " * 25,
                )
            ],
            window=campaigns.WindowSpec(
                timezone="UTC", days=[1, 2, 3, 4, 5, 6, 7], start_hour=0, end_hour=24
            ),
        )
        campaign = await campaigns.create_campaign(s, tenant, spec)
        campaign.send_spacing_seconds = 0
        for a in senders:
            a.daily_limit = 1_000_000
        csv = "email,first_name,company\n" + "".join(
            f"lead{n}@inbox.example,L{n},Co{n}\n" for n in range(lead_count)
        )
        await leads.import_leads(s, settings, campaign.id, csv)
    return tenant, campaign.id


def start_profilers(procs: list[subprocess.Popen]) -> list[subprocess.Popen]:
    """py-spy record each worker child and the queuer (the worker's main process only forks)."""
    pids = []
    out = subprocess.run(["pgrep", "-P", str(procs[0].pid)], capture_output=True, text=True)
    pids += [int(p) for p in out.stdout.split()]
    pids.append(procs[1].pid)
    profs = []
    for pid in pids:
        profs.append(subprocess.Popen(
            ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--rate", "100",
             "-o", str(LOGS / f"profile-{pid}.txt")],
            stdout=(LOGS / f"py-spy-{pid}.log").open("w"), stderr=subprocess.STDOUT,
        ))  # fmt: skip
    time.sleep(1)
    return profs


if __name__ == "__main__":
    sys.exit(main())
