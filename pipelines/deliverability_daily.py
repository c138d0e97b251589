"""deliverability_daily: per tenant, local day and subject — a sending IP, a sending domain (the
From address's) or a recipient provider (gmail, outlook, yahoo, other) — the messages sent, hard
bounced and complained about (the rates are generated columns). What the reputation views and
the bounce and complaint guards read.

extract: the SENT, BOUNCE and COMPLAINT events no earlier run counted, with the sending account
    and the From and To domains of their message (content tier, one statement), incremental by
    seq like the engagement rollups (pipelines/email_events.py); the accounts' IPs (OLTP tier)
transform: each event counted on its tenant's local day (a bounce on the day it arrived) once
    per subject: its account's IP, its From domain, its recipient's provider
load: added to the rows already there, in the run's transaction with the watermark.

The IP is read at rollup time: an event counts under the IP its account has when the event is
rolled up, since the IP a message left from is not recorded with it. A SENT event, rolled up a
tick after sending, lands on the IP that sent it; a bounce or complaint that arrives after its
account moved to another IP counts against the new one (an account with no IP then: no IP row),
and a rebuild (`full`, `since`) files the past under the IPs the accounts have at the rebuild.
The domain and provider rows do not depend on it. Exact IP history needs the IP stored on the
message when it is sent."""

from __future__ import annotations

from datetime import date

import polars as pl

from models.sqlfiles import statement
from pipelines import email_events
from pipelines.runtime import Run, execute, fetch, ingest

NAME = "deliverability_daily"
SQL = "pipelines.sql"
KINDS = ("SENT", "BOUNCE", "COMPLAINT")
GRAIN = ("tenant", "day", "subject_kind", "subject")
COUNTS = ("sent", "bounced", "complained")
# A recipient domain matching one of these entirely is that provider's; any other is "other".
COUNTRY = r"(com|[a-z]{2}|co\.[a-z]{2}|com\.[a-z]{2})"  # .com and the country variants
PROVIDERS = {
    "gmail": r"(gmail|googlemail)\.com",
    "outlook": rf"(outlook|hotmail|live)\.{COUNTRY}|msn\.com",
    "yahoo": rf"yahoo\.{COUNTRY}|aol\.com",
}
MAX_SUBJECT = 253  # analytics.deliverability_daily.subject


def refresh(run: Run, *, full: bool = False, since: date | None = None) -> None:
    # extract
    if full:
        execute(run.olap, "DELETE FROM analytics.deliverability_daily")
        run.watermark = email_events.Watermark()
    if since is not None:
        execute(
            run.olap, "DELETE FROM analytics.deliverability_daily WHERE day >= $1::date", (since,)
        )
        past = email_events.events_since(run, since, "deliverability_events_since")
        past = past.filter(countable())
        past = email_events.with_local_day(past, email_events.tenant_zones(run, past["tenant"]))
        past = past.filter(pl.col("day") >= since)
        _load(run, transform(past, account_ips(run, past)))
    parts = []
    for chunk in email_events.new_events(run, "deliverability_events"):
        run.result.rows_read += len(chunk)
        ours = chunk.filter(pl.col("kind").is_in(KINDS))
        good = ours.filter(countable())
        run.result.rows_skipped += len(ours) - len(good)
        parts.append(good)
    events = pl.concat(parts) if parts else None
    if events is None or events.is_empty():
        return
    events = email_events.with_local_day(events, email_events.tenant_zones(run, events["tenant"]))
    # transform
    rows = transform(events, account_ips(run, events))
    # load
    _load(run, rows)


def countable() -> pl.Expr:
    """An event of KINDS this rollup can count: its message found, with a From domain that fits
    a subject and a To domain, and for a bounce whether it was hard. (A soft bounce is
    countable and counts nothing here.)"""
    return (
        pl.col("kind").is_in(KINDS)
        & pl.col("has_message")
        & pl.col("from_domain").is_not_null()
        & (pl.col("from_domain").str.len_chars() <= MAX_SUBJECT)
        & pl.col("to_domain").is_not_null()
        & ((pl.col("kind") != "BOUNCE") | pl.col("hard").is_not_null())
    )


def account_ips(run: Run, events: pl.DataFrame) -> pl.DataFrame:
    """(tenant, account, ip) for the sending accounts of `events` that have an IP now."""
    accounts = events.select("tenant", "account").drop_nulls().unique()
    if accounts.is_empty():
        schema = {"tenant": pl.Binary, "account": pl.Binary, "ip": pl.String}
        return pl.DataFrame(schema=schema)
    oltp = run.source("oltp")
    ingest(oltp, accounts, "batch_accounts")
    return fetch(oltp, statement(SQL, "account_ips"))


def transform(events: pl.DataFrame, ips: pl.DataFrame) -> pl.DataFrame:
    """Countable events with their local day → rows at GRAIN: each event under its account's
    IP (when it has one), its From domain and its recipient's provider."""
    k = pl.col("kind")
    counted = events.select(
        "tenant", "day", "account", "from_domain", "to_domain",
        # A refusal during the SMTP transaction is a send that bounced at once.
        sent=(k == "SENT") | ((k == "BOUNCE") & pl.col("refused")),
        bounced=(k == "BOUNCE") & pl.col("hard"), complained=k == "COMPLAINT",
    ).filter(pl.any_horizontal(COUNTS))  # fmt: skip
    by_ip = counted.join(ips, on=["tenant", "account"], how="inner").with_columns(
        subject_kind=pl.lit("ip"), subject=pl.col("ip")
    )
    by_domain = counted.with_columns(subject_kind=pl.lit("domain"), subject=pl.col("from_domain"))
    by_provider = counted.with_columns(
        subject_kind=pl.lit("provider"), subject=provider(pl.col("to_domain"))
    )
    columns = [*GRAIN, *COUNTS]
    return (
        pl.concat([by_ip.select(columns), by_domain.select(columns), by_provider.select(columns)])
        .group_by(GRAIN)
        .agg(pl.col(c).sum().cast(pl.Int64) for c in COUNTS)
    )


def provider(domain: pl.Expr) -> pl.Expr:
    """The recipient provider of a (lower-case) recipient domain."""
    named = pl.lit("other")
    for name, pattern in PROVIDERS.items():  # the patterns do not overlap: order is free
        named = pl.when(domain.str.contains(f"^({pattern})$")).then(pl.lit(name)).otherwise(named)
    return named


def _load(run: Run, rows: pl.DataFrame) -> None:
    run.upsert(rows, SQL, "upsert_deliverability_daily")
