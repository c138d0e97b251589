"""The platform's Prometheus metrics (prometheus-client), and what the API's `/metrics` shows.

Two registries. `API` holds what the API process measures itself, in memory. `WORK` holds what
the workers and `inbound` record (job wait and run times, sends, bounces, complaints): those
processes run with prometheus-client's multiprocess directory (`metrics_dir`, set as
PROMETHEUS_MULTIPROC_DIR by their commands, shared with Dramatiq's Prometheus middleware), and
the API's `/metrics` reads that directory, so one scrape of the API shows the whole host. The
queue's and the pipelines' gauges are read from PostgreSQL at scrape time, cached briefly; the
websocket figures from the API's live hub.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import text

from jobs.broker import TIERS, tier_of
from models.sessions import Database
from models.sqlfiles import statement

API = CollectorRegistry()
WORK = CollectorRegistry()

HTTP_REQUEST_DURATION = Histogram(
    "penguinmails_http_request_duration_seconds",
    "HTTP requests to the API, by method, route template and status.",
    ["method", "route", "status"],
    registry=API,
)
GRAPHQL_OPERATION_DURATION = Histogram(
    "penguinmails_graphql_operation_duration_seconds",
    "GraphQL operations, by operation name (anonymous when unnamed).",
    ["operation"],
    registry=API,
)
# Jobs wait seconds to hours (a backoff, a full rate limit): the buckets reach an hour.
JOB_WAIT = Histogram(
    "penguinmails_job_wait_seconds",
    "From a job's run_at to its start in a worker, by job kind.",
    ["kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600, 1800, 3600),
    registry=WORK,
)
JOB_RUN = Histogram(
    "penguinmails_job_run_seconds",
    "A job's run in a worker, by job kind and outcome (succeeded, failed, deferred, dead).",
    ["kind", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
    registry=WORK,
)
SENDS = Counter("penguinmails_sends", "Messages sent (accepted by the SMTP server).", registry=WORK)
BOUNCES = Counter("penguinmails_bounces", "Bounces recorded (hard and soft).", registry=WORK)
COMPLAINTS = Counter("penguinmails_complaints", "Complaints recorded.", registry=WORK)

# Operation names come from clients: past this many distinct ones, new names count as "other".
MAX_OPERATION_NAMES = 200
_operations: set[str] = set()


def operation_label(name: str | None) -> str:
    if not name:
        return "anonymous"
    if name in _operations:
        return name
    if len(_operations) >= MAX_OPERATION_NAMES or len(name) > 100:
        return "other"
    _operations.add(name)
    return name


class ScrapeGauges(Collector):
    """penguinmails_queue_jobs (tier, status) and penguinmails_pipeline_lag_seconds (pipeline):
    two grouped reads, at most once per `cache_seconds` whatever the number of scrapers."""

    # ready: queued or failed with run_at passed; scheduled: run_at to come.
    STATUSES = ("ready", "scheduled", "dispatched", "running", "dead")

    def __init__(self, cache_seconds: float) -> None:
        self.cache_seconds = cache_seconds
        self.read_at = float("-inf")
        self.jobs: dict[tuple[str, str], int] = {}
        self.lags: dict[str, float] = {}

    async def refresh(self, db: Database) -> None:
        if time.monotonic() - self.read_at < self.cache_seconds:
            return
        async with db.system_session("queue") as session:
            rows = await session.execute(text(statement("metrics.sql", "jobs_by_priority_status")))
            jobs: dict[tuple[str, str], int] = defaultdict(int)
            for priority, status, count in rows:
                jobs[tier_of(priority), status] += count
        async with db.system_session("analytics") as session:
            rows = await session.execute(text(statement("metrics.sql", "pipeline_lags")))
            lags = {pipeline: lag for pipeline, lag in rows}
        self.jobs, self.lags, self.read_at = jobs, lags, time.monotonic()

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "penguinmails_queue_jobs",
            "Jobs in the durable queue, by tier and status (ready, scheduled, dispatched, "
            "running, dead).",
            labels=["tier", "status"],
        )
        for tier in TIERS:
            for status in self.STATUSES:
                jobs.add_metric([tier, status], self.jobs.get((tier, status), 0))
        yield jobs
        lag = GaugeMetricFamily(
            "penguinmails_pipeline_lag_seconds",
            "Seconds since each analytics pipeline's last successful run.",
            labels=["pipeline"],
        )
        for pipeline, seconds in sorted(self.lags.items()):
            lag.add_metric([pipeline], seconds)
        yield lag


class LiveClients(Collector):
    """penguinmails_websocket_clients and penguinmails_websocket_dropped_total, read at scrape
    time from the process's live hub (graphql_api/live.py: its `clients` and `dropped`)."""

    def __init__(self) -> None:
        self.hub: Any = None

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "penguinmails_websocket_clients", "Websocket clients connected to this API process.",
            value=self.hub.clients if self.hub is not None else 0,
        )  # fmt: skip
        yield CounterMetricFamily(
            "penguinmails_websocket_dropped",
            "Websocket clients dropped for falling behind their bounded queue.",
            value=self.hub.dropped if self.hub is not None else 0,
        )


class OtherProcesses(Collector):
    """The multiprocess directory's metrics (workers, inbound, Dramatiq's own), without those
    the API keeps in memory (a worker that imports this module leaves empty files of them)."""

    def __init__(self, directory: Path) -> None:
        self.collector = MultiProcessCollector(None, path=str(directory))
        self.own = {metric.name for metric in API.collect()}
        self.own |= {"penguinmails_websocket_clients", "penguinmails_websocket_dropped"}

    def collect(self) -> Iterator[Metric]:
        for metric in self.collector.collect():
            if metric.name not in self.own:
                yield metric


class Exposition:
    """The text `/metrics` answers with, for one API process."""

    def __init__(self, db: Database, cache_seconds: float, directory: Path | None) -> None:
        self.db = db
        self.gauges = ScrapeGauges(cache_seconds)
        self.live = LiveClients()
        self.scraped = CollectorRegistry()
        self.scraped.register(self.gauges)
        self.scraped.register(self.live)
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            self.others: CollectorRegistry = CollectorRegistry()
            self.others.register(OtherProcesses(directory))
        else:  # nothing but this process: its own (empty) work metrics keep the names listed
            self.others = WORK

    async def render(self, hub: Any = None) -> bytes:
        """`hub`: the process's live hub, when it has one."""
        await self.gauges.refresh(self.db)
        self.live.hub = hub
        return b"".join(generate_latest(r) for r in (API, self.scraped, self.others))
