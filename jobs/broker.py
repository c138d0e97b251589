"""The Dramatiq broker over Redis, with the middleware the queue relies on.

Retries are not Dramatiq's: a failed job is rescheduled in Postgres (so it survives Redis
losing its data), hence no Retries middleware. Time limits and graceful shutdown are the
runner's own (jobs/runner.py), so that a job cut short records what it did; Dramatiq's
TimeLimit stays as a backstop well past them. Asyncio actors and, when a port is set,
Prometheus metrics are Dramatiq's.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO, TimeLimit

from penguinmails.settings import Settings

BACKSTOP_MARGIN_SECONDS = 120

# The priority tiers, each a Dramatiq queue: its name and its (inclusive) priority range.
TIER_PRIORITIES = {"high": (-32768, 50), "normal": (51, 150), "low": (151, 32767)}  # smallint
TIERS = tuple(TIER_PRIORITIES)


def tier_of(priority: int) -> str:
    return next(tier for tier, (low, high) in TIER_PRIORITIES.items() if low <= priority <= high)


def build_broker(settings: Settings) -> RedisBroker:
    # A message's jobs run job_concurrency at once, each up to its timeout.
    waves = -(-settings.queue_jobs_per_message // settings.job_concurrency)
    backstop = waves * settings.job_timeout_seconds + BACKSTOP_MARGIN_SECONDS
    middleware = [TimeLimit(time_limit=int(backstop * 1000)), AsyncIO()]
    if settings.worker_metrics_port:
        from dramatiq.middleware.prometheus import Prometheus

        middleware.append(Prometheus())  # port: dramatiq_prom_port, set by `penguinmails worker`
    broker = RedisBroker(
        url=settings.redis_url, middleware=middleware, namespace=settings.redis_namespace
    )
    dramatiq.set_broker(broker)
    return broker
