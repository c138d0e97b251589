"""The baseline of scripts/bench_queue.py: plain Dramatiq over Redis with a no-op actor, loaded by
the Dramatiq CLI (`python -m dramatiq bench_queue_raw --path scripts`).

BENCH_RAW_MIDDLEWARE=default keeps Dramatiq's default middleware; `minimal` keeps only what a
worker needs to stop cleanly, which is the faster of the two here."""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import ShutdownNotifications

QUEUE = "bench"

middleware = (
    None if os.environ.get("BENCH_RAW_MIDDLEWARE") == "default" else [ShutdownNotifications()]
)
broker = RedisBroker(
    url=os.environ["REDIS_URL"],
    namespace=os.environ["PENGUINMAILS_REDIS_NAMESPACE"],
    middleware=middleware,
)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, actor_name="noop")
def noop() -> None:
    """Does nothing: what is measured is Dramatiq's and Redis's cost per message."""
