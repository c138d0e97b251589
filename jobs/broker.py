"""The Dramatiq broker over Redis, with the middleware the queue relies on.

Retries are not Dramatiq's: a failed job is rescheduled in Postgres (so it survives Redis
losing its data), hence no Retries middleware. Time limits, graceful shutdown, asyncio actors
and, when a port is set, Prometheus metrics are Dramatiq's own.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO, ShutdownNotifications, TimeLimit

from penguinmails.settings import Settings


def batch_lease_seconds(settings: Settings, size: int) -> float:
    """How long a started batch of `size` jobs may run: each wave of `job_concurrency` jobs up
    to its timeout, plus a margin. The lease of running jobs, and the message's time limit."""
    waves = -(-size // settings.job_concurrency)
    return waves * settings.job_timeout_seconds + 30


TIERS = ("high", "normal", "low")


def tier_of(priority: int) -> str:
    return "high" if priority <= 50 else "normal" if priority <= 150 else "low"


def build_broker(settings: Settings) -> RedisBroker:
    middleware = [
        # A backstop per message, past the batch's own lease (the jobs have their own timeouts).
        TimeLimit(
            time_limit=int(batch_lease_seconds(settings, settings.queue_jobs_per_message) * 1000)
        ),
        ShutdownNotifications(),
        AsyncIO(),
    ]
    if settings.worker_metrics_port:
        from dramatiq.middleware.prometheus import Prometheus

        middleware.append(Prometheus())  # port: dramatiq_prom_port, set by `penguinmails worker`
    broker = RedisBroker(
        url=settings.redis_url, middleware=middleware, namespace=settings.redis_namespace
    )
    dramatiq.set_broker(broker)
    return broker
