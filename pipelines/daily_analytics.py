"""daily_analytics: per tenant, local day and campaign, and one tenant-wide row per day
(campaign_id = the nil UUID, every message with or without a campaign). What `dailyStats` and
`deliverability`'s 30-day rates read.

extract: the e-mail events no earlier run counted (pipelines/email_events.py)
transform: their counts summed per campaign and per tenant
load: added to the rows already there, in the run's transaction with the watermark."""

from __future__ import annotations

from datetime import date

import polars as pl

from pipelines import email_events
from pipelines.email_events import ALL_CAMPAIGNS, CODE, COUNTS
from pipelines.runtime import Run

NAME = "daily_analytics"


def refresh(run: Run, *, full: bool = False, since: date | None = None) -> None:
    email_events.refresh(run, NAME, transform, "upsert_daily_analytics", full=full, since=since)


def transform(counts: pl.DataFrame) -> pl.DataFrame:
    """Events counted at (tenant, campaign, step, day) → rows at (tenant, day, campaign), plus
    the tenant-wide rows."""
    sums = [pl.col(c).sum() for c in COUNTS]
    per_campaign = (
        counts.filter(pl.col("campaign").is_not_null())
        .group_by("tenant", "day", "campaign")
        .agg(sums)
    )
    tenant_wide = (
        counts.group_by("tenant", "day")
        .agg(sums)
        .with_columns(campaign=pl.lit(ALL_CAMPAIGNS, CODE))
    )
    columns = ["tenant", "day", "campaign", *COUNTS]
    return pl.concat([per_campaign.select(columns), tenant_wide.select(columns)])
