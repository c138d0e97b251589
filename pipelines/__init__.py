"""Polars pipelines that roll the transactional and content tiers into the OLAP tables, one
module per table (extract → transform → load, top to bottom). `run` runs one by name."""

from __future__ import annotations

from datetime import date
from types import ModuleType

from penguinmails.settings import Settings
from pipelines import (
    billing_analytics,
    campaign_analytics,
    daily_analytics,
    deliverability_daily,
    queue_health,
    runtime,
)

MODULES: dict[str, ModuleType] = {
    m.NAME: m
    for m in (
        daily_analytics,
        campaign_analytics,
        deliverability_daily,
        billing_analytics,
        queue_health,
    )
}
NAMES = tuple(MODULES)


def run(
    settings: Settings,
    name: str,
    *,
    full: bool = False,
    since: date | None = None,
    wait: bool = False,
) -> runtime.Result:
    """One run of pipeline `name` in one transaction (see pipelines/runtime.py). Raises
    runtime.Busy when `wait` is False and another run holds the pipeline."""
    module = MODULES[name]
    with runtime.run(settings, name, wait=wait) as current:
        module.refresh(current, full=full, since=since)
    return current.result
