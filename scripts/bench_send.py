"""Benchmark: a whole campaign send against raw aiosmtplib and against the bare send pipeline
(render, MIME, DKIM, SMTP), all into the same local SMTP sink.

(a) raw: CONNECTIONS concurrent aiosmtplib connections (one process, uvloop when importable),
    each sending a prebuilt ~4 KB message in a loop, MESSAGES in all; the clock runs from the
    first send to the sink's count reaching MESSAGES.
(b) platform: a 20,000-lead single-step campaign on a scratch database (tenant on the "scale"
    plan, a DKIM-keyed domain, 4 accounts, window all days 0–24 UTC, spacing 0, limits high),
    `penguinmails worker --processes 2` and `penguinmails queuer` started beforehand and
    relaying to the sink; the clock runs from the launch's COMMIT until the sink has accepted
    every message (bounded wait: TIMEOUT_SECONDS, then the partial rate is reported). The SENT
    rows in content.email_messages are counted afterwards.
(c) bare pipeline: what (b)'s send job does per message, and nothing else: PROCESSES spawned
    processes (as many as (b)'s worker processes, so both use the same cores), each with its
    share of the CONNECTIONS and of the leads and its own event loop (uvloop when importable),
    one plain loop per connection: render the campaign's templates for a distinct lead
    (services.templates), build the message with its tracked links, open pixel, List-Unsubscribe
    and VERP return path (services.mime, services.tracking), DKIM-sign it with a fresh RSA-2048
    key (services.dkim_signing), sendmail. No queue, database, Redis or rate limits. The clock
    runs from the start signal, given once every connection is open, to the sink's count
    reaching MESSAGES. (b)/(c) is the share of the machine's sending capacity the platform gets.

The sink (scripts/bench_send_sink.py) is a separate process: a minimal asyncio SMTP server
on uvloop that only counts accepted messages (its `XCOUNT` verb reports the count), so it is not
the limit. CONNECTIONS defaults to the platform's own concurrency: 2 worker processes × the
SMTP pool size (settings.smtp_pool_size, 16).

Slow-sink mode (`--sink-delay-ms D`): the sink answers each end of DATA D ms late, as a distant
or busy server does, and every path is then bounded by CONNECTIONS / D (one message per
connection at a time). The extra "slow sink" line compares each measured rate with that bound:
whether the platform keeps all its connections busy when the server, not the CPU, is the limit.
It is a bound, not a target: each message also costs its sender's own time, which one event
loop spends on its connections one after another, so even (a) stays below it (about 0.85 with
32 connections and 50 ms).

Runs on a scratch database created on the server DATABASE_URL names and a Redis namespace of
its own; every process it starts is stopped, the database dropped and the Redis keys deleted:

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/0 \
        uv run python scripts/bench_send.py [--messages 20000] [--connections 32] \
            [--skip-raw] [--skip-bare] [--skip-platform] [--sink-delay-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from email.message import EmailMessage as MimeMessage
from multiprocessing import synchronize
from pathlib import Path

import aiosmtplib
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
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
from models.infrastructure import Domain
from models.sessions import Database
from models.tenancy import Tenant
from penguinmails import migrations
from penguinmails.settings import PROJECT_ROOT, Settings
from services import (
    accounts,
    campaigns,
    dkim_signing,
    domains,
    leads,
    mime,
    plan_catalogue,
    templates,
    tracking,
)
from services.secrets import encrypt as encrypt_secret

PROCESSES = 2
ACCOUNTS = 4
TIMEOUT_SECONDS = 600
HIGH_RATE = 10_000_000
# Every level of the nested send limits (services/send_limits.py) on, with its cap set high.
HIGH_RATES = {
    "tenant_sends_per_minute": HIGH_RATE, "domain_sends_per_minute": HIGH_RATE,
    "ip_sends_per_minute": HIGH_RATE, "account_sends_per_minute": HIGH_RATE,
    "provider_sends_per_minute": {p: HIGH_RATE for p in ("gmail", "outlook", "yahoo", "other")},
}  # fmt: skip
# Made in main(), not on import: the (c) processes are spawned, so each imports this module.
LOGS: Path

# The campaign's one step, in (b) and in (c).
SUBJECT = "Hi {{ first_name }}"
HTML = (
    "<p>Hello {{ first_name }} at {{ company }},</p>"
    + "<p>"
    + "A benchmark paragraph about nothing in particular. " * 25
    + "</p><p><a href='https://example.com/x'>link</a></p>"
)
TEXT = (
    "Hello {{ first_name }} at {{ company }}. "
    + "A benchmark paragraph about nothing in particular. " * 25
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=PROCESSES * Settings().smtp_pool_size)
    parser.add_argument("--threads", type=int, default=None, help="worker threads per process")
    parser.add_argument("--skip-raw", action="store_true")
    parser.add_argument("--skip-platform", action="store_true")
    parser.add_argument("--skip-bare", action="store_true")
    parser.add_argument(
        "--sink-delay-ms",
        type=float,
        default=0.0,
        help="the sink answers each DATA this much later (slow-sink mode)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy record the worker and queuer during (b) (into the log dir)",
    )
    args = parser.parse_args()

    global LOGS
    LOGS = Path(tempfile.mkdtemp(prefix="pm_bench_send_"))
    run_with_servers(lambda settings: bench(settings, args), loop_runner())


def loop_runner() -> Callable[[Coroutine], object]:
    """uvloop.run when uvloop is importable, as the workers run; else asyncio.run."""
    try:
        import uvloop

        return uvloop.run
    except ImportError:
        return asyncio.run


async def bench(settings: Settings, args: argparse.Namespace) -> None:
    port = free_port()
    sink = start([sys.executable, str(PROJECT_ROOT / "scripts" / "bench_send_sink.py"),
                  "--port", str(port), "--delay-ms", str(args.sink_delay_ms)],
                 dict(os.environ), LOGS / "sink.log")  # fmt: skip
    print(f"{args.messages:,} messages, {args.connections} connections, sink on 127.0.0.1:{port}; "
          f"logs in {LOGS}", flush=True)  # fmt: skip
    try:
        counter = await SinkCounter.open(port)
        raw = platform = bare = None
        if not args.skip_raw:
            raw = await raw_run(counter, port, args.messages, args.connections)
            print(f"  (a) raw: {raw[0]:,} in {raw[1]:.2f} s", flush=True)
        if not args.skip_bare:
            bare = await bare_run(settings, counter, port, args.messages, args.connections)
            print(f"  (c) bare: {bare[0]:,} in {bare[1]:.2f} s", flush=True)
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
        if bare:
            print(f"(c) bare pipeline (render, MIME, DKIM, SMTP), {bare_layout(args.connections)}: "
                  f"{bare[0] / bare[1]:>8,.0f} messages/s ({bare[0]:,} in {bare[1]:.2f} s)")  # fmt: skip
        if args.sink_delay_ms:
            print(slow_sink_line(args, {"(a)": raw, "(c)": bare, "(b)": platform}))
        if bare and platform:
            print(f"ratio (b)/(c): {(platform[0] / platform[1]) / (bare[0] / bare[1]):.2f}")
        if raw and platform:
            print(f"ratio (b)/(a): {(platform[0] / platform[1]) / (raw[0] / raw[1]):.2f}")
        await counter.close()
    finally:
        stop(sink)


def shares(total: int, parts: int) -> list[int]:
    """`total` split into `parts` near-equal whole shares, the larger first."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def bare_layout(connections: int) -> str:
    """How (c) spreads the connections: "2 processes × 16 connections"."""
    per = shares(connections, min(PROCESSES, connections))
    each = str(per[0]) if len(set(per)) == 1 else "+".join(map(str, per))
    return f"{len(per)} processes × {each} connections"


def slow_sink_line(args: argparse.Namespace, results: dict[str, tuple | None]) -> str:
    """Each measured rate against the slow sink's bound: every connection carries one message
    per `--sink-delay-ms`, so no sender can beat connections / delay."""
    expected = args.connections / (args.sink_delay_ms / 1000)
    line = (
        f"slow sink: expected {args.connections}/{args.sink_delay_ms:g} ms = "
        f"{expected:,.0f} messages/s"
    )
    for label, result in results.items():
        if result:
            rate = result[0] / result[1]
            line += f", {label} = {rate:,.0f} messages/s, {label}/expected = {rate / expected:.2f}"
    return line


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
    per = shares(messages, connections)

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
            "smtp_relay_host": "127.0.0.1", "smtp_relay_port": port, **HIGH_RATES,
        })  # fmt: skip
        await asyncio.to_thread(migrations.upgrade, scratch)
        db = Database(scratch)
        began = time.perf_counter()
        tenant, campaign_id = await setup_campaign(db, scratch, args.messages)
        print(f"  set-up (tenant, domain, {ACCOUNTS} accounts, campaign, {args.messages:,} leads): "
              f"{time.perf_counter() - began:.2f} s", flush=True)  # fmt: skip

        env = platform_env(
            scratch.database_url, settings.redis_url, namespace, smtp_relay_host="127.0.0.1",
            smtp_relay_port=port,
            **{k: json.dumps(v) if isinstance(v, dict) else v for k, v in HIGH_RATES.items()},
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
        await plan_catalogue.apply(s, plan_catalogue.load(settings.plan_catalogue))
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
                    subject=SUBJECT,
                    html=HTML,
                    text=TEXT,
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


# --- (c): the bare pipeline --------------------------------------------------------------------


async def bare_run(
    settings: Settings, counter: SinkCounter, port: int, messages: int, connections: int
) -> tuple[int, float]:
    """(c): spawned processes (as many as (b)'s workers) sharing the connections and the leads;
    timed from the start signal, given once all have connected, to the sink's last accept."""
    key = dkim_key()
    processes = min(PROCESSES, connections)
    # spawn, not fork: this process runs an event loop, which a forked child would inherit.
    context = multiprocessing.get_context("spawn")
    connected = context.Barrier(processes + 1)
    go = context.Event()
    children, first = [], 0
    for n, (count, conns) in enumerate(
        zip(shares(messages, processes), shares(connections, processes), strict=True)
    ):
        leads = range(first, first + count)
        first += count
        children.append(context.Process(
            target=in_event_loop,
            args=(bare_send, settings, key, port, leads, conns, connected, go),
            name=f"bench-bare-{n}", daemon=True,
        ))  # fmt: skip
    for child in children:
        child.start()
    try:
        await asyncio.to_thread(connected.wait, 120)  # raises if a process failed to connect
        await counter.reset()
        began = time.perf_counter()
        go.set()
        while (accepted := await counter.count()) < messages:
            if any(child.exitcode not in (None, 0) for child in children):
                raise RuntimeError("a (c) process failed; its traceback is above")
            if time.perf_counter() - began > TIMEOUT_SECONDS:
                print(f"  TIMEOUT after {TIMEOUT_SECONDS} s: {accepted:,} accepted", flush=True)
                break
            await asyncio.sleep(0.01)
        seconds = time.perf_counter() - began
        for child in children:
            await asyncio.to_thread(child.join, 30)
    finally:
        for child in children:
            if child.is_alive():
                child.terminate()
                child.join()
    size = len(BarePipeline(settings, key).message(0)[2])
    print(f"  (c) signed message size {size:,} bytes", flush=True)
    return accepted, seconds


def dkim_key() -> bytes:
    """A new RSA-2048 DKIM key, PKCS#1 PEM, as services.domains.add_domain makes a domain's."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=domains.DKIM_KEY_BITS)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def in_event_loop(coroutine_function: Callable[..., Coroutine], *args: object) -> None:
    """Runs `coroutine_function(*args)` on a loop of its own: the target of a (c) process."""
    loop_runner()(coroutine_function(*args))


async def bare_send(
    settings: Settings,
    key: bytes,
    port: int,
    leads: range,
    connections: int,
    connected: synchronize.Barrier,
    go: synchronize.Event,
) -> None:
    """Opens the connections, waits for the start signal, then sends lead after lead on each
    connection, every message rendered, built and signed just before its own transaction."""
    pipeline = BarePipeline(settings, key)
    clients = []
    for _ in range(connections):
        # As the platform's pool opens them (services/smtp.py); the sink offers no STARTTLS.
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30, start_tls=False)
        await client.connect()
        await client.ehlo()
        clients.append(client)
    await asyncio.to_thread(connected.wait, 120)
    if not await asyncio.to_thread(go.wait, 120):
        raise RuntimeError("no start signal")

    async def send_all(client: aiosmtplib.SMTP, share: range) -> None:
        for n in share:
            sender, recipient, data = pipeline.message(n)
            errors, _ = await client.sendmail(sender, [recipient], data)
            if errors:
                raise RuntimeError(f"the sink refused {recipient}: {errors}")

    per, first = [], leads.start
    for count in shares(len(leads), connections):
        per.append(range(first, first + count))
        first += count
    await asyncio.gather(*map(send_all, clients, per))
    for client in clients:
        await client.quit()


class BarePipeline:
    """Lead n's message as (b)'s send job makes it (services/sending.py::_build), from the same
    templates and the same kinds of lead, account and domain, without the rows around it."""

    def __init__(self, settings: Settings, key: bytes) -> None:
        self.settings = settings
        # Unsaved, but stored as add_domain stores one: the key encrypted, so signer_for (called
        # per message, as the job does) decrypts and parses it once, then finds it cached.
        key_id, encrypted = encrypt_secret(settings, key)
        self.domain = Domain(
            id=uuid.uuid4(),
            name=f"send-{uuid.uuid4().hex[:8]}.example",
            dkim_selector=settings.dkim_selector,
            dkim_algorithm="rsa",
            dkim_private_key_encrypted=encrypted,
            encryption_key_id=key_id,
        )

    def message(self, n: int) -> tuple[str, str, bytes]:
        """(VERP return path, recipient, DKIM-signed bytes) of lead n, sent from account
        n % ACCOUNTS (the round robin of campaign planning)."""
        settings, domain = self.settings, self.domain
        sender, sender_name = f"rep{n % ACCOUNTS}@{domain.name}", f"Rep {n % ACCOUNTS}"
        email = f"lead{n}@inbox.example"
        message_id = uuid.uuid4()  # the email_messages row's id, which the tracking URLs carry
        verp_token = secrets.token_hex(16)
        bounce_host = f"{settings.return_path_label}.{domain.name}"
        unsubscribe = tracking.unsubscribe_url(settings, message_id)
        rendered = templates.render(
            SUBJECT,
            HTML,
            TEXT,
            {
                "email": email,
                "first_name": f"L{n}",
                "last_name": None,
                "company": f"Co{n}",
                "fields": {},
                "sender_name": sender_name,
                "sender_email": sender,
                "unsubscribe_url": unsubscribe,
            },
        )
        return_path = f"bounce+{verp_token}@{bounce_host}"
        data = mime.build(
            mime.OutgoingMessage(
                from_address=sender,
                from_name=sender_name,
                to_address=email,
                subject=rendered.subject,
                html=rendered.html,
                text=rendered.text,
                message_id=f"<{uuid.uuid4().hex}@{domain.name}>",
                return_path=return_path,
                list_unsubscribe_url=unsubscribe,
                list_unsubscribe_mailto=f"mailto:unsubscribe+{verp_token}@{bounce_host}",
                open_url=tracking.open_url(settings, message_id),
                click_url=lambda url: tracking.click_url(settings, message_id, url),
            )
        )
        signer = dkim_signing.signer_for(settings, domain)
        return return_path, email, signer.sign(data)


if __name__ == "__main__":
    sys.exit(main())
