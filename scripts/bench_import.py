"""Benchmark: the lead import against the fastest bulk path PostgreSQL has.

(a) baseline: 100,000 already-parsed leads COPYed into app.leads by the system role (binary COPY
    via asyncpg; RLS refuses COPY to the application role), at its best configuration: one
    stream, or one stream per core each COPYing its share in its own transaction, whichever
    is faster here;
(b) import_leads in a tenant session: parse, validate, dedupe, suppress and insert a CSV of the
    same 100,000 leads plus ~1% invalid and ~1% duplicate rows.

Each run gets a fresh campaign and an empty leads table; medians of RUNS runs are reported. Runs on
a scratch database created on the server DATABASE_URL names (the embedded one when unset) and
dropped at the end:

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres uv run python scripts/bench_import.py
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import time
import uuid

import asyncpg
from sqlalchemy import insert, text

from bench_common import admin, run_with_servers, with_database
from models.campaigns import Campaign, Suppression, SuppressionReason
from models.sessions import Database
from models.tenancy import Tenant
from penguinmails import migrations
from penguinmails.settings import Settings
from services.leads import import_leads

LEADS = 100_000
RUNS = 5
COLUMNS = ("tenant_id", "campaign_id", "email", "first_name", "last_name", "company", "fields")
FIRST_NAMES = ["Ada", "Grace", "Linus", "Margaret", "Alan", "Barbara", "Dennis", "Frances"]
LAST_NAMES = ["Lovelace", "Hopper", "Torvalds", "Hamilton", "Turing", "Liskov", "Ritchie"]


def main() -> None:
    run_with_servers(bench)


async def bench(settings: Settings) -> None:
    server_url = settings.require_database_url()
    name = f"pm_bench_{uuid.uuid4().hex[:12]}"
    await admin(server_url, f'CREATE DATABASE "{name}"')
    try:
        scratch = settings.model_copy(update={"database_url": with_database(server_url, name)})
        await asyncio.to_thread(migrations.upgrade, scratch)
        await run(scratch)
    finally:
        await admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def run(settings: Settings) -> None:
    db = Database(settings)
    try:
        tenant = await create_tenant(db)
        leads = generate_leads(LEADS)
        csv_text = to_csv(leads)
        rows = csv_text.count("\n") - 1
        print(f"{LEADS:,} leads; a CSV of {rows:,} rows, {len(csv_text):,} bytes")

        streams = sorted({1, os.cpu_count() or 1})
        copy_times: dict[int, list[float]] = {n: [] for n in streams}
        import_times: list[float] = []
        for _ in range(RUNS):
            for n in streams:
                copy_times[n].append(await copy_baseline(db, settings, tenant, leads, n))
            import_times.append(await full_import(db, settings, tenant, csv_text))
    finally:
        await db.dispose()

    copy_medians = {n: statistics.median(times) for n, times in copy_times.items()}
    for n, seconds in copy_medians.items():
        print(f"  COPY, {n} stream(s): {LEADS / seconds:,.0f} rows/s ({seconds:.2f} s)")
    best = min(copy_medians, key=copy_medians.__getitem__)
    copy_s, import_s = copy_medians[best], statistics.median(import_times)
    print(
        f"(a) COPY, system role, {best} stream(s): {LEADS / copy_s:>9,.0f} rows/s  ({copy_s:.2f} s)"
    )
    print(
        f"(b) import_leads, tenant role:      {LEADS / import_s:>9,.0f} rows/s  ({import_s:.2f} s)"
    )
    print(
        f"ratio (b)/(a): {copy_s / import_s:.2f} of the throughput "
        f"({import_s / copy_s:.2f}x the time)"
    )


async def create_tenant(db: Database) -> uuid.UUID:
    """A tenant with a suppression list (none of it in the file: every run inserts LEADS)."""
    tenant_id = uuid.uuid4()
    async with db.system_session() as s:
        await s.execute(insert(Tenant).values(id=tenant_id, name="Bench", slug="bench"))
        await s.execute(
            insert(Suppression),
            [
                {"tenant_id": tenant_id, "email": f"gone{i}@example.net",
                 "reason": SuppressionReason.UNSUBSCRIBE}
                for i in range(5_000)
            ],
        )  # fmt: skip
    return tenant_id


async def fresh_campaign(db: Database, tenant_id: uuid.UUID) -> uuid.UUID:
    """A new campaign, the leads of earlier runs gone and their writes checkpointed, so every
    run starts from the same table."""
    async with db.owner_session() as s:
        await s.execute(text("TRUNCATE app.leads"))
    async with db.owner_session() as s:
        await s.execute(text("CHECKPOINT"))
    async with db.system_session() as s:
        return await s.scalar(
            insert(Campaign).values(tenant_id=tenant_id, name="bench").returning(Campaign.id)
        )


def generate_leads(n: int) -> list[tuple[str, str, str, str, dict[str, str]]]:
    rng = random.Random(42)
    return [
        (
            f"{rng.choice(FIRST_NAMES).lower()}.{i}@company{rng.randrange(5_000)}.com",
            rng.choice(FIRST_NAMES),
            rng.choice(LAST_NAMES),
            f"Company {rng.randrange(5_000)} Ltd",
            {
                "Phone": f"+1 555 {rng.randrange(10_000):04d}",
                "City": rng.choice(["Berlin", "Lyon"]),
            },
        )
        for i in range(n)
    ]


def to_csv(leads: list[tuple[str, str, str, str, dict[str, str]]]) -> str:
    """The leads as a spreadsheet would export them, with ~1% invalid and ~1% duplicate rows
    added (so the import still inserts every lead)."""
    rng = random.Random(7)
    lines = ["Email,First Name,Last Name,Company,Phone,City"]
    for i, (email, first, last, company, fields) in enumerate(leads):
        lines.append(f"{email},{first},{last},{company},{fields['Phone']},{fields['City']}")
        if i % 100 == 17:
            lines.append(f"broken.{i}@@example.com,{first},{last},{company},,")
        if i % 100 == 59:
            lines.append(f"{leads[rng.randrange(i + 1)][0].upper()},{first},{last},,,")
    return "\r\n".join(lines) + "\r\n"


async def copy_baseline(
    db: Database, settings: Settings, tenant_id: uuid.UUID, leads: list, streams: int
) -> float:
    campaign_id = await fresh_campaign(db, tenant_id)
    records = [
        (tenant_id, campaign_id, email, first, last, company, json.dumps(fields))
        for email, first, last, company, fields in leads
    ]
    dsn = settings.role_url("oltp", "system").set(drivername="postgresql")
    conns = [
        await asyncpg.connect(dsn.render_as_string(hide_password=False)) for _ in range(streams)
    ]

    async def copy(conn: asyncpg.Connection, share: list[tuple]) -> None:
        async with conn.transaction():
            await conn.copy_records_to_table(
                "leads", schema_name="app", columns=COLUMNS, records=share
            )

    try:
        started = time.perf_counter()
        await asyncio.gather(*(copy(c, records[i::streams]) for i, c in enumerate(conns)))
        return time.perf_counter() - started
    finally:
        for conn in conns:
            await conn.close()


async def full_import(
    db: Database, settings: Settings, tenant_id: uuid.UUID, csv_text: str
) -> float:
    campaign_id = await fresh_campaign(db, tenant_id)
    started = time.perf_counter()
    async with db.tenant_session(tenant_id) as s:
        report = await import_leads(s, settings, campaign_id, csv_text)
    elapsed = time.perf_counter() - started
    assert report.imported == LEADS, report
    print(
        f"  import: {report.imported:,} imported, {report.duplicates:,} duplicates, "
        f"{report.suppressed:,} suppressed, {len(report.invalid):,} invalid"
    )
    return elapsed


if __name__ == "__main__":
    main()
