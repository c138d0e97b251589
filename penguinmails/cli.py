"""`penguinmails`: one command per process, plus migrate and seed-demo."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console

from penguinmails import embedded, logs
from penguinmails.settings import Settings, get_settings

if TYPE_CHECKING:
    from services.plan_catalogue import Change

# Click's plain help: Typer's rich help shows a flag such as --down as `--down <bool>`, as if it
# took a value.
HELP = {"no_args_is_help": True, "rich_markup_mode": None}
app = typer.Typer(help="PenguinMails backend processes and tools.", **HELP)
embedded_app = typer.Typer(help="The project's own PostgreSQL and Redis.", **HELP)
app.add_typer(embedded_app, name="embedded")
pipelines_app = typer.Typer(help="The analytics pipelines.", **HELP)
app.add_typer(pipelines_app, name="pipelines")
plans_app = typer.Typer(help="The plan catalogue (penguinmails/plans.toml).", **HELP)
app.add_typer(plans_app, name="plans")
billing_app = typer.Typer(help="Billing: Stripe's events.", **HELP)
app.add_typer(billing_app, name="billing")
staff_app = typer.Typer(help="Platform staff (the admin panel and /ops).", **HELP)
app.add_typer(staff_app, name="staff")
console = Console(stderr=True)


def _refuse(message: str) -> NoReturn:
    """Bad input on the command line: one readable line on stderr, exit code 2."""
    print(f"penguinmails: {message}", file=sys.stderr)
    raise typer.Exit(2)


@app.command()
def migrate(
    revision: str = typer.Argument("head", help="Alembic revision to move to."),
    down: bool = typer.Option(False, "--down", help="Downgrade to REVISION (e.g. base)."),
) -> None:
    """Apply the schema migrations (to every database the tiers live on), then, at head, the
    plan catalogue to the database."""
    from penguinmails import migrations  # Alembic: half a second of start-up, for this alone

    settings = get_settings()
    if down:
        migrations.downgrade(settings, revision)
    else:
        migrations.upgrade(settings, revision)
    console.print(f"[green]database at {'revision ' + revision if down else revision}[/]")
    if not down and revision == "head":
        # The database only: a migration runs where Stripe may be out of reach or its key not
        # given, and Stripe being down must not fail a schema change. `up` and `plans sync` go on
        # to Stripe.
        _apply_catalogue(settings, with_stripe=False)
        if settings.stripe_api_key is not None:
            console.print("Stripe not updated by migrate: run `penguinmails plans sync`")


@app.command("seed-demo")
def seed_demo() -> None:
    """Load the plan catalogue and the demo tenant (idempotent)."""
    seed = asyncio.run(_seed_demo(get_settings()))
    console.print(
        f"[green]demo tenant ready[/]: {seed.leads} leads, {seed.plans} plans; "
        f"log in as {seed.user_email} / {seed.password}",
        soft_wrap=True,
    )


async def _seed_demo(settings: Settings):
    from models.sessions import Database
    from services.demo import seed_demo as seed

    db = Database(settings)
    try:
        async with db.system_session() as session:
            return await seed(session, settings)
    finally:
        await db.dispose()


@app.command()
def api(
    host: str = typer.Option(None, help="Interface to bind (default from settings: 127.0.0.1)."),
    port: int = typer.Option(None, help="Port (default from settings: 8000)."),
) -> None:
    """Serve the GraphQL API (uvicorn)."""
    from graphql_api.app import create_app, serve

    settings = get_settings()
    logs.configure(settings, "api")
    serve(create_app(settings), host or settings.api_host, port or settings.api_port, settings)


@app.command()
def queuer() -> None:
    """Move ready jobs from Postgres to the Dramatiq queues (run one or several)."""
    from jobs.queuer import Queuer

    settings = get_settings()
    _run_until_signalled(settings, "queuer", Queuer(settings).run)


WORKER_POLL_MS = 100


@app.command()
def worker(
    processes: int = typer.Option(None, help="Worker processes (default from settings: 2)."),
    threads: int = typer.Option(None, help="Threads per process (default from settings: 24)."),
) -> None:
    """Dramatiq's worker over the three priority tiers (high, normal, low)."""
    settings = get_settings()
    threads = threads or settings.worker_threads
    # Every message a worker takes must have a thread to start it at once (see worker_prefetch).
    prefetch = settings.worker_prefetch or max(1, threads // 3)
    env = {
        **os.environ,
        "dramatiq_queue_prefetch": str(prefetch),
        # A consumer holding its prefetch backs off before looking again, up to this long: a
        # batch that ends is followed by the next within 100 ms, not a second.
        "dramatiq_worker_timeout": str(WORKER_POLL_MS),
        "dramatiq_prom_port": str(settings.worker_metrics_port),
        "dramatiq_prom_host": os.environ.get("dramatiq_prom_host", "127.0.0.1"),
        **_metrics_env(settings),
    }
    args = [
        sys.executable, "-m", "dramatiq", "jobs.worker",
        "--processes", str(processes or settings.worker_processes),
        "--threads", str(threads),
        "--queues", "high", "normal", "low",
        "--skip-logging",  # the worker processes log as every process does (logs.configure)
    ]  # fmt: skip
    os.execve(sys.executable, args, env)


def _metrics_env(settings: Settings) -> dict[str, str]:
    """A worker's or inbound's metrics go to prometheus-client's multiprocess files, read by the
    API's /metrics and by Dramatiq's exposition port (set before prometheus-client loads)."""
    directory = settings.metrics_dir
    if directory is None and settings.worker_metrics_port:
        directory = Path(tempfile.gettempdir()) / "dramatiq-prometheus"
    if directory is None:
        return {}
    directory.mkdir(parents=True, exist_ok=True)
    return {"PROMETHEUS_MULTIPROC_DIR": str(directory), "dramatiq_prom_db": str(directory)}


@app.command()
def scheduler() -> None:
    """Periodic platform work (lease recovery, log retention, and what later capabilities add)."""
    from jobs.scheduler import run_scheduler

    settings = get_settings()
    _run_until_signalled(settings, "scheduler", lambda stop: run_scheduler(settings, stop))


def _run_until_signalled(settings: Settings, process: str, main) -> None:
    """Runs `main(stop)` until SIGINT or SIGTERM sets `stop`."""
    logs.configure(settings, process)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(run())


@app.command()
def sink(
    port: int = typer.Option(None, help="Port (default: the relay port in settings, 2525)."),
) -> None:
    """A local SMTP sink that stores what it receives under .penguinmails/sink (development)."""
    from services.sink import start_sink

    settings = get_settings()
    directory = settings.data_dir / "sink"
    controller = start_sink(directory, "127.0.0.1", port or settings.smtp_relay_port)
    console.print(f"SMTP sink on 127.0.0.1:{controller.port}, storing in {directory}")
    _run_until_signalled(settings, "sink", lambda stop: stop.wait())
    controller.stop()


@app.command()
def inbound(
    host: str = typer.Option(None, help="Interface to bind (default from settings: 127.0.0.1)."),
    port: int = typer.Option(None, help="Port (default from settings: 2526)."),
) -> None:
    """Receive bounces (DSNs), complaint reports (ARF) and mailto unsubscribes over SMTP."""
    from redis.asyncio import Redis

    from models.sessions import Database
    from services.inbound import start_inbound

    settings = get_settings()
    if settings.metrics_dir is not None:
        os.environ.update(_metrics_env(settings))
    settings = settings.model_copy(
        update={"inbound_host": host or settings.inbound_host,
                "inbound_port": port or settings.inbound_port}
    )  # fmt: skip

    async def serve(stop: asyncio.Event) -> None:
        db = Database(settings)
        redis = Redis.from_url(settings.redis_url or "redis://127.0.0.1:6379/0")
        controller = start_inbound(db, redis, settings)
        console.print(f"inbound SMTP on {settings.inbound_host}:{controller.port}")
        try:
            await stop.wait()
        finally:
            controller.stop()
            await redis.aclose()
            await db.dispose()

    _run_until_signalled(settings, "inbound", serve)


@app.command()
def schema() -> None:
    """Print the served GraphQL schema (SDL): `penguinmails schema > graphql_api/schema.graphql`."""
    from graphql_api.schema import build_schema

    print(build_schema(get_settings()).as_str())


@app.command()
def backup(
    directory: str = typer.Option(
        None, "--dir", help="Default: PENGUINMAILS_BACKUP_DIR, else .penguinmails/backups."
    ),
) -> None:
    """Back up every database the tiers live on (pg_dump) into one file; prints its path."""
    from pathlib import Path

    from services import backups

    settings = get_settings()
    where = Path(directory) if directory else settings.backup_dir or settings.data_dir / "backups"
    path = _backup_step("backed up", lambda progress: backups.backup(settings, where, progress))
    print(path)


@app.command()
def restore(
    file: str = typer.Argument(..., help="A file `penguinmails backup` wrote."),
    force: bool = typer.Option(
        False, "--force", help="Replace what the databases hold (refused when not empty)."
    ),
) -> None:
    """Restore every database of a backup (pg_restore, one transaction per database); then run
    `penguinmails migrate` when the code is newer than the backup."""
    from pathlib import Path

    from services import backups

    settings = get_settings()
    restored = _backup_step(
        "restored",
        lambda progress: backups.restore(settings, Path(file), force=force, progress=progress),
    )
    for database in restored:
        print(f"{database.name}: {', '.join(database.tiers)} restored from {file}")


def _backup_step(done: str, work):
    """Runs a backup or restore with a progress line per database; exit 2 for what the operator
    must fix, 1 when pg_dump, pg_restore or the server failed."""
    import asyncpg
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from services.backups import BackupError

    bar = Progress(
        "{task.description}", BarColumn(), MofNCompleteColumn(), "tables", TimeElapsedColumn(),
        console=console,
    )  # fmt: skip
    tasks: dict[str, int] = {}

    def progress(database, tables: int, total: int) -> None:
        if not tasks:
            bar.start()  # not before: an empty display still prints a line
        if database.name not in tasks:
            tasks[database.name] = bar.add_task(f"{done} {database.name}", total=total)
        bar.update(tasks[database.name], completed=tables, total=total)

    try:
        return work(progress)
    except BackupError as e:
        _refuse(str(e))
    except (RuntimeError, OSError, asyncpg.PostgresError) as e:
        print(f"penguinmails: {_one_line(e)}", file=sys.stderr)
        raise typer.Exit(1) from None
    finally:
        if tasks:
            bar.stop()


@app.command()
def up(
    host: str = typer.Option(None, help="API interface (default 127.0.0.1)."),
    port: int = typer.Option(None, help="API port (default 8000)."),
) -> None:
    """Development/demo: embedded services if none configured, migrate, seed, run everything."""
    from penguinmails.supervisor import penguinmails_command, supervise

    # Started in the background by a non-interactive shell, SIGINT arrives ignored: take it back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    settings = get_settings()
    services = embedded.ensure_services(settings)
    os.environ.update(services.env)
    os.environ.update(_fresh_metrics(settings))
    get_settings.cache_clear()
    settings = get_settings()
    logs.configure(settings, "up")
    code = 0
    try:
        from penguinmails import migrations

        migrations.upgrade(settings)
        _apply_catalogue(settings, with_stripe=True)
        seed_demo()
        host, port = host or settings.api_host, port or settings.api_port
        console.print("starting the API, queuer, worker, scheduler, SMTP sink and inbound…")

        def announce() -> None:  # once the API answers: a request made now is served
            console.print(
                f"\n[bold]PenguinMails is up[/]: GraphiQL at http://{host}:{port}/graphql, "
                f"health at http://{host}:{port}/health\nPostgreSQL "
                f"{_safe(settings.database_url)}, Redis {settings.redis_url}\n"
                "Ctrl-C stops everything.\n",
                soft_wrap=True,  # a URL or password cut across lines cannot be copied
            )

        code = supervise(
            {
                "api": penguinmails_command("api", "--host", host, "--port", str(port)),
                "queuer": penguinmails_command("queuer"),
                "worker": penguinmails_command("worker"),
                "scheduler": penguinmails_command("scheduler"),
                "sink": penguinmails_command("sink"),
                "inbound": penguinmails_command("inbound"),
            },
            env=services.env,
            ready_url=f"http://{host}:{port}/health",
            on_ready=announce,
        )
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not strand a server
        embedded.stop_services(settings, services.started)
        if services.started:
            console.print(f"stopped embedded {', '.join(services.started)}")
    raise typer.Exit(code)


def _fresh_metrics(settings: Settings) -> dict[str, str]:
    """`up` turns the workers' metrics on (Dramatiq's exposition, and the files the API's
    /metrics reads), in a directory emptied now: a dead run's files would count again."""
    directory = settings.metrics_dir or settings.data_dir / "metrics"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return {
        "PENGUINMAILS_METRICS_DIR": str(directory),
        "PENGUINMAILS_WORKER_METRICS_PORT": str(settings.worker_metrics_port or 9191),
    }


@plans_app.command("sync")
def plans_sync() -> None:
    """Apply the plan catalogue to the database, and to Stripe's products and prices when a
    Stripe key is set (all or nothing in the database); prints what changed."""
    import stripe

    from services.plan_catalogue import CatalogueError

    settings = get_settings()
    try:
        changes = asyncio.run(
            _sync_plans(settings, with_stripe=settings.stripe_api_key is not None)
        )
    except CatalogueError as e:
        _refuse(str(e))
    except stripe.StripeError as e:
        print(
            f"penguinmails: Stripe: {_one_line(e)}; the database is unchanged",
            file=sys.stderr,
        )
        raise typer.Exit(1) from None
    _print_changes(changes)


def _apply_catalogue(settings: Settings, *, with_stripe: bool) -> None:
    """After migrating: the catalogue into the database (a bad catalogue stops here, exit 2),
    then, asked and with a key, into Stripe. A Stripe failure is reported and does not stop the
    platform: plans are then not for sale until `plans sync` succeeds."""
    import stripe

    from services.plan_catalogue import CatalogueError

    try:
        _print_changes(asyncio.run(_sync_plans(settings, with_stripe=False)))
    except CatalogueError as e:
        _refuse(str(e))
    if not with_stripe or settings.stripe_api_key is None:
        return
    try:
        _print_changes(asyncio.run(_sync_plans(settings, with_stripe=True)))
    except stripe.StripeError as e:
        console.print(
            f"[bold yellow]Stripe not updated[/] ({_one_line(e)}): the plans cannot be "
            "bought until `penguinmails plans sync` succeeds"
        )


async def _sync_plans(settings: Settings, *, with_stripe: bool) -> list[Change]:
    from models.sessions import Database
    from services import billing, plan_catalogue

    catalogue = plan_catalogue.load(settings.plan_catalogue)
    client = billing.stripe_client(settings) if with_stripe else None
    db = Database(settings)
    try:
        async with db.system_session() as session:
            return await plan_catalogue.sync(session, catalogue, client)
    finally:
        await db.dispose()


@billing_app.command("reconcile")
def billing_reconcile() -> None:
    """Apply the Stripe events not yet stored (a webhook outage's), from Stripe's list of the
    last 30 days; prints how many were applied."""
    import stripe

    settings = get_settings()
    if settings.stripe_api_key is None:
        _refuse("no Stripe key (PENGUINMAILS_STRIPE_API_KEY): nothing to reconcile")
    try:
        applied = asyncio.run(_reconcile(settings))
    except stripe.StripeError as e:
        print(f"penguinmails: Stripe: {_one_line(e)}", file=sys.stderr)
        raise typer.Exit(1) from None
    print(f"stripe events: {applied} applied")


async def _reconcile(settings: Settings) -> int:
    from jobs.scheduler import reconcile_stripe_events

    return await reconcile_stripe_events(settings)


@billing_app.command("enforce-grace")
def billing_enforce_grace(
    now: str = typer.Option(
        None, "--now", help="Take this ISO time (e.g. 2026-12-01T00:00:00Z) as the current time."
    ),
) -> None:
    """Suspend the sending of tenants whose grace after a failed payment has run out (the
    scheduler does this every PENGUINMAILS_BILLING_CHECK_SECONDS)."""
    at = _parse_now(now)
    events = asyncio.run(_enforce_grace(get_settings(), at))
    for event in events:
        print(f"tenant {event.tenant_id}: {event.message}")
    print(f"grace step at {at.isoformat()}: {len(events)} changed")


async def _enforce_grace(settings: Settings, at: datetime) -> list:
    from jobs.scheduler import publish_events, with_database
    from services import grace

    events = await with_database(settings, lambda db: grace.enforce(db, at))
    await publish_events(settings, events)
    return events


@billing_app.command("extend-grace")
def billing_extend_grace(
    tenant: str = typer.Argument(..., help="The tenant's id, slug or name."),
    days: int = typer.Argument(..., help="Days added to the grace period."),
) -> None:
    """Give a tenant that owes a payment more time (GRACE): its sending goes on, or resumes,
    until the new end. Written to the audit log."""
    import getpass

    from services.errors import DomainError

    settings = get_settings()
    try:
        subscription = asyncio.run(_extend_grace(settings, tenant, days, getpass.getuser()))
    except DomainError as e:
        _refuse(e.message)
    print(f"grace until {subscription.grace_until.isoformat()} ({subscription.status.value})")


async def _extend_grace(settings: Settings, tenant: str, days: int, operator: str):
    from jobs.scheduler import publish_events, with_database
    from services import grace

    subscription, events = await with_database(
        settings, lambda db: grace.extend(db, tenant, days, datetime.now(UTC), operator)
    )
    await publish_events(settings, events)
    return subscription


def _parse_now(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        _refuse(f"--now: not an ISO time: {value!r}")
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _one_line(error: Exception) -> str:
    """A Stripe error's message, which the SDK spreads over lines."""
    return " ".join(str(getattr(error, "user_message", None) or error).split())


def _print_changes(changes: list[Change]) -> None:
    for change in changes:
        print(f"plan {change}")
    if not changes:
        print("plan catalogue: nothing to change")


@embedded_app.command("start")
def embedded_start(
    env: bool = typer.Option(False, "--env", help="Print shell `export` lines for the URLs."),
) -> None:
    """Start the embedded servers for whatever DATABASE_URL / REDIS_URL does not name."""
    services = embedded.ensure_services(get_settings())
    if env:
        for key, value in services.env.items():
            print(f"export {key}={value}")
    console.print(f"started: {', '.join(services.started) or 'nothing (already running)'}")


@embedded_app.command("stop")
def embedded_stop() -> None:
    """Stop the embedded servers."""
    embedded.stop_services(get_settings(), ["postgres", "redis"])


def _safe(url: str | None) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True) if url else "-"


@pipelines_app.command("run")
def pipelines_run(
    names: list[str] = typer.Argument(None, help="Pipelines to run (default: all)."),
    full: bool = typer.Option(False, "--full", help="Rebuild the tables from all the events."),
    since: str = typer.Option(None, "--since", help="Rebuild the days from DATE (YYYY-MM-DD)."),
) -> None:
    """Run pipelines now (waiting for a run in progress to finish), with a summary."""
    from rich.progress import Progress
    from rich.table import Table

    import pipelines

    unknown = [n for n in names or [] if n not in pipelines.NAMES]
    if unknown:
        _refuse(f"unknown pipeline {unknown[0]!r}; known: {', '.join(pipelines.NAMES)}")
    first_day = _parse_since(since) if since is not None else None
    if full and first_day is not None:
        _refuse("--full rebuilds everything; give --full or --since, not both")
    chosen = names or list(pipelines.NAMES)
    settings = get_settings()
    results = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("pipelines", total=len(chosen))
        for name in chosen:
            progress.update(task, description=name)
            results.append(pipelines.run(settings, name, full=full, since=first_day, wait=True))
            progress.advance(task)
    table = Table("pipeline", "rows read", "rows written", "skipped", "seconds", "watermark")
    for r in results:
        table.add_row(
            r.pipeline, f"{r.rows_read:,}", f"{r.rows_written:,}", f"{r.rows_skipped:,}",
            f"{r.seconds:.2f}", r.watermark,
        )  # fmt: skip
    Console().print(table)


def _parse_since(value: str) -> date:
    try:
        day = date.fromisoformat(value)
    except ValueError:
        _refuse(f"--since {value!r} is not a date (YYYY-MM-DD)")
    if day > datetime.now(UTC).date():
        _refuse(f"--since {day} is in the future")
    return day


@pipelines_app.command("status")
def pipelines_status() -> None:
    """Each pipeline's watermark, last successful run, lag and last error."""
    from rich.table import Table

    from pipelines.runtime import status

    table = Table("pipeline", "watermark", "last run", "lag", "last error")
    for row in status(get_settings()):
        table.add_row(
            row.pipeline, row.watermark, row.last_ok or "never",
            f"{row.lag_seconds:.0f} s" if row.lag_seconds is not None else "-",
            row.last_error or "",
        )  # fmt: skip
    Console().print(table)


@staff_app.command("add")
def staff_add(
    email: str = typer.Argument(..., help="The e-mail address of an existing user."),
    role: str = typer.Option("superadmin", help="The staff role (made when new)."),
) -> None:
    """Make an existing user platform staff (or active again). Written to the audit log."""
    from services import staff

    entry = _staff_change(lambda session, by: staff.add(session, email, by, role))
    print(f"{entry.email}: platform staff ({entry.role})")


@staff_app.command("remove")
def staff_remove(
    email: str = typer.Argument(..., help="The staff member's e-mail address."),
) -> None:
    """Deactivate a staff member. Written to the audit log."""
    from services import staff

    entry = _staff_change(lambda session, by: staff.remove(session, email, by))
    print(f"{entry.email}: no longer platform staff")


@staff_app.command("list")
def staff_list() -> None:
    """Every staff member, active or not."""
    from services import staff

    entries = asyncio.run(_in_system_session(get_settings(), staff.members))
    for entry in entries:
        print(f"{entry.email}  {entry.role}  {'active' if entry.active else 'inactive'}")
    if not entries:
        print("no platform staff: add one with `penguinmails staff add EMAIL`")


def _staff_change(change):
    import getpass

    from services.errors import DomainError

    try:
        return asyncio.run(
            _in_system_session(get_settings(), lambda s: change(s, getpass.getuser()))
        )
    except DomainError as e:
        _refuse(e.message)


async def _in_system_session(settings: Settings, work):
    from models.sessions import Database

    db = Database(settings)
    try:
        async with db.system_session() as session:
            return await work(session)
    finally:
        await db.dispose()
