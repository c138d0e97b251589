"""Benchmark: the analytics pipelines on 10,000,000 generated events (scripts/gen_events.py),
10,000 tenants in eight time zones, in one run:

(a) baseline: the daily rollup as one SQL INSERT … SELECT … GROUP BY inside PostgreSQL, with the
    same definitions (tenant-local days, distinct messages opened per day, machine opens apart),
    at its best configuration: work_mem raised (the best of several sizes) and parallel
    workers allowed;
(b) the Polars full rebuild of the same table (`pipelines.run(…, full=True)`), in a process of
    its own so its peak memory is its own; its table must equal (a)'s row for row;
(c) incremental ticks: ~2,000 events in the newest 30 seconds (100 M e-mails a month) written
    on top of the 10 M, then one run of the pipeline; the median and the worst of TICKS;
(d) p95 over GraphQL (the API as `penguinmails api` serves it) of `dailyStats` over 90 days
    (tenants in turn) and of a page of 100 campaigns with `stats`.

Runs on a scratch database on the server DATABASE_URL names (the embedded one when unset),
dropped at the end; `--keep NAME` keeps (and on the next run reuses) a generated database:

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres uv run python scripts/bench_pipelines.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
from adbc_driver_postgresql import dbapi as adbc_dbapi
from gen_events import generate
from sqlalchemy.engine import make_url

from bench_common import admin, free_port, run_with_servers, start, stop, with_database
from penguinmails import migrations
from penguinmails.settings import PROJECT_ROOT, Settings

EVENTS = 10_000_000
TENANTS = 10_000
BIG_TENANT_CAMPAIGNS = 120
TICKS = 5
TICK_EVENTS, TICK_SECONDS = 2_000, 30
REQUESTS = 200
WORK_MEMS = ("64MB", "256MB")  # 1GB was slower still (87.7 s against 73.1 s at 64MB)

SQL_ROLLUP = """
INSERT INTO analytics.daily_analytics (
    tenant_id, day, campaign_id, sent, delivered, opened, opens_total, clicked, clicks_total,
    machine_opens, machine_clicks, replied, bounced, soft_bounced, complained, unsubscribed,
    first_opened, first_clicked)
WITH e AS (
    SELECT e.tenant_id, e.campaign_id, e.kind, e.machine, e.message_id, e.occurred_at,
           (e.occurred_at AT TIME ZONE t.timezone)::date AS day,
           CASE WHEN e.kind = 'BOUNCE' AND e.details->>'hard' IN ('true', 'false')
                THEN (e.details->>'hard')::boolean END AS hard,
           e.kind = 'BOUNCE' AND e.details->>'refused' = 'true' AS refused
    FROM content.email_events e JOIN app.tenants t ON t.id = e.tenant_id
    WHERE e.message_id IS NOT NULL
      AND e.kind IN ('SENT', 'OPEN', 'CLICK', 'REPLY', 'BOUNCE', 'COMPLAINT', 'UNSUBSCRIBE')
      AND (e.kind <> 'BOUNCE' OR e.details->>'hard' IN ('true', 'false'))
), first_touch AS (
    SELECT DISTINCT ON (tenant_id, message_id) tenant_id, message_id, occurred_at
    FROM e WHERE kind IN ('OPEN', 'CLICK') AND NOT machine
    ORDER BY tenant_id, message_id, occurred_at
), first_click AS (
    SELECT DISTINCT ON (tenant_id, message_id) tenant_id, message_id, occurred_at
    FROM e WHERE kind = 'CLICK' AND NOT machine
    ORDER BY tenant_id, message_id, occurred_at
), f AS (
    SELECT e.*, ft.message_id IS NOT NULL AS first_open, fc.message_id IS NOT NULL AS first_clk
    FROM e
    LEFT JOIN first_touch ft ON e.kind IN ('OPEN', 'CLICK') AND NOT e.machine
         AND ft.tenant_id = e.tenant_id AND ft.message_id = e.message_id
         AND ft.occurred_at = e.occurred_at
    LEFT JOIN first_click fc ON e.kind = 'CLICK' AND NOT e.machine
         AND fc.tenant_id = e.tenant_id AND fc.message_id = e.message_id
         AND fc.occurred_at = e.occurred_at
), g AS (
    SELECT tenant_id, day, campaign_id, GROUPING(campaign_id) AS everything,
        count(*) FILTER (WHERE kind = 'SENT' OR refused) AS sent,
        count(DISTINCT message_id) FILTER (WHERE kind IN ('OPEN', 'CLICK') AND NOT machine) AS opened,
        count(*) FILTER (WHERE kind = 'OPEN' AND NOT machine) AS opens_total,
        count(DISTINCT message_id) FILTER (WHERE kind = 'CLICK' AND NOT machine) AS clicked,
        count(*) FILTER (WHERE kind = 'CLICK' AND NOT machine) AS clicks_total,
        count(*) FILTER (WHERE kind = 'OPEN' AND machine) AS machine_opens,
        count(*) FILTER (WHERE kind = 'CLICK' AND machine) AS machine_clicks,
        count(*) FILTER (WHERE kind = 'REPLY') AS replied,
        count(*) FILTER (WHERE kind = 'BOUNCE' AND hard) AS bounced,
        count(*) FILTER (WHERE kind = 'BOUNCE' AND NOT hard) AS soft_bounced,
        count(*) FILTER (WHERE kind = 'COMPLAINT') AS complained,
        count(*) FILTER (WHERE kind = 'UNSUBSCRIBE') AS unsubscribed,
        count(DISTINCT message_id) FILTER (WHERE first_open) AS first_opened,
        count(DISTINCT message_id) FILTER (WHERE first_clk) AS first_clicked
    FROM f
    GROUP BY GROUPING SETS ((tenant_id, day, campaign_id), (tenant_id, day))
)
SELECT tenant_id, day, CASE WHEN everything = 1 THEN '00000000-0000-0000-0000-000000000000'::uuid ELSE campaign_id END,
       sent, sent - bounced, opened, opens_total, clicked, clicks_total, machine_opens,
       machine_clicks, replied, bounced, soft_bounced, complained, unsubscribed, first_opened,
       first_clicked
FROM g
WHERE everything = 1 OR campaign_id IS NOT NULL
"""
TABLE_DIGEST = """
SELECT count(*) AS n, md5(string_agg(row(tenant_id, day, campaign_id, sent, delivered, opened,
    opens_total, clicked, clicks_total, machine_opens, machine_clicks, replied, bounced,
    soft_bounced, complained, unsubscribed, first_opened, first_clicked)::text, ',' ORDER BY tenant_id, day, campaign_id))
FROM analytics.daily_analytics
"""
POLARS_REBUILD = """
import json, sys, time
import pipelines
from penguinmails.settings import Settings
settings = Settings(database_url=sys.argv[1])
began = time.perf_counter()
result = pipelines.run(settings, "daily_analytics", full=True, wait=True)
# VmHWM: the peak resident size of this process's own memory. Not getrusage's ru_maxrss, which
# an exec keeps from the process it replaced: here the benchmark's, started with its size.
with open("/proc/self/status") as status:
    peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"seconds": time.perf_counter() - began, "read": result.rows_read,
    "written": result.rows_written, "peak_mb": peak_kb / 1024}))
"""
DAILY_STATS = "query($from: Date!, $to: Date!) { dailyStats(from: $from, to: $to) { day sent opened clicked } }"
CAMPAIGN_PAGE = """{ campaigns(first: 100) { edges { node { id name stats {
  sent delivered opened clicked replied bounced openRate clickRate replyRate bounceRate } } } } }"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=EVENTS)
    parser.add_argument("--keep", metavar="NAME", help="keep (and reuse) this database")
    args = parser.parse_args()
    run_with_servers(lambda settings: bench(settings, args.events, args.keep))


async def bench(settings: Settings, events: int, keep: str | None) -> None:
    server_url = settings.require_database_url()
    name = keep or f"pm_bench_{uuid.uuid4().hex[:12]}"
    url = with_database(server_url, name)
    reuse = keep is not None and await _has_events(url)
    if not reuse:
        await admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin(server_url, f'CREATE DATABASE "{name}"')
    try:
        scratch = settings.model_copy(update={"database_url": url})
        if not reuse:
            await asyncio.to_thread(migrations.upgrade, scratch)
            began = time.perf_counter()
            summary = await generate(
                scratch, events, tenants=TENANTS, big_tenant_campaigns=BIG_TENANT_CAMPAIGNS,
                end=datetime.now(UTC) - timedelta(minutes=5),
            )  # fmt: skip
            print(f"generated {summary.events:,} events in {time.perf_counter() - began:.0f} s")
        await run(scratch, url)
    finally:
        if keep is None:
            await admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _has_events(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url)
    except asyncpg.InvalidCatalogNameError:
        return False
    try:
        return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM content.email_events)"))
    finally:
        await conn.close()


async def run(settings: Settings, url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        total = await conn.fetchval("SELECT count(*) FROM content.email_events")
        print(
            f"{total:,} events, {await conn.fetchval('SELECT count(*) FROM app.tenants'):,} tenants"
        )
        await conn.execute("VACUUM ANALYZE content.email_events")
        adbc_s, copy_s = await asyncio.to_thread(_extract_paths, url, total)
        print(f"    extract of every event's columns: ADBC {adbc_s:.2f} s, "
              f"COPY … TO STDOUT (CSV) into Polars {copy_s:.2f} s")  # fmt: skip
        sql_seconds, sql_config, sql_digest = await _sql_rollup(conn)
        print(f"(a) SQL INSERT … SELECT … GROUP BY: {sql_seconds:.2f} s ({sql_config})")
        polars = _polars_rebuild(url)
        polars_digest = await conn.fetchrow(TABLE_DIGEST)
        same = tuple(polars_digest) == sql_digest
        print(
            f"(b) Polars full rebuild: {polars['seconds']:.2f} s, peak memory "
            f"{polars['peak_mb']:.0f} MB, {polars['written']:,} rows; equal to (a): "
            f"{'yes' if same else 'NO'}"
        )
        ticks = await _ticks(settings)
        print(
            f"(c) incremental tick of ~{TICK_EVENTS:,} events: median "
            f"{statistics.median(ticks) * 1000:.0f} ms, worst {max(ticks) * 1000:.0f} ms"
        )
        import pipelines

        began = time.perf_counter()
        await asyncio.to_thread(pipelines.run, settings, "campaign_analytics", full=True)
        print(f"    (campaign_analytics full rebuild for (d): {time.perf_counter() - began:.1f} s)")
        # What autovacuum would have done by then (it is off on the benchmark's server): the
        # rebuilt tables' statistics and visibility map, which (d)'s reads plan and scan by.
        await conn.execute("VACUUM ANALYZE analytics.campaign_analytics")
        await conn.execute("VACUUM ANALYZE analytics.campaign_totals")
        daily_p95, page_p95 = await _dashboards(settings, conn)
        print(f"(d) p95 dailyStats over 90 days: {daily_p95 * 1000:.1f} ms; "
              f"p95 100 campaigns with stats: {page_p95 * 1000:.1f} ms")  # fmt: skip
    finally:
        await conn.close()
    print(
        f"figures: (a) {sql_seconds:.2f} s, (b) {polars['seconds']:.2f} s "
        f"({polars['peak_mb']:.0f} MB), (c) {statistics.median(ticks) * 1000:.0f} ms, "
        f"(d) {daily_p95 * 1000:.1f} / {page_p95 * 1000:.1f} ms"
    )
    print(f"ratio (a)/(b): {sql_seconds / polars['seconds']:.2f}")


async def _sql_rollup(conn: asyncpg.Connection) -> tuple[float, str, tuple]:
    """The best of the SQL statement over several work_mem sizes, and its table's digest."""
    best: tuple[float, str] | None = None
    digest: tuple = ()
    for work_mem in WORK_MEMS:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL work_mem = '{work_mem}'")
            await conn.execute("SET LOCAL max_parallel_workers_per_gather = 2")
            await conn.execute("TRUNCATE analytics.daily_analytics")
            began = time.perf_counter()
            await conn.execute(SQL_ROLLUP)
            seconds = time.perf_counter() - began
            digest = tuple(await conn.fetchrow(TABLE_DIGEST))
        print(f"    SQL rollup, work_mem {work_mem}: {seconds:.2f} s")
        if best is None or seconds < best[0]:
            best = (seconds, f"work_mem {work_mem}, 2 parallel workers allowed")
    await conn.execute("TRUNCATE analytics.daily_analytics")  # (b) starts from an empty table
    assert best is not None
    return best[0], best[1], digest


def _extract_paths(url: str, last_seq: int) -> tuple[float, float]:
    """The pipeline's extract of every event two ways: ADBC into Arrow, and the same SELECT
    through COPY … TO STDOUT (CSV) read by Polars. Seconds each."""
    import io

    import polars as pl

    from models.sqlfiles import statement
    from pipelines.runtime import fetch

    query = statement("pipelines.sql", "email_events")
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    began = time.perf_counter()
    with adbc_dbapi.connect(plain) as conn:
        rows = fetch(conn, query, (0, last_seq)).height
    adbc_seconds = time.perf_counter() - began

    literal = query.replace("$1::bigint", "0").replace("$2::bigint", str(last_seq)).rstrip(";")

    async def copy() -> int:
        conn = await asyncpg.connect(url)
        try:
            buffer = io.BytesIO()
            await conn.copy_from_query(literal, output=buffer, format="csv", header=True)
        finally:
            await conn.close()
        buffer.seek(0)
        return pl.read_csv(buffer).height

    began = time.perf_counter()
    copied = asyncio.run(copy())
    copy_seconds = time.perf_counter() - began
    assert copied == rows, (copied, rows)
    return adbc_seconds, copy_seconds


def _polars_rebuild(url: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", POLARS_REBUILD, url],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=True,
        env={**os.environ, "DATABASE_URL": url},
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


async def _ticks(settings: Settings) -> list[float]:
    import pipelines

    seconds = []
    for _ in range(TICKS):
        await generate(
            settings, TICK_EVENTS, recent_seconds=TICK_SECONDS, reuse_tenants=True,
            seed=int(time.time()),
        )  # fmt: skip
        began = time.perf_counter()
        result = await asyncio.to_thread(pipelines.run, settings, "daily_analytics")
        seconds.append(time.perf_counter() - began)
        print(f"    tick: {result.rows_read:,} events read, {seconds[-1] * 1000:.0f} ms")
    return seconds


async def _dashboards(settings: Settings, conn: asyncpg.Connection) -> tuple[float, float]:
    """p95 of the two dashboard reads, one request at a time, as a member of the tenants."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": settings.database_url or ""}
    log = Path(tempfile.gettempdir()) / f"bench-pipelines-api-{port}.log"
    api = start([sys.executable, "-m", "penguinmails", "api", "--port", str(port)], env, log)
    base = f"http://127.0.0.1:{port}/graphql"
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            await _wait_until_up(http, f"http://127.0.0.1:{port}/health")
            token = await _member_of_tenants(http, base, conn)
            tenants = await conn.fetch("SELECT id FROM app.tenants ORDER BY created_at LIMIT 50")
            big = await conn.fetchval(
                "SELECT tenant_id FROM app.campaigns GROUP BY tenant_id ORDER BY count(*) DESC "
                "LIMIT 1"
            )
            today = date.today()
            window = {"from": (today - timedelta(days=89)).isoformat(), "to": today.isoformat()}
            daily = [
                await _timed(http, base, token, str(tenants[n % len(tenants)]["id"]),
                             DAILY_STATS, window)
                for n in range(REQUESTS)
            ]  # fmt: skip
            page = [
                await _timed(http, base, token, str(big), CAMPAIGN_PAGE, {})
                for _ in range(REQUESTS)
            ]
    finally:
        stop(api)
    return _p95(daily), _p95(page)


async def _wait_until_up(http: httpx.AsyncClient, health: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if (await http.get(health)).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("the API did not start")


async def _member_of_tenants(http: httpx.AsyncClient, base: str, conn: asyncpg.Connection) -> str:
    """Signs a user up and makes them an owner of the generated tenants read in (d)."""
    email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
    body = (
        await http.post(base, json={
            "query": "mutation($e: String!) { signUp(email: $e, password: \"correct horse battery\","
                     " tenantName: \"Bench\") { token user { id } errors { message } } }",
            "variables": {"e": email},
        })
    ).json()  # fmt: skip
    token = body["data"]["signUp"]["token"]
    user = await conn.fetchval("SELECT id FROM app.users WHERE email = $1", email)
    await conn.execute(
        "INSERT INTO app.tenant_users (tenant_id, user_id, role) SELECT t.id, $1, 'OWNER'"
        " FROM app.tenants t WHERE t.id IN (SELECT id FROM app.tenants ORDER BY created_at"
        " LIMIT 50) OR t.id = (SELECT tenant_id FROM app.campaigns GROUP BY tenant_id"
        " ORDER BY count(*) DESC LIMIT 1) ON CONFLICT DO NOTHING",
        user,
    )
    return token


async def _timed(http, base, token, tenant, query, variables) -> float:
    began = time.perf_counter()
    response = await http.post(
        base,
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}", "X-Tenant-ID": tenant},
    )
    seconds = time.perf_counter() - began
    body = response.json()
    if body.get("errors"):
        raise RuntimeError(body["errors"])
    return seconds


def _p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1]


if __name__ == "__main__":
    main()
