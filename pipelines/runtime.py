"""What every pipeline shares: columnar connections to the tiers (ADBC), the run's transaction
on the OLAP tier with its advisory lock and watermark row, and the load (a temporary staging
table filled by ADBC's bulk ingest — COPY underneath — then one INSERT … ON CONFLICT).

A run holds one transaction on the OLAP tier from start to finish: it takes the pipeline's
advisory lock, reads the watermark, extracts and transforms, upserts the rows and moves the
watermark, and commits once. A run that fails or is killed commits nothing, so the watermark
and the rows never disagree."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl
from adbc_driver_postgresql import dbapi

from jobs.connections import system_dsn
from models.sqlfiles import statement
from penguinmails.settings import Settings, Tier

log = logging.getLogger("penguinmails.pipelines")


class Busy(Exception):
    """Another run of the pipeline holds its lock."""


@dataclass
class Watermark:
    """A pipeline's position (see sql/analytics_tables.sql, pipeline_watermarks)."""

    last_seq: int = 0
    max_seq: int = 0
    holes: dict[int, float] = field(default_factory=dict)  # seq -> first seen (epoch seconds)
    last_at: datetime | None = None

    def counted(self, seq: pl.Expr) -> pl.Expr:
        """Whether an event with this seq was counted by an earlier run."""
        return (seq <= self.max_seq) & ~seq.is_in(list(self.holes))

    def describe(self) -> str:
        if self.last_at is not None:
            return self.last_at.isoformat(timespec="seconds")
        holes = f" ({len(self.holes)} open)" if self.holes else ""
        return f"seq {self.max_seq}{holes}"


@dataclass
class Result:
    pipeline: str
    rows_read: int = 0
    rows_written: int = 0
    rows_skipped: int = 0  # malformed source rows, counted and left out
    seconds: float = 0.0
    watermark: str = ""


def connect(settings: Settings, tier: Tier) -> dbapi.Connection:
    """A columnar connection to a tier as the system role (each tier through its own DSN)."""
    return dbapi.connect(system_dsn(settings, tier))


# Connections kept between runs: opening one costs ~70 ms here (the driver reads the type
# catalogue), more than a whole tick's work. A run borrows them and gives them back idle.
IDLE_PER_TIER = 2
_idle: dict[tuple[Tier, str], list[dbapi.Connection]] = defaultdict(list)
_idle_lock = threading.Lock()


def borrow(settings: Settings, tier: Tier) -> dbapi.Connection:
    """An idle connection to `tier` that still answers, or a new one."""
    dsn = system_dsn(settings, tier)
    idle = _idle[tier, dsn]  # per tier: a run holds one of each, whether they share a DSN or not
    while True:
        with _idle_lock:
            conn = idle.pop() if idle else None
        if conn is None:
            return dbapi.connect(dsn)
        try:
            execute(conn, "SELECT 1")
            return conn
        except Exception:  # the server closed it (restart, idle timeout): try the next one
            _close(conn)


def give_back(settings: Settings, tier: Tier, conn: dbapi.Connection) -> None:
    """Ends the connection's transaction and keeps it for the next run (or closes it)."""
    try:
        conn.rollback()
    except Exception:
        _close(conn)
        return
    idle = _idle[tier, system_dsn(settings, tier)]
    with _idle_lock:
        if len(idle) < IDLE_PER_TIER:
            idle.append(conn)
            return
    _close(conn)


def _abandon(conn: dbapi.Connection) -> None:
    """Rolls back and closes a connection whose run failed (either step may fail too)."""
    try:
        conn.rollback()
    except Exception:
        log.debug("rolling back a failed run failed", exc_info=True)
    _close(conn)


def _close(conn: dbapi.Connection) -> None:
    try:
        conn.close()
    except Exception:
        log.debug("closing a broken connection failed", exc_info=True)


def fetch(conn: dbapi.Connection, sql: str, parameters: tuple = ()) -> pl.DataFrame:
    """The rows of `sql` as a DataFrame, through Arrow. Integer parameters are written into the
    statement: ADBC's driver reads a statement without parameters through binary COPY, and one
    with them row by row (30 % slower on the extracts here)."""
    if parameters and all(type(p) is int for p in parameters):
        for n, value in reversed(list(enumerate(parameters, start=1))):
            sql = sql.replace(f"${n}", str(value))
        parameters = ()
    with conn.cursor() as cur:
        cur.execute(sql, parameters=parameters or None)
        # Copied into memory of Polars' own (rechunk): a frame that shares the driver's record
        # batches keeps every column of a batch alive while any one of them is kept (a run's
        # seqs held ~85 MB per million events).
        return pl.from_arrow(cur.fetch_arrow_table(), rechunk=True)  # type: ignore[return-value]


def execute(conn: dbapi.Connection, sql: str, parameters: tuple = ()) -> int:
    with conn.cursor() as cur:
        cur.execute(sql, parameters=parameters or None)
        return cur.rowcount


# Column types of the temporary tables frames are ingested into. Binary columns are uuids (the
# 16 bytes uuid_send gave): COPY's binary format of a uuid is those 16 bytes.
PG_TYPES = {
    pl.Binary: "uuid", pl.Int64: "bigint", pl.Int32: "integer", pl.Int16: "smallint",
    pl.UInt32: "bigint", pl.Float64: "double precision", pl.Date: "date",
    pl.String: "text", pl.Boolean: "boolean",
}  # fmt: skip


INGEST_ROWS = 500_000


def ingest(conn: dbapi.Connection, frame: pl.DataFrame, table: str) -> str:
    """`frame` in a temporary table `table` of the connection's session (replacing one of that
    name), by bulk ingest (binary COPY); its name."""
    columns = ", ".join(f"{name} {_pg_type(dtype)}" for name, dtype in frame.schema.items())
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS pg_temp.{table}")
        cur.execute(f"CREATE TEMPORARY TABLE {table} ({columns})")
        # In slices: Arrow's copy of the frame is made one slice at a time.
        for part in frame.iter_slices(INGEST_ROWS):
            cur.adbc_ingest(table, part.to_arrow(), mode="append", db_schema_name="pg_temp")
    return table


def _pg_type(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.Datetime):
        return "timestamptz" if dtype.time_zone else "timestamp"
    return PG_TYPES[dtype.base_type()]


class Run:
    """One run of one pipeline: the OLAP transaction, the watermark, and the connections to
    the source tiers (opened on demand, closed with the run)."""

    def __init__(self, settings: Settings, name: str, olap: dbapi.Connection) -> None:
        self.settings = settings
        self.name = name
        self.olap = olap
        self.started = datetime.now(UTC)
        self.watermark = Watermark()
        self.result = Result(name)
        self._sources: dict[Tier, dbapi.Connection] = {}

    def source(self, tier: Tier) -> dbapi.Connection:
        if tier not in self._sources:
            self._sources[tier] = borrow(self.settings, tier)
        return self._sources[tier]

    def release_sources(self, *, broken: bool = False) -> None:
        for tier, conn in self._sources.items():
            if broken:
                _close(conn)
            else:
                give_back(self.settings, tier, conn)
        self._sources.clear()

    def stage(self, frame: pl.DataFrame, table: str = "staging") -> str:
        """`frame` in a temporary table of the OLAP session (replaced by the next); its name."""
        return ingest(self.olap, frame, table)

    def upsert(self, frame: pl.DataFrame, sql_file: str, name: str) -> int:
        """Stages `frame` and runs the named INSERT … SELECT … FROM staging ON CONFLICT."""
        if frame.is_empty():
            return 0
        self.stage(frame)
        written = execute(self.olap, statement(sql_file, name))
        self.result.rows_written += max(written, 0)
        return written


@contextmanager
def run(settings: Settings, name: str, *, wait: bool = False) -> Iterator[Run]:
    """The transaction of one run. `wait=False` (the scheduler) gives up with Busy when another
    run holds the pipeline's lock; `wait=True` (the CLI) queues behind it. The watermark the
    run leaves (`run.watermark`) is written with its rows, in the same commit."""
    began = time.monotonic()
    olap = borrow(settings, "analytics")
    current = Run(settings, name, olap)
    broken = True
    try:
        lock = "lock_pipeline" if wait else "try_lock_pipeline"
        locked = fetch(olap, statement("pipelines.sql", lock), (name,)).item()
        if locked is False:
            raise Busy(name)
        execute(olap, statement("pipelines.sql", "ensure_watermark"), (name,))
        current.watermark = _read_watermark(olap, name)
        yield current
        current.result.seconds = time.monotonic() - began
        current.result.watermark = current.watermark.describe()
        _write_watermark(olap, current)
        olap.commit()
        broken = False
    except Busy:
        broken = False
        raise
    except BaseException as error:
        # The run's transaction ends first: it holds the watermark row (FOR UPDATE, or
        # inserted and not committed on a first run), which recording the failure updates.
        _abandon(olap)
        _record_failure(settings, name, error)
        raise
    finally:
        # After a failure the connections are closed, not kept: whatever broke stays behind.
        current.release_sources(broken=broken)
        if not broken:
            give_back(settings, "analytics", olap)


def _read_watermark(olap: dbapi.Connection, name: str) -> Watermark:
    row = fetch(olap, statement("pipelines.sql", "read_watermark"), (name,)).row(0, named=True)
    holes = {int(k): float(v) for k, v in _json(row["holes"]).items()}
    return Watermark(row["last_seq"], row["max_seq"], holes, row["last_at"])


def _write_watermark(olap: dbapi.Connection, current: Run) -> None:
    w, r = current.watermark, current.result
    execute(
        olap,
        statement("pipelines.sql", "write_watermark"),
        (
            current.name, w.last_seq, w.max_seq, json.dumps({str(k): v for k, v in w.holes.items()}),
            w.last_at, r.rows_read, r.rows_written, r.rows_skipped, r.seconds,
        ),
    )  # fmt: skip


def _record_failure(settings: Settings, name: str, error: BaseException) -> None:
    """A failed run leaves its watermark where it was; its reason is kept for `status`."""
    reason = f"{type(error).__name__}: {error}"[:2000]
    log.error("pipeline %s failed: %s", name, reason)
    try:
        with connect(settings, "analytics") as conn:
            execute(conn, statement("pipelines.sql", "record_failure"), (name, reason))
            conn.commit()
    except Exception:
        log.exception("could not record the failure of pipeline %s", name)


def _json(value: Any) -> dict:
    return value if isinstance(value, dict) else json.loads(value or "{}")


@dataclass
class Status:
    pipeline: str
    watermark: str
    last_ok: str | None
    lag_seconds: float | None  # since the last successful run
    last_error: str | None


def status(settings: Settings) -> list[Status]:
    """Every pipeline that has run, with its position and how far behind it is."""
    with connect(settings, "analytics") as conn:
        rows = fetch(conn, statement("pipelines.sql", "pipeline_status"))
    now = datetime.now(UTC)
    out = []
    for row in rows.iter_rows(named=True):
        mark = Watermark(
            row["last_seq"], row["max_seq"], {int(k): v for k, v in _json(row["holes"]).items()},
            row["last_at"],
        )  # fmt: skip
        ok = row["last_ok_at"]
        last_ok = ok.isoformat(timespec="seconds") if ok else None
        lag = (now - ok).total_seconds() if ok else None
        out.append(Status(row["pipeline"], mark.describe(), last_ok, lag, row["last_error"]))
    return out
