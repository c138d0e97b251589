"""The module Dramatiq's worker loads (`penguinmails worker`): the broker, the handlers, and
one actor per priority tier, each running the batches the queuer packed for it."""

from __future__ import annotations

import asyncio
import importlib

import dramatiq
from dramatiq.middleware import Middleware

from jobs.broker import TIERS, build_broker
from jobs.runner import Runner
from penguinmails import logs
from penguinmails.settings import get_settings

# The actors' event loop (Dramatiq's AsyncIO middleware makes it) is uvloop's where it exists:
# the send jobs spend much of their time in socket I/O, which uvloop does in C.
try:
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
except ImportError:  # e.g. Windows
    pass


class StopJobsOnShutdown(Middleware):
    """On SIGTERM, before Dramatiq waits for its threads: the runner cuts its jobs short, each
    recording what it did, so a shutdown takes seconds, loses nothing and uses no attempt."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def before_worker_shutdown(self, broker, worker) -> None:
        self.runner.stop()


settings = get_settings()
logs.configure(settings, "worker")
broker = build_broker(settings)
runner = Runner(settings)
broker.add_middleware(StopJobsOnShutdown(runner))
for module in settings.job_modules:
    importlib.import_module(module)


def _tier_actor(tier: str):
    async def run_jobs(refs: list[list]) -> None:
        await runner.run(refs)

    run_jobs.__name__ = f"run_{tier}"
    return dramatiq.actor(run_jobs, actor_name=f"run_{tier}", queue_name=tier)


actors = {tier: _tier_actor(tier) for tier in TIERS}
