"""The module Dramatiq's worker loads (`penguinmails worker`): the broker, the handlers, and
one actor per priority tier, each running the batches the queuer packed for it."""

from __future__ import annotations

import importlib

import dramatiq

from jobs.broker import TIERS, build_broker
from jobs.runner import Runner
from penguinmails.settings import get_settings

settings = get_settings()
broker = build_broker(settings)
for module in settings.job_modules:
    importlib.import_module(module)
runner = Runner(settings)


def _tier_actor(tier: str):
    async def run_jobs(refs: list[list]) -> None:
        await runner.run(refs)

    run_jobs.__name__ = f"run_{tier}"
    return dramatiq.actor(run_jobs, actor_name=f"run_{tier}", queue_name=tier)


actors = {tier: _tier_actor(tier) for tier in TIERS}
