"""Realistic e-mail events for the analytics pipelines' tests and benchmarks.

`generate()` writes tenants (each in a time zone) with running campaigns to the OLTP tier, and
sent messages with what followed each send (proxy prefetches, human opens, clicks, link scans,
replies, bounces, complaints, unsubscribes) to the content tier: drawn with Polars, COPYed as
CSV by the system role (by the owner for a bulk load, below), events in time order so `seq`
grows with `occurred_at`, then ANALYZEd. The counts, times and kinds follow the seed (for a given
`end`); the ids are fresh each run, so runs add up in one database. With `recent_seconds`, every
event falls in the last seconds before `end`: sends of new messages, and what follows earlier
sends, on messages already there (`reuse_tenants`) or sent in the same window.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/pm .venv/bin/python scripts/gen_events.py \
        10000000 [--tenants 10000] [--days 90] [--seed 1] [--recent-seconds 30 --reuse-tenants]

Measured on this machine (2 cores shared with other work; PostgreSQL 15 at its defaults, a fresh
database): 10,000,000 events with their 4,762,534 messages, 10,000 tenants and 30,000 campaigns
in 228 s: 14 s to draw, 212 s to COPY both tables at once and build their indexes after, 1 s to
ANALYZE; at most 3.5 GB of memory (an earlier run, with the load average near 4, took 276 s).
A 30-second batch of 2,000 events on top of them: 8 s. A load of BULK_ROWS rows or more into a
smaller table drops the table's indexes and keys and adds them again after, in the same
transaction: COPYing a million events into the indexed table took 128 s, into the bare one 27 s
plus 8 s to build them.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import json
import logging
import math
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate
from zoneinfo import ZoneInfo

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from models.content import EventKind
from models.sessions import Database, driver_connection
from penguinmails.settings import Settings, get_settings

# --- what the data looks like -----------------------------------------------------------------

# Tenants' zones and their weights; the first tenants take one each, so a small run has them all.
TIME_ZONES = {
    "UTC": 15, "America/New_York": 18, "Europe/London": 14, "America/Los_Angeles": 11,
    "Asia/Kolkata": 6, "Asia/Tokyo": 5, "Australia/Sydney": 6, "Pacific/Auckland": 4,
    "Europe/Berlin": 9, "America/Sao_Paulo": 4, "Asia/Singapore": 4,
    "America/St_Johns": 2, "Asia/Kathmandu": 2,
}  # fmt: skip
# Where recipients are; the rest (CORPORATE) are company domains, behind link scanners.
RECIPIENT_DOMAINS = {
    "gmail.com": 30, "googlemail.com": 2, "outlook.com": 10, "hotmail.com": 7, "live.com": 3,
    "msn.com": 1, "yahoo.com": 8, "aol.com": 2, "icloud.com": 4, "proton.me": 2, "gmx.de": 2,
    "web.de": 1, "comcast.net": 1,
}  # fmt: skip
CORPORATE = 27
CORPORATE_DOMAINS = 5_000  # corp<n>.example
FIRST_NAMES = (
    "Ada", "Grace", "Linus", "Margaret", "Alan", "Barbara", "Dennis", "Frances", "Ken", "Radia",
    "Donald", "Edsger", "Katherine", "John", "Sophie", "Tim", "Hedy", "Claude", "Anita", "Niklaus",
)  # fmt: skip
LAST_NAMES = (
    "Lovelace", "Hopper", "Torvalds", "Hamilton", "Turing", "Liskov", "Ritchie", "Allen",
    "Thompson", "Perlman", "Knuth", "Dijkstra", "Johnson", "Backus", "Wilson", "Lamarr",
)  # fmt: skip
MAILBOXES = ("sales", "hello", "team")  # a tenant's accounts; a tenant without any sends by relay
STEP_WEIGHTS = (55, 28, 17)
CLICK_URLS = (
    "https://example.com/pricing", "https://example.com/demo", "https://example.com/case-study",
    "https://example.com/blog/deliverability", "https://calendly.example/meet/30min",
)  # fmt: skip

# The funnel: what share of messages does what, and how long after (median seconds, spread of
# the log-normal). Engagement scales with the campaign's quality (log-normal around 1).
HARD_BOUNCE, SOFT_BOUNCE = 0.018, 0.015
HARD_LAG, SOFT_LAG = (90, 1.5), (2_400, 1.2)
PREFETCH, PREFETCH_AGAIN, PREFETCH_LAG = 0.15, 0.25, (4, 1.0)  # image proxies
HUMAN_OPEN, REOPEN_MEAN = 0.38, 0.8  # opened at least once; further opens, on average
OPEN_LAG, REOPEN_LAG = (9_000, 1.6), (28_800, 1.6)
CLICKED, RECLICK_MEAN, CLICK_LAG, RECLICK_LAG = 0.13, 0.4, (40, 1.2), (180, 2.0)  # of openers
SCAN_CORPORATE, SCAN_OTHER, SCAN_AGAIN, SCAN_LAG = 0.10, 0.015, 0.4, (15, 1.0)  # link scanners
REPLY_OPENED, REPLY_UNOPENED, REPLY_LAG = 0.075, 0.012, (1_500, 1.4)
UNSUBSCRIBE_OPENED, UNSUBSCRIBE_UNOPENED, UNSUBSCRIBE_LAG = 0.02, 0.002, (180, 1.3)
COMPLAINED, COMPLAINT_LAG = 0.0012, (14_400, 1.5)
EVENTS_PER_MESSAGE = 2.0  # about what the funnel gives: a first guess of the messages needed


def _agents(agents: Sequence[str]) -> list[str]:
    return [json.dumps({"user_agent": a}) for a in agents]


# `details` by code: the code ranges below index this list.
HUMAN_AGENTS = _agents((
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Mobile Safari/537.36",
))  # fmt: skip
PROXY_AGENTS = _agents((
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
    "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro; ms-office)",
))  # fmt: skip
SCANNER_AGENTS = _agents((
    "Mozilla/5.0 (compatible; Barracuda Sentinel)",
    "Proofpoint URL Defense",
    "Mimecast URL Protect/1.0",
    "Microsoft SafeLinks",
))  # fmt: skip
HARD_DETAILS = [
    json.dumps({"hard": True, "status": "5.1.1", "diagnostic": "550 5.1.1 user unknown"}),
    json.dumps({"hard": True, "status": "5.2.1", "diagnostic": "550 5.2.1 mailbox disabled"}),
]
SOFT_DETAILS = [
    json.dumps({"hard": False, "status": "4.2.2", "diagnostic": "452 4.2.2 mailbox full"}),
    json.dumps({"hard": False, "status": "4.4.7", "diagnostic": "delivery time expired"}),
]
DETAILS = [
    "{}", *HUMAN_AGENTS, *PROXY_AGENTS, *SCANNER_AGENTS, *HARD_DETAILS, *SOFT_DETAILS,
    json.dumps({"feedback_type": "abuse"}),
    "",  # REPLY: {"from": <the recipient>}, filled in when written
]  # fmt: skip
HUMAN = 1
PROXY = HUMAN + len(HUMAN_AGENTS)
SCANNER = PROXY + len(PROXY_AGENTS)
HARD = SCANNER + len(SCANNER_AGENTS)
SOFT = HARD + len(HARD_DETAILS)
ABUSE = SOFT + len(SOFT_DETAILS)
REPLIED = ABUSE + 1
KINDS = [k.value for k in EventKind]
SENT, OPEN, CLICK, REPLY, BOUNCE, COMPLAINT, UNSUBSCRIBE = (
    KINDS.index(k) for k in ("SENT", "OPEN", "CLICK", "REPLY", "BOUNCE", "COMPLAINT", "UNSUBSCRIBE")
)

EVENT_COLUMNS = (
    "tenant_id", "kind", "message_id", "campaign_id", "lead_id", "account_id", "step_position",
    "machine", "url", "details", "occurred_at",
)  # fmt: skip
MESSAGE_COLUMNS = (
    "id", "tenant_id", "campaign_id", "lead_id", "account_id", "step_position", "idempotency_key",
    "message_id_header", "verp_token", "from_address", "to_address", "subject", "status",
    "smtp_response", "sent_at", "created_at", "updated_at",
)  # fmt: skip
BULK_ROWS = 500_000  # a load this large, into a smaller table, builds the indexes after
CHUNK_ROWS = 500_000  # rows per CSV chunk: the next one is built while this one is sent
NEIGHBOURS = 200  # an event on an earlier message picks among this many sent just before
US = 1_000_000  # microseconds per second: times are int64 microseconds since the epoch

log = logging.getLogger("gen_events")


@dataclass(frozen=True)
class Summary:
    tenants: int  # created (0 with reuse_tenants)
    campaigns: int  # created
    messages: int
    events: int
    kinds: dict[str, int]
    machine: int  # events flagged machine (proxy prefetches, link scans)
    seconds: float
    tenant_ids: list[uuid.UUID]  # created, in order: the first has big_tenant_campaigns


async def generate(
    settings: Settings,
    events: int,
    *,
    tenants: int = 10_000,
    days: int = 90,
    campaigns_per_tenant: int = 3,
    big_tenant_campaigns: int = 0,
    seed: int = 1,
    end: datetime | None = None,
    recent_seconds: float | None = None,
    reuse_tenants: bool = False,
) -> Summary:
    """About `events` events (a few fewer at most), spread over `days` days before `end` (now),
    or over its last `recent_seconds`; see the module docstring."""
    _check(events, tenants, days, campaigns_per_tenant, big_tenant_campaigns, recent_seconds)
    started = time.perf_counter()
    end = (end or datetime.now(UTC)).astimezone(UTC)
    end_us = _micros(end)
    draws = Draws(seed)
    db = Database(settings)
    try:
        if reuse_tenants:
            async with db.system_session("oltp") as session:
                world = await load_world(await _raw(session), draws)
        else:
            first = end - timedelta(days=days)
            world = new_world(draws, tenants, campaigns_per_tenant, big_tenant_campaigns, first)
        if recent_seconds is None:
            plan = history(draws, world, events, end_us - days * 86_400 * US, end_us)
        else:
            lo = end_us - round(recent_seconds * US)
            pool = (
                await existing_messages(db, world, events, end_us, seed) if reuse_tenants else None
            )
            plan = recent(draws, world, pool, events, lo, end_us)
        log.info(
            "drawn: %s messages, %s events (%.1f s)",
            f"{plan.messages.height:,}",
            f"{plan.events.height:,}",
            time.perf_counter() - started,
        )
        if not reuse_tenants:
            async with db.system_session("oltp") as session:
                await write_world(await _raw(session), world)
        await write_content(db, world, plan)
        log.info("written (%.1f s)", time.perf_counter() - started)
        await analyze(db, oltp=not reuse_tenants)
    finally:
        await db.dispose()
    kinds = plan.events.group_by("kind").len()
    return Summary(
        tenants=0 if reuse_tenants else world.tenants.height,
        campaigns=0 if reuse_tenants else world.campaigns.height,
        messages=plan.messages.height,
        events=plan.events.height,
        kinds={KINDS[k]: n for k, n in sorted(kinds.iter_rows())},
        machine=int(plan.events["machine"].sum()),
        seconds=time.perf_counter() - started,
        tenant_ids=[] if reuse_tenants else [uuid.UUID(t) for t in world.tenants["id"]],
    )


def _check(
    events: int, tenants: int, days: int, per_tenant: int, big: int, recent: float | None
) -> None:
    for name, value, least in (
        ("events", events, 1), ("tenants", tenants, 1), ("days", days, 1),
        ("campaigns_per_tenant", per_tenant, 1), ("big_tenant_campaigns", big, 0),
    ):  # fmt: skip
        if not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be a whole number of at least {least}, not {value!r}")
    if recent is not None and not recent > 0:
        raise ValueError(f"recent_seconds must be positive, not {recent!r}")


# --- randomness -------------------------------------------------------------------------------


class Draws:
    """Named random streams (pyarrow's generator): a seed and a name give the same numbers, and a
    longer draw begins with the shorter one, so row i's values do not depend on how many rows."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def uniform(self, name: str, n: int) -> pl.Series:
        key = hashlib.blake2b(f"{self.seed}/{name}".encode(), digest_size=8).digest()
        values = pc.random(n, initializer=int.from_bytes(key, "big") >> 1)
        return pl.Series(name, values)

    def below(self, name: str, n: int, bound: int | pl.Series) -> pl.Series:
        """Whole numbers in [0, bound)."""
        return (self.uniform(name, n) * bound).floor().cast(pl.UInt32)

    def choice(self, name: str, n: int, weights: Sequence[float] | pl.Series) -> pl.Series:
        """Indices of `weights`, each as likely as its weight."""
        cumulative = list(accumulate(weights))
        bounds = pl.Series(cumulative, dtype=pl.Float64) / cumulative[-1]
        picked = bounds.search_sorted(self.uniform(name, n), side="right")
        return picked.clip(0, len(cumulative) - 1).cast(pl.UInt32)

    def lognormal(self, name: str, n: int, median: float, sigma: float) -> pl.Series:
        """Box-Muller: log-normal with this median and spread."""
        radius = (-2.0 * (1.0 - self.uniform(f"{name}/r", n)).log()).sqrt()
        normal = radius * (2 * math.pi * self.uniform(f"{name}/a", n)).cos()
        return median * (sigma * normal).exp()

    def lag(self, name: str, n: int, shape: tuple[float, float]) -> pl.Series:
        """A delay in microseconds, at least a second."""
        return (self.lognormal(name, n, *shape) * US).clip(lower_bound=US).cast(pl.Int64)

    def repeats(self, name: str, n: int, mean: float) -> pl.Series:
        """Geometric: 0, 1, 2, … with this mean."""
        stop = 1.0 / (1.0 + mean)
        tries = (1.0 - self.uniform(name, n)).log() / math.log(1.0 - stop)
        return tries.floor().clip(0, 50).cast(pl.UInt32)


def random_hex(n: int) -> pl.Series:
    """n fresh version-4 uuids as 32 hex digits (PostgreSQL reads them without hyphens)."""
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = raw[6::16].translate(_VERSION_4)
    raw[8::16] = raw[8::16].translate(_VARIANT_1)
    array = pa.Array.from_buffers(pa.binary(16), n, [None, pa.py_buffer(raw)])
    return pl.Series(array).bin.encode("hex")


_VERSION_4 = bytes(b & 0x0F | 0x40 for b in range(256))
_VARIANT_1 = bytes(b & 0x3F | 0x80 for b in range(256))


def uuid_text(hex_: pl.Expr) -> pl.Expr:
    """32 hex digits as a uuid's usual text (8-4-4-4-12)."""
    parts = [hex_.str.slice(start, length) for start, length in _UUID_PARTS]
    return pl.concat_str(parts, separator="-")


_UUID_PARTS = ((0, 8), (8, 4), (12, 4), (16, 4), (20, 12))


def where(mask: pl.Series, yes: object, no: object) -> pl.Series:
    """yes where mask, else no (each a Series of the mask's length or one value)."""
    return pl.select(pl.when(pl.lit(mask)).then(_lit(yes)).otherwise(_lit(no))).to_series()


def _lit(value: object) -> pl.Expr:
    return value if isinstance(value, pl.Expr) else pl.lit(value)


# --- tenants and campaigns --------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """The tenants, their campaigns and their senders; rows refer to each other by position."""

    tenants: pl.DataFrame  # id, name, slug, timezone, first_sender, senders
    campaigns: pl.DataFrame  # id, tenant, name, timezone, window, start/end_hour, weight, quality
    senders: pl.DataFrame  # tenant, account_id (NULL: the platform relay), from_address, domain


def new_world(draws: Draws, tenants: int, per_tenant: int, big: int, first: datetime) -> World:
    salt = os.urandom(3).hex()
    zones = list(TIME_ZONES)
    spread = draws.choice("tenant zone", tenants, list(TIME_ZONES.values())).to_list()
    tenant_rows = pl.DataFrame(
        {
            "id": [str(uuid.uuid4()) for _ in range(tenants)],
            "name": [f"Generated tenant {i}" for i in range(tenants)],
            "slug": [f"t{i}-{salt}" for i in range(tenants)],
            "timezone": [zones[i] if i < len(zones) else zones[z] for i, z in enumerate(spread)],
        }
    )
    counts = [big if i == 0 and big else per_tenant for i in range(tenants)]
    owner = pl.Series("tenant", [i for i, n in enumerate(counts) for _ in range(n)], pl.UInt32)
    n = len(owner)
    size = draws.lognormal("tenant size", tenants, 1.0, 1.0)
    size = size.scatter(0, size[0] * counts[0] / per_tenant)  # the big tenant's campaigns: usual
    all_week = draws.uniform("campaign all week", n) < 0.2
    campaigns = pl.DataFrame(
        {
            "id": [str(uuid.uuid4()) for _ in range(n)],
            "tenant": owner,
            "name": [f"Campaign {k + 1}" for count in counts for k in range(count)],
            "timezone": tenant_rows["timezone"].gather(owner),
            "window": where(all_week, "1,2,3,4,5,6,7", "1,2,3,4,5"),
            "start_hour": (8 + draws.below("campaign start", n, 2)).cast(pl.Int16),
            "end_hour": (17 + draws.below("campaign end", n, 2)).cast(pl.Int16),
            "weight": size.gather(owner)
            / pl.Series(counts).gather(owner)
            * (0.5 + draws.uniform("campaign share", n)),
            "quality": draws.lognormal("campaign quality", n, 1.0, 0.35),
            "launched_at": [first - timedelta(days=1)] * n,
        }
    )
    return _with_senders(tenant_rows, campaigns)


async def load_world(conn, draws: Draws) -> World:
    """The tenants already there with running campaigns, and those campaigns."""
    tenants = await conn.fetch(
        """SELECT t.id::text, t.name, t.slug, t.timezone FROM app.tenants t
        WHERE t.status = 'ACTIVE' AND EXISTS (
            SELECT FROM app.campaigns c WHERE c.tenant_id = t.id AND c.status = 'RUNNING')
        ORDER BY t.id"""
    )
    if not tenants:
        raise ValueError("no tenant with a running campaign to reuse: generate some first")
    campaigns = await conn.fetch(
        """SELECT c.id::text, c.tenant_id::text, c.name, c.timezone, c.start_hour, c.end_hour,
            array_to_string(c.window_days, ',') AS window
        FROM app.campaigns c JOIN app.tenants t ON t.id = c.tenant_id
        WHERE c.status = 'RUNNING' AND t.status = 'ACTIVE' ORDER BY c.id"""
    )
    tenant_rows = pl.DataFrame(
        [tuple(r) for r in tenants], schema=["id", "name", "slug", "timezone"], orient="row"
    )
    row_of = {t: i for i, t in enumerate(tenant_rows["id"])}
    n = len(campaigns)
    owner = pl.Series("tenant", [row_of[c["tenant_id"]] for c in campaigns], pl.UInt32)
    size = draws.lognormal("tenant size", len(tenant_rows), 1.0, 1.0)
    campaign_rows = pl.DataFrame(
        {
            "id": [c["id"] for c in campaigns],
            "tenant": owner,
            "name": [c["name"] for c in campaigns],
            "timezone": [c["timezone"] for c in campaigns],
            "window": [c["window"] for c in campaigns],
            "start_hour": pl.Series([c["start_hour"] for c in campaigns], dtype=pl.Int16),
            "end_hour": pl.Series([c["end_hour"] for c in campaigns], dtype=pl.Int16),
            "weight": size.gather(owner) * (0.5 + draws.uniform("campaign share", n)),
            "quality": draws.lognormal("campaign quality", n, 1.0, 0.35),
        }
    )
    return _with_senders(tenant_rows, campaign_rows)


def _with_senders(tenants: pl.DataFrame, campaigns: pl.DataFrame) -> World:
    """Each tenant's sending accounts follow from its id (0 to 3 of them; none: the platform
    relay), so a later run on the same tenants sends from the same ones."""
    rows: list[tuple[int, str | None, str, str]] = []
    starts, counts = [], []
    for row, (tenant_id, slug) in enumerate(tenants.select("id", "slug").iter_rows()):
        tenant = uuid.UUID(tenant_id)
        domain = f"{slug}.example"
        accounts = tenant.int % (len(MAILBOXES) + 1)
        starts.append(len(rows))
        for k in range(accounts):
            account = str(uuid.uuid5(tenant, f"account-{k}"))
            rows.append((row, account, f"{MAILBOXES[k]}@{domain}", domain))
        if not accounts:
            rows.append((row, None, f"hello@{domain}", domain))
        counts.append(max(accounts, 1))
    senders = pl.DataFrame(
        rows, schema=["tenant", "account_id", "from_address", "domain"], orient="row"
    ).with_columns(pl.col("tenant").cast(pl.UInt32))
    # Events repeat these ids millions of times: categorical, one copy of each string.
    id_cat = pl.col("id").cast(pl.Categorical)
    return World(
        tenants=tenants.with_columns(
            id_cat=id_cat,
            first_sender=pl.Series(starts, dtype=pl.UInt32),
            senders=pl.Series(counts, dtype=pl.UInt32),
        ),
        campaigns=campaigns.with_columns(id_cat=id_cat),
        senders=senders.with_columns(pl.col("account_id", "domain").cast(pl.Categorical)),
    )


# --- messages and what follows them -----------------------------------------------------------


def draw_messages(draws: Draws, world: World, n: int, prefix: str = "") -> pl.DataFrame:
    """n messages: campaign by weight, one of its tenant's senders, step, recipient. `msg`
    numbers them in draw order (which is random: nothing else follows it)."""
    name = prefix + "message "
    campaign = draws.choice(name + "campaign", n, world.campaigns["weight"])
    tenant = world.campaigns["tenant"].gather(campaign)
    first_sender = world.tenants["first_sender"].gather(tenant)
    sender = first_sender + draws.below(name + "sender", n, world.tenants["senders"].gather(tenant))
    first = draws.below(name + "first name", n, len(FIRST_NAMES))
    last = draws.below(name + "last name", n, len(LAST_NAMES))
    number = draws.below(name + "number", n, 1_000)
    domains = [*RECIPIENT_DOMAINS, ""]
    domain = draws.choice(name + "domain", n, [*RECIPIENT_DOMAINS.values(), CORPORATE])
    corporate = domain == len(domains) - 1
    company = draws.below(name + "company", n, CORPORATE_DOMAINS)
    first_names = pl.Series(FIRST_NAMES).gather(first)
    step = (draws.choice(name + "step", n, STEP_WEIGHTS) + 1).cast(pl.Int16)
    frame = pl.DataFrame(
        {
            "msg": pl.int_range(n, dtype=pl.UInt32, eager=True),
            "campaign": campaign,
            "tenant": tenant,
            "sender": sender,
            "step": step,
            "first": first_names,
            "last": pl.Series(LAST_NAMES).gather(last),
            "number": number,
            "domain": pl.Series(domains).gather(domain),
            "corporate": corporate,
            "company": company,
            "quality": world.campaigns["quality"].gather(campaign),
        }
    )
    return frame.select(
        "msg", "campaign", "tenant", "sender", "step", "quality", "corporate",
        to_address=pl.concat_str(
            pl.col("first").str.to_lowercase(), pl.lit("."), pl.col("last").str.to_lowercase(),
            pl.col("number").cast(pl.String), pl.lit("@"),
            pl.when(pl.col("corporate"))
            .then(pl.concat_str(pl.lit("corp"), pl.col("company").cast(pl.String), pl.lit(".example")))
            .otherwise(pl.col("domain")),
        ),
        subject=pl.concat_str(
            pl.when(pl.col("step") > 1).then(pl.lit("Re: ")).otherwise(pl.lit("")),
            pl.lit("Quick question, "), pl.col("first"),
        ),
    )  # fmt: skip


def business_hours(draws: Draws, messages: pl.DataFrame, world: World, lo: int, hi: int):
    """Send times in each campaign's window (its zone's weekdays and hours), in [lo, hi]:
    `messages` with `sent`, those falling outside (or in a DST gap) left out."""
    n = messages.height
    c = world.campaigns
    frame = messages.with_columns(
        timezone=c["timezone"].gather(messages["campaign"]),
        window=c["window"].gather(messages["campaign"]),
        start_hour=c["start_hour"].gather(messages["campaign"]),
        end_hour=c["end_hour"].gather(messages["campaign"]),
        day_u=draws.uniform("send day", n),
        time_u=draws.uniform("send time", n),
    )
    seconds = (
        pl.col("start_hour").cast(pl.Float64) * 3600
        + pl.col("time_u") * (pl.col("end_hour") - pl.col("start_hour")).cast(pl.Float64) * 3600
    )
    parts = []
    for (zone, window), part in frame.partition_by(["timezone", "window"], as_dict=True).items():
        dates = _local_dates(zone, {int(d) for d in window.split(",")}, lo, hi)
        day = pl.Series(dates, dtype=pl.Date).gather(
            (part["day_u"] * len(dates)).floor().cast(pl.UInt32)
        )
        local = pl.lit(day).cast(pl.Datetime("us")) + pl.duration(
            microseconds=(seconds * US).cast(pl.Int64)
        )
        parts.append(
            part.with_columns(
                sent=local.dt.replace_time_zone(zone, ambiguous="earliest", non_existent="null")
                .dt.convert_time_zone("UTC")
                .dt.epoch("us")
            )
        )
    return (
        pl.concat(parts)
        .sort("msg")
        .drop("timezone", "window", "start_hour", "end_hour", "day_u", "time_u")
        .filter(pl.col("sent").is_between(lo, hi))
    )


def _local_dates(zone: str, weekdays: set[int], lo: int, hi: int) -> list[date]:
    """The zone's dates from lo's to hi's that are in the window (all of them if none is)."""
    tz = ZoneInfo(zone)
    first = datetime.fromtimestamp(lo / US, tz).date()
    last = datetime.fromtimestamp(hi / US, tz).date()
    every = [first + timedelta(days=k) for k in range((last - first).days + 1)]
    return [d for d in every if d.isoweekday() in weekdays] or every


def funnel(draws: Draws, messages: pl.DataFrame, prefix: str = "") -> pl.DataFrame:
    """Every event of each message, SENT included, as (msg, kind, machine, at, detail, url).
    `messages` has msg, sent, quality (its campaign's) and corporate (behind a link scanner)."""
    p = prefix
    n = messages.height
    m = messages.select("msg", "sent", "quality", "corporate").with_columns(
        bounce=draws.uniform(p + "bounce", n)
    )
    frames = [_events(m, SENT, "sent")]

    bounced = m.filter(pl.col("bounce") < HARD_BOUNCE + SOFT_BOUNCE)
    b = bounced.height
    hard = bounced["bounce"] < HARD_BOUNCE
    frames.append(
        _events(
            bounced.with_columns(
                at=pl.col("sent")
                + where(
                    hard,
                    draws.lag(p + "hard bounce lag", b, HARD_LAG),
                    draws.lag(p + "soft bounce lag", b, SOFT_LAG),
                ),
                detail=where(
                    hard,
                    HARD + draws.choice(p + "hard bounce", b, (85, 15)),
                    SOFT + draws.choice(p + "soft bounce", b, (70, 30)),
                ),
            ),
            BOUNCE,
        )
    )

    d = m.filter(pl.col("bounce") >= HARD_BOUNCE + SOFT_BOUNCE)
    k = d.height
    opens = where(
        draws.uniform(p + "open", k) < HUMAN_OPEN * d["quality"],
        1 + draws.repeats(p + "reopens", k, REOPEN_MEAN),
        pl.lit(0, pl.UInt32),
    )
    d = d.with_columns(
        opens=opens,
        first_open=d["sent"] + draws.lag(p + "open lag", k, OPEN_LAG),
        reply_u=draws.uniform(p + "reply", k),
        unsubscribe_u=draws.uniform(p + "unsubscribe", k),
        complaint_u=draws.uniform(p + "complaint", k),
    )

    # Image proxies fetch the pixel seconds after the send, once or twice.
    prefetched = d.filter(draws.uniform(p + "prefetch", k) < PREFETCH)
    again = draws.uniform(p + "prefetch again", prefetched.height) < PREFETCH_AGAIN
    prefetches = _repeat(prefetched, 1 + again.cast(pl.UInt32))
    frames.append(
        _events(
            prefetches.with_columns(
                at=pl.col("sent") + draws.lag(p + "prefetch lag", prefetches.height, PREFETCH_LAG),
                detail=PROXY + draws.below(p + "proxy", prefetches.height, len(PROXY_AGENTS)),
            ),
            OPEN,
            machine=True,
        )
    )

    # People: a first open minutes to days later, and perhaps more.
    opened = _repeat(d, d["opens"])
    frames.append(
        _events(
            opened.with_columns(
                at=pl.col("first_open")
                + draws.lag(p + "reopen lag", opened.height, REOPEN_LAG)
                * (pl.col("repeat") > 0).cast(pl.Int64),
                detail=HUMAN + draws.below(p + "open agent", opened.height, len(HUMAN_AGENTS)),
            ),
            OPEN,
        )
    )

    openers = d.filter(pl.col("opens") > 0)
    clickers = openers.filter(
        draws.uniform(p + "click", openers.height) < CLICKED * openers["quality"]
    )
    c = clickers.height
    clickers = clickers.with_columns(
        first_click=pl.col("first_open") + draws.lag(p + "click lag", c, CLICK_LAG),
    )
    clicks = _repeat(clickers, 1 + draws.repeats(p + "reclicks", c, RECLICK_MEAN))
    frames.append(
        _events(
            clicks.with_columns(
                at=pl.col("first_click")
                + draws.lag(p + "reclick lag", clicks.height, RECLICK_LAG)
                * (pl.col("repeat") > 0).cast(pl.Int64),
                detail=HUMAN + draws.below(p + "click agent", clicks.height, len(HUMAN_AGENTS)),
                url=draws.below(p + "click url", clicks.height, len(CLICK_URLS)),
            ),
            CLICK,
        )
    )

    # Link scanners follow the links seconds after delivery, mostly at companies.
    scan_share = where(d["corporate"], SCAN_CORPORATE, SCAN_OTHER)
    scanned = d.filter(draws.uniform(p + "scan", k) < scan_share)
    again = draws.uniform(p + "scan again", scanned.height) < SCAN_AGAIN
    scans = _repeat(scanned, 1 + again.cast(pl.UInt32))
    frames.append(
        _events(
            scans.with_columns(
                at=pl.col("sent") + draws.lag(p + "scan lag", scans.height, SCAN_LAG),
                detail=SCANNER + draws.below(p + "scanner", scans.height, len(SCANNER_AGENTS)),
                url=draws.below(p + "scan url", scans.height, len(CLICK_URLS)),
            ),
            CLICK,
            machine=True,
        )
    )

    # Replies and unsubscribes follow the first open (or the send, when images were off).
    was_opened = pl.col("opens") > 0
    after = pl.when(was_opened).then(pl.col("first_open")).otherwise(pl.col("sent"))
    replied = d.filter(
        pl.col("reply_u")
        < pl.when(was_opened).then(REPLY_OPENED).otherwise(REPLY_UNOPENED) * pl.col("quality")
    )
    frames.append(
        _events(
            replied.with_columns(
                at=after + draws.lag(p + "reply lag", replied.height, REPLY_LAG), detail=REPLIED
            ),
            REPLY,
        )
    )
    quiet = d.filter(
        pl.col("reply_u")
        >= pl.when(was_opened).then(REPLY_OPENED).otherwise(REPLY_UNOPENED) * pl.col("quality")
    )
    unsubscribed = quiet.filter(
        pl.col("unsubscribe_u")
        < pl.when(was_opened).then(UNSUBSCRIBE_OPENED).otherwise(UNSUBSCRIBE_UNOPENED)
    )
    frames.append(
        _events(
            unsubscribed.with_columns(
                at=after + draws.lag(p + "unsubscribe lag", unsubscribed.height, UNSUBSCRIBE_LAG)
            ),
            UNSUBSCRIBE,
        )
    )
    complained = quiet.filter(pl.col("complaint_u") < COMPLAINED)
    frames.append(
        _events(
            complained.with_columns(
                at=pl.col("sent")
                + draws.lag(p + "complaint lag", complained.height, COMPLAINT_LAG),
                detail=ABUSE,
            ),
            COMPLAINT,
        )
    )
    return pl.concat(frames)


def _repeat(frame: pl.DataFrame, times: pl.Series) -> pl.DataFrame:
    """Each row `times` times, numbered by `repeat` (0 for the first)."""
    return (
        frame.with_columns(_times=times)
        .filter(pl.col("_times") > 0)
        .with_columns(repeat=pl.int_ranges(0, pl.col("_times"), dtype=pl.UInt32))
        .explode("repeat")
        .drop("_times")
    )


def _events(frame: pl.DataFrame, kind: int, at: str = "at", *, machine: bool = False):
    cols = frame.columns
    return frame.select(
        pl.col("msg"),
        kind=pl.lit(kind, pl.UInt8),
        machine=pl.lit(machine),
        at=pl.col(at),
        detail=(pl.col("detail") if "detail" in cols else pl.lit(0)).cast(pl.UInt16),
        url=(pl.col("url") if "url" in cols else pl.lit(None)).cast(pl.UInt8),
    )


# --- the two kinds of run ---------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What a run writes: new messages (rows as in draw_messages, with id, lead, sent, status),
    the messages events may name (`targets`: new ones first, then earlier ones), and the
    events in time order, each naming its message by its row in `targets`."""

    messages: pl.DataFrame
    targets: pl.DataFrame
    events: pl.DataFrame  # row, kind, machine, at, detail, url
    bounced_before: pl.DataFrame  # earlier messages hard-bounced now: id, at, detail


def history(draws: Draws, world: World, events: int, lo: int, hi: int) -> Plan:
    """Messages sent in their campaigns' windows over [lo, hi], with everything that followed
    them by hi; the first messages drawn whose events add up to at most `events`."""
    n = math.ceil(events / EVENTS_PER_MESSAGE * 1.08) + 64
    while True:
        messages = business_hours(draws, draw_messages(draws, world, n), world, lo, hi)
        happened = funnel(draws, messages).filter(pl.col("at") <= hi)
        if happened.height >= events or n > 50 * events:
            break
        n = math.ceil(n * events / max(happened.height, 1) * 1.05) + 64
    # Messages are drawn independently: the first ones drawn are as good a sample as any.
    by_message = happened["msg"].sort()
    last = by_message[events] - 1 if happened.height > events else by_message[-1]
    messages = messages.filter(pl.col("msg") <= last).sort("sent", "msg")
    messages = _identify(messages.with_columns(row=pl.int_range(messages.height, dtype=pl.UInt32)))
    row_of = pl.zeros(last + 1, pl.UInt32, eager=True).scatter(messages["msg"], messages["row"])
    happened = happened.filter(pl.col("msg") <= last)
    happened = happened.with_columns(row=row_of.gather(happened["msg"]))
    messages = _bounce(messages, happened)
    return Plan(
        messages=messages,
        targets=_targets(world, messages),
        events=_in_order(happened),
        bounced_before=pl.DataFrame(),
    )


def recent(
    draws: Draws, world: World, pool: pl.DataFrame | None, events: int, lo: int, hi: int
) -> Plan:
    """`events` events in (lo, hi], mixed as in steady sending: each is a kind of event with its
    lag after a send, drawn from a reference cohort's funnel. A SENT is a new message; any other
    event names a message sent about its lag earlier (among the NEIGHBOURS sent just before
    then, for variety), from `pool` (earlier messages) or the window's new ones."""
    cohort = draw_messages(draws, world, max(4 * events, 20_000), "reference ")
    reference = funnel(draws, cohort.with_columns(sent=pl.lit(0, pl.Int64)), "reference ")
    count = math.ceil(events * 1.2) + 20
    candidates = reference.select(
        pl.all().gather(draws.below("recent event", count, reference.height))
    ).with_columns(
        lag=pl.col("at"),
        at=hi - (draws.uniform("recent time", count) * (hi - lo)).floor().cast(pl.Int64),
        order=pl.int_range(count, dtype=pl.UInt32),
    )
    sends = candidates.head(events).filter(pl.col("kind") == SENT)
    messages = (
        sends.select("msg", "order", sent="at")
        .join(cohort, on="msg")
        .sort("sent", "order")
        .with_columns(row=pl.int_range(pl.len(), dtype=pl.UInt32))
    )
    messages = _identify(messages)
    sends = sends.join(messages.select("order", "row"), on="order", maintain_order="left")
    targets = _targets(world, messages)
    if pool is not None and pool.height:
        targets = pl.concat([targets, pool.select(targets.columns)], how="vertical")
    followers = _earlier_message(draws, targets, candidates.filter(pl.col("kind") != SENT))
    followers = followers.drop_nulls("row").head(events - sends.height)
    happened = pl.concat([sends.select(followers.columns), followers], how="vertical")
    new = messages.height
    messages = _bounce(messages, happened.filter(pl.col("row") < new))
    bounced_before = _hard_bounces(happened.filter(pl.col("row") >= new))
    return Plan(
        messages=messages,
        targets=targets,
        events=_in_order(happened),
        bounced_before=bounced_before.with_columns(id=targets["id"].gather(bounced_before["row"])),
    )


def _earlier_message(draws: Draws, targets: pl.DataFrame, followers: pl.DataFrame):
    """Each follower's message (`row` in targets): one sent by `at - lag` (or, if none was,
    by `at`), picked among the NEIGHBOURS sent just before; null if none was sent by `at`."""
    by_time = targets.with_columns(row=pl.int_range(pl.len(), dtype=pl.UInt32)).sort("sent", "row")
    sent = by_time["sent"]
    before_lag = sent.search_sorted(followers["at"] - followers["lag"], side="right")
    before_event = sent.search_sorted(followers["at"], side="right")
    upto = where(before_lag > 0, before_lag, before_event).cast(pl.Int64)
    back = draws.below("recent neighbour", followers.height, upto.clip(1, NEIGHBOURS))
    position = (upto - 1 - back.cast(pl.Int64)).clip(0, max(by_time.height - 1, 0))
    row = by_time["row"].gather(position) if by_time.height else position.cast(pl.UInt32)
    return followers.with_columns(row=where(upto > 0, row, None))


def _identify(messages: pl.DataFrame) -> pl.DataFrame:
    """Fresh ids: the message's (its VERP token and Message-ID too) and its lead's."""
    return messages.with_columns(id=random_hex(messages.height), lead=random_hex(messages.height))


def _hard_bounces(happened: pl.DataFrame) -> pl.DataFrame:
    """row, at and detail of each hard-bounced message's first hard bounce."""
    return (
        happened.filter((pl.col("kind") == BOUNCE) & pl.col("detail").is_between(HARD, SOFT - 1))
        .group_by("row")
        .agg(pl.all().sort_by("at").first())
        .select("row", "at", "detail")
    )


def _bounce(messages: pl.DataFrame, happened: pl.DataFrame) -> pl.DataFrame:
    """Status: BOUNCED with the DSN's words for hard-bounced messages, else SENT."""
    hard = _hard_bounces(happened).rename({"at": "bounced_at"})
    return (
        messages.join(hard, on="row", how="left")
        .with_columns(
            status=pl.when(pl.col("bounced_at").is_null())
            .then(pl.lit("SENT"))
            .otherwise(pl.lit("BOUNCED")),
            smtp_response=pl.when(pl.col("bounced_at").is_null())
            .then(pl.lit("250 2.0.0 OK"))
            .otherwise(_bounce_words(pl.col("detail"))),
            updated=pl.coalesce("bounced_at", "sent"),
        )
        .sort("row")
    )


def _bounce_words(detail: pl.Expr) -> pl.Expr:
    """What a DSN said, as stored in smtp_response: status and diagnostic."""
    said = [json.loads(t) if t.startswith('{"hard"') else {} for t in DETAILS]
    statuses = pl.Series([d.get("status", "") for d in said])
    words = pl.Series([d.get("diagnostic", "") for d in said])
    return pl.concat_str(pl.lit(statuses).gather(detail), pl.lit(" "), pl.lit(words).gather(detail))


def _targets(world: World, messages: pl.DataFrame) -> pl.DataFrame:
    """What an event copies from its message."""
    return pl.DataFrame(
        {
            "id": messages["id"],
            "tenant_id": world.tenants["id_cat"].gather(messages["tenant"]),
            "campaign_id": world.campaigns["id_cat"].gather(messages["campaign"]),
            "lead_id": messages["lead"],
            "account_id": world.senders["account_id"].gather(messages["sender"]),
            "step_position": messages["step"],
            "to_address": messages["to_address"],
            "sent": messages["sent"],
        }
    )


def _in_order(events: pl.DataFrame) -> pl.DataFrame:
    # A stable sort of rows in a deterministic order: the same seed, the same seq order.
    return events.select("row", "kind", "machine", "at", "detail", "url").sort(
        "at", maintain_order=True
    )


async def existing_messages(
    db: Database, world: World, events: int, hi: int, seed: int
) -> pl.DataFrame:
    """A sample of the world's tenants' messages sent by hi (and not bounced): what a recent
    run's opens, clicks and replies may name, as `targets` rows."""
    want = min(max(50 * events, 50_000), 2_000_000)
    async with db.system_session("content") as session:
        conn = await _raw(session)
        rows = await conn.fetchval(
            "SELECT reltuples FROM pg_class WHERE oid = 'content.email_messages'::regclass"
        )
        percent = 100.0 if rows <= want else max(100.0 * want / rows, 0.001)
        out = io.BytesIO()
        await conn.copy_from_query(
            f"""SELECT id, tenant_id, campaign_id, lead_id, account_id, step_position,
                to_address, (extract(epoch FROM sent_at) * 1000000)::bigint AS sent
            FROM content.email_messages TABLESAMPLE SYSTEM ({percent:.6f}) REPEATABLE ({seed})
            WHERE status = 'SENT' AND sent_at <= to_timestamp({hi // US})""",
            output=out,
            format="csv",
        )
    schema = {
        "id": pl.String, "tenant_id": pl.String, "campaign_id": pl.String, "lead_id": pl.String,
        "account_id": pl.String, "step_position": pl.Int16, "to_address": pl.String,
        "sent": pl.Int64,
    }  # fmt: skip
    if not out.getvalue():
        return pl.DataFrame(schema=schema)
    pool = pl.read_csv(io.BytesIO(out.getvalue()), has_header=False, schema=schema)
    return pool.filter(pl.col("tenant_id").is_in(world.tenants["id"].implode())).with_columns(
        pl.col("tenant_id", "campaign_id", "account_id").cast(pl.Categorical)
    )


# --- writing ----------------------------------------------------------------------------------


async def write_world(conn, world: World) -> None:
    """Tenants and their running campaigns (OLTP tier)."""
    tenants = world.tenants.select("id", "name", "slug", "timezone")
    await conn.copy_to_table(
        "tenants", schema_name="app", columns=tenants.columns,
        source=_csv(tenants.slice, tenants.height), format="csv",
    )  # fmt: skip
    c = world.campaigns

    def rows(start: int, count: int) -> pl.DataFrame:
        part = c.slice(start, count)
        return part.select(
            "id",
            tenant_id=world.tenants["id"].gather(part["tenant"]),
            name="name",
            status=pl.lit("RUNNING"),
            timezone="timezone",
            window_days=pl.concat_str(pl.lit("{"), pl.col("window"), pl.lit("}")),
            start_hour="start_hour",
            end_hour="end_hour",
            launched_at=pl.col("launched_at").dt.convert_time_zone("UTC"),
        )

    await conn.copy_to_table(
        "campaigns", schema_name="app",
        columns=["id", "tenant_id", "name", "status", "timezone", "window_days", "start_hour",
                 "end_hour", "launched_at"],
        source=_csv(rows, c.height), format="csv",
    )  # fmt: skip


async def write_content(db: Database, world: World, plan: Plan) -> None:
    """Messages and events, each COPYed in one stream of its own at the same time, messages
    committed first (an event never names a message not yet there)."""
    messages, targets, events = plan.messages, plan.targets, plan.events

    def message_rows(start: int, count: int) -> pl.DataFrame:
        m = messages.slice(start, count)
        sender = world.senders.select(pl.all().gather(m["sender"]))
        return m.with_columns(
            tenant_id=world.tenants["id"].gather(m["tenant"]),
            campaign_id=world.campaigns["id"].gather(m["campaign"]),
            account_id=sender["account_id"],
            from_address=sender["from_address"],
            domain=sender["domain"].cast(pl.String),
        ).select(
            "id", "tenant_id", "campaign_id", pl.col("lead").alias("lead_id"), "account_id",
            pl.col("step").alias("step_position"),
            pl.concat_str(
                "campaign_id", pl.lit(":"), uuid_text(pl.col("lead")), pl.lit(":"),
                pl.col("step").cast(pl.String),
            ).alias("idempotency_key"),
            pl.concat_str(pl.lit("<"), "id", pl.lit("@"), "domain", pl.lit(">")).alias(
                "message_id_header"
            ),
            pl.col("id").alias("verp_token"), "from_address", "to_address", "subject", "status",
            "smtp_response",
            *(_timestamp(c).alias(name) for c, name in (
                ("sent", "sent_at"), ("sent", "created_at"), ("updated", "updated_at"),
            )),
        )  # fmt: skip

    details, urls, kinds = pl.Series(DETAILS), pl.Series(CLICK_URLS), pl.Series(KINDS)

    def event_rows(start: int, count: int) -> pl.DataFrame:
        e = events.slice(start, count)
        t = targets.select(pl.all().gather(e["row"])).drop("sent")
        return pl.concat([e, t], how="horizontal").select(
            "tenant_id",
            pl.lit(kinds).gather(pl.col("kind")).alias("kind"),
            pl.col("id").alias("message_id"),
            "campaign_id", "lead_id", "account_id", "step_position", "machine",
            pl.lit(urls).gather(pl.col("url")).alias("url"),
            pl.when(pl.col("kind") == REPLY)
            .then(pl.concat_str(pl.lit('{"from": "'), "to_address", pl.lit('"}')))
            .otherwise(pl.lit(details).gather(pl.col("detail")))
            .alias("details"),
            _timestamp("at").alias("occurred_at"),
        )  # fmt: skip

    bulk_messages = await _is_bulk(db, "content.email_messages", messages.height)
    bulk_events = await _is_bulk(db, "content.email_events", events.height)
    async with (
        _loading(db, bulk_events) as for_events,
        _loading(db, bulk_messages) as for_messages,
    ):
        message_conn = await _raw(for_messages)
        event_conn = await _raw(for_events)
        copies = await asyncio.gather(
            _copy(message_conn, "content.email_messages", MESSAGE_COLUMNS,
                  _csv(message_rows, messages.height), rebuild=bulk_messages),
            _copy(event_conn, "content.email_events", EVENT_COLUMNS,
                  _csv(event_rows, events.height), rebuild=bulk_events),
            return_exceptions=True,  # both finished before either transaction ends
        )  # fmt: skip
        for outcome in copies:
            if isinstance(outcome, BaseException):
                raise outcome
        # Leaving the block commits the inner (messages) transaction first.
    if plan.bounced_before.height:
        b = plan.bounced_before
        async with db.system_session("content") as session:
            await (await _raw(session)).execute(
                """UPDATE content.email_messages AS m
                SET status = 'BOUNCED', smtp_response = u.reply, updated_at = u.at
                FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) AS u(id, reply, at)
                WHERE m.id = u.id AND m.status = 'SENT'""",
                b["id"].to_list(),
                b.select(_bounce_words(pl.col("detail")))[:, 0].to_list(),
                b.select(_timestamp("at"))[:, 0].to_list(),
            )


def _loading(db: Database, bulk: bool) -> AbstractAsyncContextManager[AsyncSession]:
    """A bulk load is the owner's (it drops and builds indexes), any other the system role's."""
    return db.owner_session("content") if bulk else db.system_session("content")


async def _is_bulk(db: Database, table: str, rows: int) -> bool:
    """Whether loading `rows` rows is faster with the indexes built after: BULK_ROWS or more,
    into a table holding fewer (building costs what the whole table holds), which no foreign
    key refers to (dropping its keys would drop those)."""
    if rows < BULK_ROWS:
        return False
    async with db.system_session("content") as session:
        conn = await _raw(session)
        referred = await conn.fetchval(
            "SELECT count(*) FROM pg_constraint WHERE confrelid = $1::regclass", table
        )
        held = await conn.fetchval(f"SELECT count(*) FROM (SELECT FROM {table} LIMIT {rows}) s")
    return not referred and held < rows


async def _copy(conn, table: str, columns: Sequence[str], source, *, rebuild: bool) -> None:
    """COPY the CSV into `table`. With `rebuild`, without the table's indexes and the
    constraints they back, added again after in the same transaction (a failure leaves them as
    they were): building an index from sorted rows beats one random insert per row and index,
    3.7x for a million events here (35 s against 128 s)."""
    schema, name = table.split(".")
    if not rebuild:
        await conn.copy_to_table(
            name, schema_name=schema, columns=columns, source=source, format="csv"
        )
        return
    indexes = await conn.fetch(
        """SELECT i.indexrelid::regclass::text AS index, pg_get_indexdef(i.indexrelid) AS ddl,
            c.conname, pg_get_constraintdef(c.oid) AS constraint_ddl
        FROM pg_index i
        LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid
        WHERE i.indrelid = $1::regclass
        ORDER BY i.indisprimary DESC, i.indexrelid""",
        table,
    )
    # The owner is subject to its tables' row security only when it is forced; COPY refuses it.
    forced = await conn.fetchval(
        """SELECT c.relforcerowsecurity AND NOT (r.rolsuper OR r.rolbypassrls)
        FROM pg_class c, pg_roles r WHERE c.oid = $1::regclass AND r.rolname = current_user""",
        table,
    )
    if forced:
        await conn.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
    for index in indexes:
        if index["conname"]:
            await conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{index["conname"]}"')
        else:
            await conn.execute(f"DROP INDEX {index['index']}")
    await conn.copy_to_table(name, schema_name=schema, columns=columns, source=source, format="csv")
    await conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
    for index in indexes:
        if index["conname"]:
            await conn.execute(
                f'ALTER TABLE {table} ADD CONSTRAINT "{index["conname"]}" {index["constraint_ddl"]}'
            )
        else:
            await conn.execute(index["ddl"])
    if forced:
        await conn.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")


def _timestamp(micros: str) -> pl.Expr:
    return pl.col(micros).cast(pl.Datetime("us", "UTC"))


async def _csv(rows: Callable[[int, int], pl.DataFrame], total: int) -> AsyncIterator[bytes]:
    """The rows as CSV, CHUNK_ROWS at a time, each chunk built on a thread while the one before
    is sent."""

    def render(start: int) -> bytes:
        out = io.BytesIO()
        rows(start, min(CHUNK_ROWS, total - start)).write_csv(out, include_header=False)
        return out.getvalue()

    starts = list(range(0, total, CHUNK_ROWS))
    if not starts:
        return
    pending = asyncio.ensure_future(asyncio.to_thread(render, starts[0]))
    try:
        for following in [*starts[1:], None]:
            data = await pending
            pending = (
                asyncio.ensure_future(asyncio.to_thread(render, following))
                if following is not None
                else None
            )
            yield data
    finally:
        if pending is not None:
            pending.cancel()


async def analyze(db: Database, *, oltp: bool) -> None:
    """Planner statistics for the tables written (as their owner: ANALYZE needs it)."""
    if oltp:
        async with db.owner_session("oltp") as session:
            await (await _raw(session)).execute("ANALYZE app.tenants, app.campaigns")
    async with db.owner_session("content") as session:
        await (await _raw(session)).execute("ANALYZE content.email_messages, content.email_events")


async def _raw(session: AsyncSession):
    """The session's asyncpg connection, inside the session's transaction (begun here: the
    session begins it only on its first statement), without the statement timeout: a COPY of
    millions of rows takes minutes."""
    await session.execute(text("SET LOCAL statement_timeout = 0"))
    return await driver_connection(session)


def _micros(moment: datetime) -> int:
    return round(moment.timestamp() * US)


# --- command line -----------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        self.exit(2, f"{self.prog}: {message}\n")


def _whole(least: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or number < least:
            raise argparse.ArgumentTypeError(f"{value!r} is not a whole number >= {least}")
        return number

    return parse


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not number > 0 or math.isinf(number):
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number of seconds")
    return number


def _moment(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def main(argv: Sequence[str] | None = None) -> None:
    parser = _Parser(prog="gen_events.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("events", type=_whole(1), help="how many events (about)")
    parser.add_argument("--tenants", type=_whole(1), default=10_000)
    parser.add_argument("--days", type=_whole(1), default=90)
    parser.add_argument("--campaigns-per-tenant", type=_whole(1), default=3)
    parser.add_argument("--big-tenant-campaigns", type=_whole(0), default=0)
    parser.add_argument("--seed", type=_whole(0), default=1)
    parser.add_argument("--end", type=_moment, help="ISO 8601; default now (UTC when naive)")
    parser.add_argument("--recent-seconds", type=_seconds)
    parser.add_argument("--reuse-tenants", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = get_settings()
    if not settings.database_url:
        parser.exit(2, f"{parser.prog}: set DATABASE_URL to the database to fill\n")
    try:
        summary = asyncio.run(
            generate(
                settings, args.events, tenants=args.tenants, days=args.days,
                campaigns_per_tenant=args.campaigns_per_tenant,
                big_tenant_campaigns=args.big_tenant_campaigns, seed=args.seed, end=args.end,
                recent_seconds=args.recent_seconds, reuse_tenants=args.reuse_tenants,
            )
        )  # fmt: skip
    except ValueError as e:
        parser.exit(2, f"{parser.prog}: {e}\n")
    kinds = ", ".join(f"{k} {n:,}" for k, n in summary.kinds.items())
    print(
        f"{summary.events:,} events ({kinds}; {summary.machine:,} machine), "
        f"{summary.messages:,} messages, {summary.tenants:,} tenants and "
        f"{summary.campaigns:,} campaigns created, in {summary.seconds:.1f} s"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
