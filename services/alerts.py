"""Alerts: a tenant's, seen in `deliverability { alerts }`, raised when a condition starts (a
domain stops verifying, an IP is listed) and resolved when it ends; the platform's own operating
conditions (tenant_id NULL, seen by staff only), evaluated every minute; and the webhook every
alert raised or resolved is POSTed to."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from jobs.broker import tier_of
from jobs.registry import PermanentJobError
from models.operations import Alert, AlertSeverity
from models.sessions import Database, driver_connection
from models.sqlfiles import statement
from penguinmails.settings import Settings

log = logging.getLogger("penguinmails.alerts")


def raise_alert(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    kind: str,
    subject: str,
    message: str,
    details: dict[str, Any] | None = None,
    severity: AlertSeverity = AlertSeverity.CRITICAL,
) -> None:
    session.add(
        Alert(
            tenant_id=tenant_id, kind=kind, severity=severity, subject=subject, message=message,
            details=details or {},
        )
    )  # fmt: skip


async def resolve_alerts(
    session: AsyncSession, tenant_id: uuid.UUID, kind: str, subject: str, now: datetime
) -> None:
    """Every open alert of this kind about this subject is resolved."""
    await session.execute(
        update(Alert)
        .where(
            Alert.tenant_id == tenant_id,
            Alert.kind == kind,
            Alert.subject == subject,
            Alert.resolved_at.is_(None),
        )
        .values(resolved_at=now)
    )


# --- the platform's own conditions ------------------------------------------------------------
#
# Evaluated every minute by the scheduler (jobs/scheduler.py evaluate_alerts); each is one
# alert per kind and subject, tenant_id NULL, raised when its condition starts and resolved
# when it ends:
# - job_error_rate ("jobs"): failed attempts over ended attempts in alert_error_window_seconds
#   above alert_error_rate, on at least alert_error_min_jobs attempts (the API's own 5xx rate is
#   a Prometheus rule in ops/alerts.yml: it lives in each API process's memory);
# - jobs_waiting (the tier): more than alert_waiting_jobs ready jobs waiting for longer than
#   alert_waiting_seconds;
# - slow_query ("database"): a statement running longer than alert_slow_query_seconds;
# - pipeline_lag (the pipeline): no successful run for alert_pipeline_lag_seconds;
# - dead_job (the job kind): a job of that kind died in the last alert_dead_job_seconds.
# Bounce rates over 15 % per domain and sending IP are the tenants' own (services/guards.py).

WEBHOOK_KIND = "alert_webhook"  # queued by a trigger on app.alerts (sql/alerts.sql)
# 408 and 429 are the receiver asking for later, as 5xx; other 4xx will not change.
WEBHOOK_RETRYABLE = {408, 425, 429}


@dataclass(frozen=True)
class Condition:
    kind: str
    subject: str
    message: str
    details: dict[str, Any]


@dataclass
class Evaluation:
    raised: list[Condition]
    resolved: list[tuple[str, str]]  # kind, subject
    holding: list[Condition]  # every condition that holds now


async def platform_conditions(db: Database, settings: Settings) -> list[Condition]:
    """Every platform condition holding now, read from the queue, analytics and OLTP tiers."""
    found: list[Condition] = []
    async with db.system_session("queue") as session:
        raw = await driver_connection(session)
        outcomes = await raw.fetchrow(
            statement("alert_conditions.sql", "job_outcomes"), settings.alert_error_window_seconds
        )
        waiting = await raw.fetch(
            statement("alert_conditions.sql", "waiting_jobs"), settings.alert_waiting_seconds
        )
        dead = await raw.fetch(
            statement("alert_conditions.sql", "dead_jobs"), settings.alert_dead_job_seconds
        )
    failed, finished = outcomes["failed"], outcomes["finished"]
    window = f"{settings.alert_error_window_seconds / 60:g} minutes"
    if finished >= settings.alert_error_min_jobs and failed / finished > settings.alert_error_rate:
        found.append(Condition(
            "job_error_rate", "jobs",
            f"{failed / finished:.1%} of job attempts failed in the last {window} "
            f"({failed} of {finished})",
            {"failed": failed, "finished": finished},
        ))  # fmt: skip
    tiers: dict[str, tuple[int, float]] = {}  # jobs, the oldest's wait
    for row in waiting:
        jobs, oldest = tiers.get(tier_of(row["priority"]), (0, 0.0))
        tiers[tier_of(row["priority"])] = jobs + row["jobs"], max(oldest, row["oldest"])
    for tier, (jobs, oldest) in tiers.items():
        if jobs > settings.alert_waiting_jobs:
            found.append(Condition(
                "jobs_waiting", tier,
                f"{jobs} {tier} jobs waiting for more than "
                f"{settings.alert_waiting_seconds / 60:g} minutes (the oldest {oldest / 60:.0f} "
                "minutes)",
                {"jobs": jobs, "oldest_seconds": oldest},
            ))  # fmt: skip
    for row in dead:
        found.append(Condition(
            "dead_job", row["kind"],
            f"{row['jobs']} {row['kind']} job(s) dead (attempts used up or failed for good), "
            f"the last at {row['last']:%Y-%m-%d %H:%M} UTC",
            {"jobs": row["jobs"], "last": row["last"].isoformat()},
        ))  # fmt: skip
    async with db.system_session("analytics") as session:
        lagging = await (await driver_connection(session)).fetch(
            statement("alert_conditions.sql", "lagging_pipelines"),
            settings.alert_pipeline_lag_seconds,
        )
    async with db.system_session("analytics") as session:
        expensive = await (await driver_connection(session)).fetch(
            statement("alert_conditions.sql", "infrastructure_costs"),
            settings.infra_cost_alert_ratio,
        )
    for row in expensive:
        cost, revenue = row["infra_cost_cents"], row["mrr_cents"]
        share = f"{cost / revenue:.0%} of" if revenue else "with no"
        found.append(Condition(
            "infra_cost_high", str(row["tenant_id"]),
            f"tenant {row['tenant_id']}: its sending infrastructure costs {cost / 100:.2f} a "
            f"month, {share} its revenue of {revenue / 100:.2f} a month (the target is at "
            f"most {settings.infra_cost_alert_ratio:.0%})",
            {"infra_cost_cents": cost, "mrr_cents": revenue},
        ))  # fmt: skip
    for row in lagging:
        found.append(Condition(
            "pipeline_lag", row["pipeline"],
            f"pipeline {row['pipeline']} has not run successfully for {row['lag'] / 60:.0f} "
            f"minutes" + (f": {row['last_error']}" if row["last_error"] else ""),
            {"lag_seconds": row["lag"]},
        ))  # fmt: skip
    async with db.system_session() as session:
        slow = await (await driver_connection(session)).fetch(
            statement("alert_conditions.sql", "slow_queries"), settings.alert_slow_query_seconds
        )
    if slow:
        first = slow[0]
        found.append(Condition(
            "slow_query", "database",
            f"a statement has run for {first['seconds']:.1f} s (pid {first['pid']}, "
            f"{first['role']}): {first['query']}",
            {"queries": [dict(r) for r in slow]},
        ))  # fmt: skip
    return found


async def evaluate_platform(db: Database, settings: Settings) -> Evaluation:
    """Raises the platform alerts whose condition started, resolves those whose condition
    ended; an alert already open stays as it is (one per kind and subject, whoever evaluates)."""
    holding = await platform_conditions(db, settings)
    now = datetime.now(UTC)
    current = {(c.kind, c.subject): c for c in holding}
    raised: list[Condition] = []
    async with db.system_session() as session:
        open_ = {
            (a.kind, a.subject): a
            for a in await session.scalars(
                select(Alert).where(Alert.tenant_id.is_(None), Alert.resolved_at.is_(None))
            )
        }
        for key, condition in current.items():
            if key in open_:
                continue
            inserted = await session.execute(
                insert(Alert)
                .values(
                    tenant_id=None, kind=condition.kind, severity=AlertSeverity.CRITICAL,
                    subject=condition.subject, message=condition.message,
                    details=condition.details,
                )
                .on_conflict_do_nothing(
                    index_elements=["kind", "subject"],
                    index_where=text("tenant_id IS NULL AND resolved_at IS NULL"),
                )
                .returning(Alert.id)
            )  # fmt: skip
            if inserted.first() is not None:
                raised.append(condition)
        ended = [key for key in open_ if key not in current]
        for key in ended:
            open_[key].resolved_at = now
    for condition in raised:
        log.warning("alert %s (%s): %s", condition.kind, condition.subject, condition.message)
    for kind, subject in ended:
        log.info("alert %s (%s) resolved", kind, subject)
    return Evaluation(raised, ended, holding)


# --- the alert webhook ------------------------------------------------------------------------


def sign(secret: str, body: bytes) -> str:
    """The X-PenguinMails-Signature header's value: sha256=<hex HMAC-SHA256 of the body>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def post_webhook(db: Database, settings: Settings, alert_id: uuid.UUID, event: str) -> None:
    """POSTs one alert's raise or resolution to alert_webhook_url (nothing when unset); raises
    WebhookUnavailable (the job is retried with backoff) or PermanentJobError."""
    if not settings.alert_webhook_url:
        return
    async with db.system_session() as session:
        alert = await session.get(Alert, alert_id)
    if alert is None:  # its tenant was deleted meanwhile
        return
    body = json.dumps({
        "event": event,
        "alert": {
            "id": str(alert.id), "tenantId": str(alert.tenant_id) if alert.tenant_id else None,
            "kind": alert.kind, "severity": alert.severity.value, "subject": alert.subject,
            "message": alert.message, "details": alert.details,
            "raisedAt": alert.created_at.isoformat(),
            "resolvedAt": alert.resolved_at.isoformat() if alert.resolved_at else None,
        },
    }).encode()  # fmt: skip
    headers = {"Content-Type": "application/json", "X-PenguinMails-Event": event}
    if settings.alert_webhook_secret is not None:
        secret = settings.alert_webhook_secret.get_secret_value()
        headers["X-PenguinMails-Signature"] = sign(secret, body)
    try:
        async with httpx.AsyncClient(timeout=settings.alert_webhook_timeout_seconds) as client:
            response = await client.post(settings.alert_webhook_url, content=body, headers=headers)
    except httpx.HTTPError as e:
        raise WebhookUnavailable(f"alert webhook: no answer ({e!r})") from e
    if response.is_success:
        return
    reason = f"alert webhook answered {response.status_code}: {response.text[:300]}"
    if response.status_code in WEBHOOK_RETRYABLE or response.status_code >= 500:
        raise WebhookUnavailable(reason)
    raise PermanentJobError(reason)


class WebhookUnavailable(Exception):
    """The receiver did not take it now: retried with the queue's backoff."""
