"""campaign_analytics: per tenant, campaign, sequence step and local day, with the rates
`Campaign.stats` shows (generated columns: open, click and reply rates over delivered, bounce
rate over sent).

extract: the e-mail events no earlier run counted (pipelines/email_events.py)
transform: the campaign's events only, per step
load: added to the rows already there, and to the campaigns' lifetime totals
(analytics.campaign_totals, what `Campaign.stats` reads), in the run's transaction with the
watermark."""

from __future__ import annotations

from datetime import date

import polars as pl

from models.sqlfiles import statement
from pipelines import email_events
from pipelines.email_events import COUNTS
from pipelines.runtime import Run, execute

NAME = "campaign_analytics"


def refresh(run: Run, *, full: bool = False, since: date | None = None) -> None:
    """Also keeps analytics.campaign_totals, the sums of the table's rows per campaign: the
    upsert adds to them, and what a rebuild deletes is taken off them first."""
    if full:
        execute(run.olap, "DELETE FROM analytics.campaign_totals")
    elif since is not None:
        execute(run.olap, statement(email_events.SQL, "forget_campaign_totals_since"), (since,))
    email_events.refresh(run, NAME, transform, "upsert_campaign_analytics", full=full, since=since)


def transform(counts: pl.DataFrame) -> pl.DataFrame:
    """Events of a campaign, at (tenant, campaign, step, day); a step-less event is step 0."""
    return (
        counts.filter(pl.col("campaign").is_not_null())
        .with_columns(pl.col("step").fill_null(0))
        .group_by("tenant", "campaign", "step", "day")
        .agg(pl.col(c).sum() for c in COUNTS)
        .select("tenant", "campaign", "step", "day", *COUNTS)
    )
