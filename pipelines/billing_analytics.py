"""billing_analytics: platform figures per UTC day and plan (staff's, no tenant): subscriptions
active and their monthly recurring revenue, subscriptions started and canceled, revenue and
failed payments; and per tenant, today, its sending infrastructure's monthly cost against its
subscription's monthly price (analytics.infrastructure_costs, which the infra_cost_high alert
reads).

extract: app.subscriptions, app.payments and app.plans as they are now (OLTP tier)
transform: each day's figures from scratch, for the days the changes since the last run touch
load: those days cleared and written again, in the run's transaction with the watermark.

Definitions, on UTC days. A subscription is active on a day when it was created by the day's
end and not canceled before it, and it is ACTIVE, PAST_DUE or GRACE, or CANCELED after a
payment of it succeeded (it was paying until canceled; a canceled trial never was). Its MRR is
its plan's monthly price (a yearly plan's over 12). New: created that day, whatever its status;
churned: canceled that day. Revenue: succeeded payments by the day they were paid; failed
payments by the day they were made. A payment counts under its subscription's plan now, one
with no subscription under NO_PLAN. No status history is kept, so the past is read from the
rows as they are: a subscription suspended today leaves the active figures of its past days.

Incremental by time: `last_at` is the newest updated_at seen. A run recomputes every day from
the earliest one touched by a row updated since `last_at` (less the late-commit overlap) —
a subscription touches every day of its life — or from the last day written, whichever is
earlier, to today. Recomputing overwrites, so a rerun changes nothing. Deleted rows touch
nothing: their days are right again after a `full` or `since` rebuild."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import polars as pl

from models.analytics import NO_PLAN
from models.billing import PaymentStatus, SubscriptionStatus
from models.sqlfiles import statement
from pipelines.runtime import Run, execute, fetch

NAME = "billing_analytics"
SQL = "pipelines.sql"
PAYING = (SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE, SubscriptionStatus.GRACE)
FIGURES = ("active", "mrr_cents", "new", "churned", "revenue_cents", "failed")


def refresh(run: Run, *, full: bool = False, since: date | None = None) -> None:
    # extract
    oltp = run.source("oltp")
    if full:
        execute(run.olap, "DELETE FROM analytics.billing_analytics")
    mark = None if full else run.watermark.last_at
    # A change written before `last_at` may have committed after the last run read: overlap.
    late = timedelta(seconds=run.settings.pipeline_late_commit_seconds)
    seen_after = None if mark is None else mark - late
    changed = fetch(oltp, statement(SQL, "billing_changes"), (seen_after,)).row(0, named=True)
    run.watermark.last_at = max((t for t in (mark, changed["last_at"]) if t), default=None)
    today = run.started.date()
    _infrastructure(run, oltp, today)
    first = _first_day(run, changed["touched_from"], since, today if mark else None)
    if first is None:  # nothing to count yet
        return
    subscriptions = fetch(oltp, statement(SQL, "billing_subscriptions"))
    payments = fetch(oltp, statement(SQL, "billing_payments"), (_midnight(first),))
    run.result.rows_read += len(subscriptions) + len(payments)
    # transform
    rows = transform(subscriptions, payments, first, today)
    # load
    execute(run.olap, "DELETE FROM analytics.billing_analytics WHERE day >= $1::date", (first,))
    run.upsert(rows, SQL, "upsert_billing_analytics")


def _infrastructure(run: Run, oltp, today: date) -> None:
    """Today's infrastructure costs per tenant, against its revenue: the tenants' VPS instances
    and IPs as they are now, so today's rows are written again on every run and past days keep
    what they were."""
    held = fetch(oltp, statement(SQL, "billing_infrastructure"))
    run.result.rows_read += len(held)
    rows = held.with_columns(
        pl.lit(today).alias("day"), pl.col("plan").fill_null(NO_PLAN.bytes)
    ).select("tenant", "day", "plan", "vps_instances", "sending_ips", "infra_cost_cents",
             "mrr_cents")  # fmt: skip
    execute(run.olap, "DELETE FROM analytics.infrastructure_costs WHERE day = $1::date", (today,))
    run.upsert(rows, SQL, "upsert_infrastructure_costs")


def _first_day(
    run: Run, touched_from: datetime | None, since: date | None, today: date | None
) -> date | None:
    """The first day to recompute (through today): the earliest the changes touched, `since`,
    and on an incremental run (`today` given) at most today or the last day written, as the
    days the clock moved past since then need their rows even when nothing changed."""
    days = [_day(touched_from), since, today]
    if today is not None:
        days.append(fetch(run.olap, "SELECT max(day) FROM analytics.billing_analytics").item())
    return min((d for d in days if d is not None), default=None)


def transform(
    subscriptions: pl.DataFrame, payments: pl.DataFrame, first: date, today: date
) -> pl.DataFrame:
    """The figures of the days first..today per plan; a day and plan with nothing: no row."""
    status, day = pl.col("status"), _utc_day
    canceled = pl.col("canceled_at").is_not_null()
    paying = subscriptions.filter(
        status.is_in(PAYING) | ((status == SubscriptionStatus.CANCELED) & pl.col("paid") & canceled)
    ).with_columns(start=day("created_at"))
    # Active on a day = started by then less ended by then: +1 on its first day, -1 on the
    # day it was canceled (not active that day), summed day by day.
    starts = paying.select("plan", day="start", active=pl.lit(1), mrr_cents="monthly_cents")
    ends = paying.filter(canceled).select(
        "plan",
        day=pl.max_horizontal(day("canceled_at"), "start"),
        active=pl.lit(-1),
        mrr_cents=-pl.col("monthly_cents"),
    )
    changes = (
        pl.concat([starts, ends]).group_by("plan", "day").agg(pl.col("active", "mrr_cents").sum())
    )
    active = _running_totals(changes, today)
    new = subscriptions.group_by("plan", day=day("created_at")).agg(new=pl.len())
    churned = (
        subscriptions.filter(canceled)
        .group_by("plan", day=day("canceled_at"))
        .agg(churned=pl.len())
    )
    payments = payments.with_columns(pl.col("plan").fill_null(NO_PLAN.bytes))
    revenue = (
        payments.filter(status == PaymentStatus.SUCCEEDED)
        .group_by("plan", day=day("paid_at"))
        .agg(revenue_cents=pl.col("amount_cents").sum())
    )
    failed = (
        payments.filter(status == PaymentStatus.FAILED)
        .group_by("plan", day=day("created_at"))
        .agg(failed=pl.len())
    )
    rows = active
    for part in (new, churned, revenue, failed):
        rows = rows.join(part, on=["plan", "day"], how="full", coalesce=True)
    return (
        rows.filter(pl.col("day").is_between(first, today))
        .with_columns(pl.col(f).fill_null(0).cast(pl.Int64) for f in FIGURES)
        .filter(pl.any_horizontal(pl.col(f) != 0 for f in FIGURES))
        .select("day", "plan", *FIGURES)
    )


def _running_totals(changes: pl.DataFrame, today: date) -> pl.DataFrame:
    """(plan, day, active, mrr_cents) on every day from the first change to today: the changes
    summed up to each day."""
    schema = {"plan": pl.Binary, "day": pl.Date, "active": pl.Int64, "mrr_cents": pl.Int64}
    if changes.is_empty():
        return pl.DataFrame(schema=schema)
    days = pl.DataFrame({"day": pl.date_range(changes["day"].min(), today, eager=True)})
    calendar = changes.select("plan").unique().join(days, how="cross")
    return (
        calendar.join(changes, on=["plan", "day"], how="left")
        .with_columns(pl.col("active", "mrr_cents").fill_null(0))
        .sort("plan", "day")
        .with_columns(pl.col("active", "mrr_cents").cum_sum().over("plan"))
        .cast(schema)
    )


def _utc_day(column: str) -> pl.Expr:
    return pl.col(column).dt.convert_time_zone("UTC").dt.date()


def _day(at: datetime | None) -> date | None:
    return None if at is None else at.astimezone(UTC).date()


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)
