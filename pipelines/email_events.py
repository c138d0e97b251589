"""The e-mail events every engagement rollup reads (content.email_events), extracted and counted
at the finest grain the rollups share: tenant, campaign, step and the tenant's local day.

Incremental by seq. Each event's seq is taken when its row is inserted, not when it commits,
so a run can see seq 101 committed while 100 is still in flight. The watermark remembers such
holes (for `late_commit_seconds`) and the next run reads them, so an event is counted exactly
once whatever order transactions commit in (sql/analytics_tables.sql, pipeline_watermarks).

Definitions (docs/analytics.md): sent = accepted by the receiving server; delivered = sent −
hard bounces; opened = distinct messages with a human open (or a human click) that day;
clicked = distinct messages with a human click that day; repeat opens and clicks raise
`opens_total` and `clicks_total`; machine opens and clicks (proxies, scanners) only
`machine_opens` and `machine_clicks`; bounced = hard bounces, soft ones apart."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import polars as pl

from models.sqlfiles import statement
from pipelines.runtime import Run, Watermark, execute, fetch, ingest

__all__ = ["Watermark"]

log = logging.getLogger("penguinmails.pipelines")
SQL = "pipelines.sql"
CHUNK = 1_000_000  # seqs per extract: bounds a run's memory, whatever the backlog
MAX_HOLES = 100_000  # the newest gaps kept as holes; older ones are taken as rolled back
KINDS = ("SENT", "OPEN", "CLICK", "REPLY", "BOUNCE", "COMPLAINT", "UNSUBSCRIBE")
GRAIN = ("tenant", "campaign", "step", "day")
COUNTS = (
    "sent",
    "delivered",
    "opened",
    "opens_total",
    "clicked",
    "clicks_total",
    "machine_opens",
    "machine_clicks",
    "replied",
    "bounced",
    "soft_bounced",
    "complained",
    "unsubscribed",
    "first_opened",
    "first_clicked",
)
NIL = bytes(16)  # the nil UUID: no campaign


@dataclass
class Batch:
    """Counted events at the shared grain (GRAIN + COUNTS, tenants and campaigns by the codes
    the run's Keys gave them), and how many rows were read."""

    counts: pl.DataFrame
    read: int
    skipped: int


ALL_CAMPAIGNS = 0  # the code of the nil UUID: a tenant-wide row
CODE = pl.UInt32


class Keys:
    """Small integer codes for the tenants and campaigns of a run, given as they are first
    seen. A run's frames carry the codes instead of 16-byte uuids: a group or join on them
    costs a fraction, and a rebuild's partial counts take half the memory. Each tenant comes
    with its time zone, read from the OLTP tier when the tenant is first seen."""

    def __init__(self, run: Run) -> None:
        self._run = run
        self.tenants = pl.DataFrame(schema={"tenant": pl.Binary, "code": CODE, "zone": pl.String})
        self.campaigns = pl.DataFrame({"campaign": [NIL], "code": [ALL_CAMPAIGNS]},
                                      schema={"campaign": pl.Binary, "code": CODE})  # fmt: skip

    def encode(self, frame: pl.DataFrame) -> pl.DataFrame:
        """`frame` with its tenant (and campaign, when it has one) replaced by their codes."""
        self.tenants = _grow(self.tenants, frame, "tenant", lambda t: tenant_zones(self._run, t))
        frame = _swap(frame, self.tenants.drop("zone"), "tenant")
        if "campaign" in frame.columns:
            self.campaigns = _grow(self.campaigns, frame, "campaign")
            frame = _swap(frame, self.campaigns, "campaign")
        return frame

    def decode(self, frame: pl.DataFrame) -> pl.DataFrame:
        """`frame` with the uuids back in place of the codes (what the tables store)."""
        frame = _swap(frame, self.tenants.select(code="tenant", tenant="code"), "tenant")
        if "campaign" in frame.columns:
            frame = _swap(
                frame, self.campaigns.select(code="campaign", campaign="code"), "campaign"
            )
        return frame

    def zones(self) -> pl.DataFrame:
        """Each coded tenant's time zone (tenant = its code)."""
        return self.tenants.select(tenant="code", zone="zone")


def _grow(
    book: pl.DataFrame,
    frame: pl.DataFrame,
    column: str,
    extra: Callable[[pl.Series], pl.DataFrame] | None = None,
) -> pl.DataFrame:
    """`book` with a code for each value of `frame[column]` it had none for (and the columns
    `extra` gives for the new values)."""
    new = frame.select(pl.col(column).drop_nulls().unique()).join(book, on=column, how="anti")
    if new.is_empty():
        return book
    new = new.with_columns(code=pl.int_range(book.height, book.height + new.height, dtype=CODE))
    if extra is not None:
        new = new.join(extra(new[column]), on=column, how="left")
    return pl.concat([book, new.select(book.columns)])


def _swap(frame: pl.DataFrame, book: pl.DataFrame, column: str) -> pl.DataFrame:
    """`frame[column]` replaced by what `book` maps it to (book: column → code), in place."""
    order = frame.columns
    return (
        frame.join(book, on=column, how="left", maintain_order="left")
        .drop(column)
        .rename({"code": column})
        .select(order)
    )


def _uuid_array(values: pl.Series) -> str:
    """A uuid[] literal of 16-byte values (hex digits only: safe to write into a statement)."""
    return "'{" + ",".join(values.bin.encode("hex").to_list()) + "}'::uuid[]"


# --- extract ---------------------------------------------------------------------------------


def new_events(run: Run, extract: str = "email_events") -> Iterator[pl.DataFrame]:
    """The events no earlier run counted, chunk by chunk; moves `run.watermark` past them.
    `extract` names the statement that reads them ($1 < seq <= $2): a rollup that needs other
    columns brings its own, and must return every seq in the range (the holes are the seqs it
    does not see)."""
    mark = run.watermark
    content = run.source("content")
    last = fetch(content, statement(SQL, "last_event_seq")).item()
    sql = statement(SQL, extract)
    bounds = [(lo, min(lo + CHUNK, last)) for lo in range(mark.last_seq, last, CHUNK)]
    taken: list[pl.Series] = []
    # The next chunk is read while this one is counted: the database and Polars work at once.
    with ThreadPoolExecutor(1) as reader:
        ahead = reader.submit(fetch, content, sql, bounds[0]) if bounds else None
        for n in range(len(bounds)):
            assert ahead is not None
            chunk = ahead.result()
            ahead = (
                reader.submit(fetch, content, sql, bounds[n + 1]) if n + 1 < len(bounds) else None
            )
            fresh = chunk.filter(~mark.counted(pl.col("seq")))
            taken.append(fresh["seq"])
            yield fresh
    seqs = pl.concat(taken) if taken else pl.Series("seq", [], pl.Int64)
    run.watermark = advance(mark, seqs, run.settings.pipeline_late_commit_seconds)


def events_since(run: Run, day: date, extract: str = "email_events_since") -> pl.DataFrame:
    """Every counted event of the tenants' days from `day` on (a rebuild from a date), read by
    the statement `extract` (occurred_at >= $1, seq <= $2)."""
    earliest = datetime.combine(day - timedelta(days=1), datetime.min.time())  # UTC+14 first
    frame = fetch(
        run.source("content"),
        statement(SQL, extract),
        (earliest.isoformat() + "+00:00", run.watermark.max_seq),
    )
    return frame.filter(run.watermark.counted(pl.col("seq")))


def advance(mark: Watermark, taken: pl.Series, ttl: float, *, now: float | None = None):
    """The watermark once the events `taken` are counted: the holes they filled and the holes
    older than `ttl` (taken as rolled back: no transaction stays open that long) are closed,
    the gaps seen below the new max_seq are opened, last_seq sits just below the oldest hole."""
    now = time.time() if now is None else now
    filled = set(taken.filter(taken <= mark.max_seq).to_list())
    holes = {s: t for s, t in mark.holes.items() if s not in filled and now - t < ttl}
    above = taken.filter(taken > mark.max_seq).sort()
    top = int(above.max()) if len(above) else mark.max_seq  # type: ignore[arg-type]
    holes.update(dict.fromkeys(_gaps(above, mark.max_seq, top), now))
    return Watermark(
        last_seq=(min(holes) - 1) if holes else top, max_seq=top, holes=holes, last_at=None
    )


def _gaps(seqs: pl.Series, after: int, upto: int) -> list[int]:
    """The numbers in (after, upto] missing from the sorted `seqs`, the newest MAX_HOLES."""
    if upto <= after:
        return []
    ends = seqs.cast(pl.Int64)
    starts = pl.concat([pl.Series([after], dtype=pl.Int64), ends[:-1]])
    gaps = pl.DataFrame({"start": starts, "end": ends}).filter(pl.col("end") - pl.col("start") > 1)
    missing: list[int] = []
    for start, end in reversed(gaps.rows()):  # the newest first
        missing.extend(range(end - 1, start, -1))
        if len(missing) >= MAX_HOLES:
            return missing[:MAX_HOLES]
    return missing


# --- transform -------------------------------------------------------------------------------


def tenant_zones(run: Run, tenants: pl.Series) -> pl.DataFrame:
    """(tenant, zone) of `tenants` (16-byte ids), from the OLTP tier: only those a run sees, not
    every tenant each tick. A tenant not found there has no zone (counted in UTC)."""
    found = fetch(
        run.source("oltp"),
        statement(SQL, "tenant_zones").replace("$1", _uuid_array(tenants.unique())),
    )
    return tenants.unique().to_frame().join(found, on="tenant", how="left")


def with_local_day(events: pl.DataFrame, zones: pl.DataFrame) -> pl.DataFrame:
    """Adds `day`: the date the event happened on in its tenant's time zone (DST included). A
    zone Polars does not know counts as UTC rather than stopping every tenant's run."""
    joined = events.join(zones, on="tenant", how="left").with_columns(
        pl.col("zone").fill_null("UTC")
    )
    parts = [
        part.with_columns(day=_local_date(pl.col("at"), zone)).drop("zone")
        for (zone,), part in joined.partition_by("zone", as_dict=True).items()
    ]
    if not parts:
        return events.with_columns(day=pl.lit(None, pl.Date))
    return pl.concat(parts)


def _local_date(at: pl.Expr, zone: str) -> pl.Expr:
    try:
        pl.select(pl.lit(0).cast(pl.Datetime("us", "UTC")).dt.convert_time_zone(zone))
    except pl.exceptions.PolarsError:
        log.warning("unknown time zone %r: its tenants' days are UTC days", zone)
        zone = "UTC"
    return at.dt.convert_time_zone(zone).dt.date()


def well_formed(events: pl.DataFrame) -> pl.Expr:
    """A row the rollups can count: a known kind, the message it is about, and for a bounce
    whether it was hard."""
    return (
        pl.col("kind").is_in(KINDS)
        & pl.col("has_message")
        & ((pl.col("kind") != "BOUNCE") | pl.col("hard").is_not_null())
    )


def count(events: pl.DataFrame, prior: pl.DataFrame) -> pl.DataFrame:
    """The counts of `events` at GRAIN. `prior` holds the human opens and clicks counted before
    (tenant, message, day, kind): a message opened again on a day it was already counted as
    opened adds to opens_total only, and one opened before on any day adds nothing to
    first_opened."""
    return finish(partial(events), prior)


@dataclass
class Partial:
    """Events reduced as far as they can be before all of a run's are in: the additive counts
    at GRAIN, and each message's human touches (opens and clicks) per GRAIN with the first
    moment. The partials of chunks combine into the partial of them all."""

    totals: pl.DataFrame
    touches: pl.DataFrame

    @staticmethod
    def combine(parts: list[Partial]) -> Partial:
        if len(parts) == 1:
            return parts[0]
        return Partial(
            pl.concat([p.totals for p in parts]).group_by(GRAIN).agg(pl.all().sum()),
            pl.concat([p.touches for p in parts])
            .group_by(*GRAIN, "message", "click")
            .agg(pl.col("at").min()),
        )


def partial(events: pl.DataFrame) -> Partial:
    k, human = pl.col("kind"), ~pl.col("machine")
    totals = events.group_by(GRAIN).agg(
        # A refusal during the SMTP transaction is a send that bounced at once.
        sent=((k == "SENT") | ((k == "BOUNCE") & pl.col("refused"))).sum(),
        opens_total=((k == "OPEN") & human).sum(),
        clicks_total=((k == "CLICK") & human).sum(),
        machine_opens=((k == "OPEN") & ~human).sum(),
        machine_clicks=((k == "CLICK") & ~human).sum(),
        replied=(k == "REPLY").sum(),
        bounced=((k == "BOUNCE") & pl.col("hard")).sum(),
        soft_bounced=((k == "BOUNCE") & ~pl.col("hard")).sum(),
        complained=(k == "COMPLAINT").sum(),
        unsubscribed=(k == "UNSUBSCRIBE").sum(),
    )
    touches = (
        events.filter(k.is_in(("OPEN", "CLICK")) & human)
        .group_by(*GRAIN, "message", click=k == "CLICK")
        .agg(pl.col("at").min())
    )
    return Partial(totals, touches)


def finish(events: Partial, prior: pl.DataFrame) -> pl.DataFrame:
    """The counts at GRAIN of the events `events` reduced, given the `prior` touches."""
    touches = events.touches
    clicks, prior_clicks = touches.filter(pl.col("click")), prior.filter(pl.col("kind") == "CLICK")
    parts = [
        _per_day(touches, prior, "opened"),
        _per_day(clicks, prior_clicks, "clicked"),
        _first_ever(touches, prior, "first_opened"),
        _first_ever(clicks, prior_clicks, "first_clicked"),
    ]
    out = events.totals
    for part in parts:
        out = out.join(part, on=GRAIN, how="full", coalesce=True, nulls_equal=True)
    out = out.with_columns(
        pl.col(c).fill_null(0).cast(pl.Int64) for c in COUNTS if c != "delivered"
    ).with_columns(delivered=pl.col("sent") - pl.col("bounced"))
    return out.select(*GRAIN, *COUNTS)


def _per_day(touches: pl.DataFrame, prior: pl.DataFrame, name: str) -> pl.DataFrame:
    """Per GRAIN, the messages touched on a day they had not been touched on before."""
    firsts = touches.unique([*GRAIN, "message"]).join(
        prior.select("tenant", "message", "day").unique(),
        on=["tenant", "message", "day"],
        how="anti",
    )
    return firsts.group_by(GRAIN).agg(pl.len().alias(name))


def _first_ever(touches: pl.DataFrame, prior: pl.DataFrame, name: str) -> pl.DataFrame:
    """Per GRAIN, the messages whose first touch ever falls on that day. A touch that arrives
    late but happened on an earlier day than the first one counted moves the message there
    (−1 on the old day, +1 on the new), so the order events arrive in never matters."""
    firsts = touches.sort("at").unique(["tenant", "message"], keep="first", maintain_order=True)
    earlier = prior.group_by("tenant", "message").agg(pl.col("day").min().alias("prior_day"))
    firsts = firsts.join(earlier, on=["tenant", "message"], how="left").filter(
        pl.col("prior_day").is_null() | (pl.col("day") < pl.col("prior_day"))
    )
    gained = firsts.group_by(GRAIN).agg(pl.len().cast(pl.Int64).alias(name))
    lost = (
        firsts.filter(pl.col("prior_day").is_not_null())
        .with_columns(day=pl.col("prior_day"))
        .group_by(GRAIN)
        .agg((-pl.len().cast(pl.Int64)).alias(name))
    )
    return pl.concat([gained, lost]).group_by(GRAIN).agg(pl.col(name).sum())


def prior_touches(run: Run, events: pl.DataFrame, keys: Keys) -> pl.DataFrame:
    """The human opens and clicks earlier runs counted, of the messages `events` touch (rows
    with a `message`: human touches, raw or reduced; tenants by their codes)."""
    mark = run.watermark
    if mark.max_seq == 0:  # nothing counted yet (a full rebuild)
        return _no_touches()
    if "kind" in events.columns:
        events = events.filter(pl.col("kind").is_in(("OPEN", "CLICK")) & ~pl.col("machine"))
    touched = events.select("tenant", "message").unique()
    if touched.is_empty():
        return _no_touches()
    content = run.source("content")
    ingest(content, keys.decode(touched), "batch_messages")
    prior = fetch(content, statement(SQL, "prior_human_touches"), (mark.max_seq,))
    prior = keys.encode(prior.filter(mark.counted(pl.col("seq"))))
    return with_local_day(prior, keys.zones()).select("tenant", "message", "day", "kind")


def count_new(run: Run, keys: Keys) -> Batch:
    """Everything no earlier run counted, counted at GRAIN; moves `run.watermark`. Each chunk
    is reduced to a Partial as it comes, so a rebuild of 10 M events never holds them all."""
    parts: list[Partial] = []
    read, skipped = 0, 0
    before = run.watermark
    for chunk in new_events(run):
        read += len(chunk)
        good = keys.encode(chunk.filter(well_formed(chunk)).drop("has_message"))
        skipped += len(chunk) - len(good)
        parts.append(partial(with_local_day(good, keys.zones())))
        del chunk, good
    if not parts or all(p.totals.is_empty() for p in parts):
        return Batch(_empty_counts(), read, skipped)
    reduced = Partial.combine(parts)
    del parts
    after, run.watermark = run.watermark, before  # the prior lookup reads as of before
    prior = prior_touches(run, reduced.touches, keys)
    run.watermark = after
    return Batch(finish(reduced, prior), read, skipped)


def _empty_counts() -> pl.DataFrame:
    schema = {"tenant": CODE, "campaign": CODE, "step": pl.Int16, "day": pl.Date}
    return pl.DataFrame(schema={**schema, **dict.fromkeys(COUNTS, pl.Int64)})


def count_since(run: Run, day: date, keys: Keys) -> pl.DataFrame:
    """The counts of every counted event of the days from `day` on, from scratch (the rows of
    those days were deleted): a rebuild from a date. Touches before `day` are the prior ones."""
    events = events_since(run, day)
    good = keys.encode(events.filter(well_formed(events)).drop("has_message"))
    local = with_local_day(good, keys.zones()).filter(pl.col("day") >= day)
    prior = prior_touches(run, local, keys).filter(pl.col("day") < day)
    return count(local, prior)


def _no_touches() -> pl.DataFrame:
    schema = {"tenant": CODE, "message": pl.Binary, "day": pl.Date, "kind": pl.String}
    return pl.DataFrame(schema=schema)


def refresh(
    run: Run,
    table: str,
    transform: Callable[[pl.DataFrame], pl.DataFrame],
    upsert: str,
    *,
    full: bool = False,
    since: date | None = None,
) -> None:
    """A rollup of the e-mail events brought up to date: `--full` empties `table` and counts
    everything again, `--since` empties and recounts the days from a date; then the events no
    earlier run counted are added. `transform` takes the counts at GRAIN to the table's grain;
    `upsert` names the statement that adds them. Tenants and campaigns are coded (Keys) until
    the rows are staged: `transform` sees codes, ALL_CAMPAIGNS for the tenant-wide rows."""
    if full:
        execute(run.olap, f"DELETE FROM analytics.{table}")
        run.watermark = Watermark()
    keys = Keys(run)
    if since is not None:
        execute(run.olap, f"DELETE FROM analytics.{table} WHERE day >= $1::date", (since,))
        run.upsert(keys.decode(transform(count_since(run, since, keys))), SQL, upsert)
    batch = count_new(run, keys)
    run.result.rows_read += batch.read
    run.result.rows_skipped += batch.skipped
    run.upsert(keys.decode(transform(batch.counts)), SQL, upsert)
    if full:  # the planner's picture of the table is the old one until the next ANALYZE
        execute(run.olap, f"ANALYZE analytics.{table}")
