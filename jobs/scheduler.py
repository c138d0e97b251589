"""The scheduler process: periodic platform work on APScheduler. A capability adds its own
with `@periodic(seconds)`; the first ones keep the queue healthy."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

import asyncpg
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.ext.asyncio import AsyncSession

from jobs.connections import system_dsn
from jobs.queuer import recover_expired_leases
from models.sqlfiles import statement
from penguinmails.settings import Settings

if TYPE_CHECKING:
    from models.sessions import Database

log = logging.getLogger("penguinmails.scheduler")
T = TypeVar("T")
Task = Callable[[Settings], Awaitable[object]]
# An interval in seconds, or how to read it from the settings the scheduler runs with.
Interval = float | Callable[[Settings], float]


@dataclass
class Periodic:
    name: str
    seconds: Interval
    task: Task

    def interval(self, settings: Settings) -> float:
        return self.seconds(settings) if callable(self.seconds) else self.seconds


_periodic: list[Periodic] = []


def periodic(seconds: Interval) -> Callable[[Task], Task]:
    def register(task: Task) -> Task:
        _periodic.append(Periodic(task.__name__, seconds, task))
        return task

    return register


def registered() -> list[Periodic]:
    return list(_periodic)


@periodic(seconds=15)
async def recover_leases(settings: Settings) -> int:
    """Backstop for the queuers' own recovery: also runs when no queuer is alive."""
    conn = await asyncpg.connect(system_dsn(settings))
    try:
        return await recover_expired_leases(conn)
    finally:
        await conn.close()


@periodic(seconds=3600)
async def prune_job_logs(settings: Settings) -> str:
    conn = await asyncpg.connect(system_dsn(settings))
    try:
        return await conn.execute(
            statement("queue.sql", "prune_job_logs"), settings.job_log_retention_days
        )
    finally:
        await conn.close()


@periodic(seconds=60)
async def plan_running_campaigns(settings: Settings) -> int:
    """Running campaigns are re-planned every minute: new leads, accounts back from a pause."""
    from services import planning

    return await _in_system_session(settings, planning.plan_running_campaigns)


@periodic(seconds=lambda settings: settings.reply_poll_seconds)
async def poll_replies(settings: Settings) -> int:
    """Every account with an IMAP server gets one reply poll per interval."""
    from services import replies

    return await _in_system_session(settings, lambda s: replies.queue_polls(s, settings))


@periodic(seconds=lambda settings: min(settings.dns_recheck_seconds, 300))
async def recheck_domains(settings: Settings) -> int:
    """Every domain's DNS records are checked again each `dns_recheck_seconds`."""
    from services import domains

    return await _in_system_session(settings, lambda s: domains.queue_rechecks(s, settings))


@periodic(seconds=lambda settings: settings.dnsbl_check_seconds)
async def check_blocklists(settings: Settings) -> int:
    """Every sending IP and domain against the DNS blocklists; changes published once stored."""
    from services import reputation

    async def check(db: Database) -> list:
        async with db.system_session() as session:
            return await reputation.check_all(session, settings)

    events = await with_database(settings, check)
    await publish_events(settings, events)
    return len(events)


@periodic(seconds=lambda settings: settings.guard_check_seconds)
async def evaluate_guards(settings: Settings) -> int:
    """Every tenant's reputation scores and sending guards, through the queue."""
    from services import guards

    return await _in_system_session(settings, lambda s: guards.queue_evaluations(s, settings))


@periodic(seconds=lambda settings: settings.warmup_tick_seconds)
async def tick_warmups(settings: Settings) -> int:
    """Every tenant with warm-up on gets a tick job per interval; each account ticks once a
    day."""
    from services import warmup

    return await _in_system_session(settings, lambda s: warmup.queue_ticks(s, settings))


@periodic(seconds=lambda settings: settings.pipeline_interval_seconds)
async def run_pipelines(settings: Settings) -> dict[str, str]:
    """Every analytics pipeline, one after another, each under its own lock: one that another
    scheduler is running is skipped; one that fails is logged with its reason and keeps its
    watermark, and the others still run."""
    import pipelines
    from pipelines.runtime import Busy

    outcome: dict[str, str] = {}
    for name in pipelines.NAMES:
        try:
            result = await asyncio.to_thread(pipelines.run, settings, name)
        except Busy:
            outcome[name] = "busy"
        except Exception as error:  # recorded on the watermark row by the run itself
            outcome[name] = f"failed: {type(error).__name__}"
        else:
            outcome[name] = f"{result.rows_read} read, {result.rows_written} written"
    return outcome


@periodic(seconds=3600)
async def drop_old_message_bodies(settings: Settings) -> int:
    """Sent messages' bodies past the content retention; the rows and events stay."""
    from services import retention

    dropped = await with_database(
        settings, lambda db: retention.drop_old_bodies(db, settings.content_retention_days)
    )
    if dropped.bodies:
        log.info(
            "dropped %d message bodies older than %d days in %d batches",
            dropped.bodies, settings.content_retention_days, dropped.batches,
        )  # fmt: skip
    return dropped.bodies


@periodic(seconds=3600)
async def back_up_databases(settings: Settings) -> str | None:
    """With PENGUINMAILS_BACKUP_DIR set: a backup of every database once a day (checked hourly,
    so a restarted scheduler neither skips nor repeats a day), the newest backup_keep kept."""
    from services import backups

    if settings.backup_dir is None or not backups.due(settings.backup_dir):
        return None
    path = await asyncio.to_thread(backups.backup, settings, settings.backup_dir)
    removed = backups.prune(settings.backup_dir, settings.backup_keep)
    log.info("backup written to %s; %d older removed", path, len(removed))
    return str(path)


@periodic(seconds=lambda settings: settings.billing_reconcile_seconds)
async def reconcile_stripe_events(settings: Settings) -> int:
    """The Stripe events a webhook outage lost, from Stripe's list; nothing without a key."""
    from redis.asyncio import Redis

    from services import billing, stripe_events

    if settings.stripe_api_key is None:
        return 0
    client = billing.stripe_client(settings)
    redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
    try:
        return await with_database(
            settings,
            lambda db: stripe_events.reconcile(
                db, client, grace_days=settings.billing_grace_days, redis=redis
            ),
        )
    finally:
        if redis is not None:
            await redis.aclose()


@periodic(seconds=lambda settings: settings.billing_check_seconds)
async def enforce_billing_grace(settings: Settings) -> int:
    """Suspends the sending of tenants whose grace after a failed payment has run out."""
    from services import grace

    events = await with_database(settings, lambda db: grace.enforce(db, datetime.now(UTC)))
    await publish_events(settings, events)
    return len(events)


@periodic(seconds=lambda settings: settings.alert_check_seconds)
async def evaluate_alerts(settings: Settings) -> int:
    """The platform's operating conditions (services/alerts.py): alerts raised and resolved;
    how many hold now."""
    from services import alerts

    evaluation = await with_database(settings, lambda db: alerts.evaluate_platform(db, settings))
    return len(evaluation.holding)


@periodic(seconds=lambda settings: settings.vps_health_check_seconds)
async def check_vps_health(settings: Settings) -> dict[str, str]:
    """Every serving VPS's SMTP server: an unreachable one pauses its accounts (an alert), one
    that answers again resumes them."""
    from services import provisioning

    report, events = await with_database(
        settings, lambda db: provisioning.check_health(db, settings)
    )
    await publish_events(settings, events)
    return report


async def publish_events(settings: Settings, events: list) -> None:
    """Deliverability events, once what they tell of has committed."""
    from redis.asyncio import Redis

    from services import deliverability_events

    if not events or not settings.redis_url:
        return
    redis = Redis.from_url(settings.redis_url)
    try:
        await deliverability_events.publish(redis, events)
    finally:
        await redis.aclose()


async def _in_system_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """`work` in one system-session transaction, on a Database of this run only."""

    async def in_session(db: Database) -> T:
        async with db.system_session() as session:
            return await work(session)

    return await with_database(settings, in_session)


async def with_database(settings: Settings, work: Callable[[Database], Awaitable[T]]) -> T:
    """`work` on a Database of this run only (its own transactions), disposed of after."""
    from models.sessions import Database

    db = Database(settings)
    try:
        return await work(db)
    finally:
        await db.dispose()


def _quiet_when_stopped(item: Periodic) -> Task:
    """The task, ending quietly when the scheduler's shutdown cuts it short (APScheduler would
    log the cancellation as an error, with its traceback)."""

    async def run(settings: Settings) -> object:
        try:
            return await item.task(settings)
        except asyncio.CancelledError:
            log.debug("%s cut short by the shutdown", item.name)
            return None

    return run


async def run_scheduler(settings: Settings, stop: asyncio.Event) -> None:
    scheduler = AsyncIOScheduler(timezone="UTC")
    for item in registered():
        seconds = item.interval(settings)
        scheduler.add_job(
            _quiet_when_stopped(item), "interval", seconds=seconds, args=[settings],
            id=item.name, name=item.name, max_instances=1, coalesce=True,
            misfire_grace_time=max(1, int(seconds)),
        )  # fmt: skip
        log.debug("scheduled %s every %ss", item.name, seconds)
    log.info("scheduler started: %d periodic tasks", len(registered()))
    scheduler.start()
    try:
        await stop.wait()
    finally:
        scheduler.shutdown(wait=False)
