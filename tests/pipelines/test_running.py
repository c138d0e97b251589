"""How pipelines run: from the scheduler, after a failure, killed mid-run, from the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime, timedelta

import pytest
from typer.testing import CliRunner

import pipelines
from jobs.scheduler import registered, run_pipelines
from penguinmails import cli
from pipelines import runtime
from tests.pipelines.test_email_rollups import _daily, _same, _tables

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
CLI = [sys.executable, "-m", "penguinmails", "pipelines"]


def _watermarks(olap) -> list[tuple]:
    return olap.frame(
        "SELECT pipeline, last_seq, max_seq, holes::text FROM analytics.pipeline_watermarks"
        " ORDER BY pipeline"
    ).rows()


def _cli(settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": settings.database_url}
    return subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


async def test_the_scheduler_runs_every_pipeline_each_tick(scratch) -> None:
    settings, olap = scratch
    assert "run_pipelines" in {p.name for p in registered()}
    tenant = olap.tenant()
    olap.event(tenant, "SENT", T0)
    outcome = await run_pipelines(settings)
    assert set(outcome) == set(pipelines.NAMES)
    assert all("written" in o for o in outcome.values()), outcome
    assert _daily(olap, tenant)["sent"].to_list() == [1]


async def test_a_failed_run_keeps_its_watermark_and_says_why(scratch) -> None:
    settings, olap = scratch
    tenant = olap.tenant()
    await run_pipelines(settings)
    before = _watermarks(olap)
    olap.event(tenant, "SENT", T0)
    role = settings.system_db_role
    olap.execute(f"REVOKE INSERT ON analytics.daily_analytics FROM {role}")
    try:
        outcome = await run_pipelines(settings)
    finally:
        olap.execute(f"GRANT INSERT ON analytics.daily_analytics TO {role}")
    assert outcome["daily_analytics"].startswith("failed")
    assert "written" in outcome["campaign_analytics"]  # the others still ran
    after = dict((row[0], row[1:]) for row in _watermarks(olap))
    assert after["daily_analytics"] == dict((r[0], r[1:]) for r in before)["daily_analytics"]
    error = olap.frame(
        "SELECT last_error FROM analytics.pipeline_watermarks WHERE pipeline = 'daily_analytics'"
    ).item()
    assert "permission denied" in error
    await run_pipelines(settings)  # fixed: the next tick counts the event, once
    assert _daily(olap, tenant)["sent"].to_list() == [1]
    assert (
        olap.frame(
            "SELECT last_error FROM analytics.pipeline_watermarks WHERE pipeline = 'daily_analytics'"
        ).item()
        is None
    )


@pytest.mark.parametrize("first_run", [True, False])
def test_a_run_stopped_by_an_exception_records_why_without_waiting_on_itself(
    scratch, first_run
) -> None:
    """The failure is recorded on its own connection, while the failed run's transaction held
    the watermark row (inserted on a first run, FOR UPDATE after): it must end first, or the
    record waits on it for ever (as an interrupted CLI run once did)."""
    settings, _ = scratch
    name = f"interrupted_{first_run}"
    if not first_run:
        with runtime.run(settings, name):
            pass

    raised: list[BaseException] = []

    def interrupted() -> None:
        try:
            with runtime.run(settings, name):
                raise KeyboardInterrupt
        except KeyboardInterrupt as error:
            raised.append(error)

    thread = threading.Thread(target=interrupted, daemon=True)  # left behind if it hangs
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the failed run is still waiting to record its failure"
    assert len(raised) == 1  # and the interruption still reaches the caller
    status = {s.pipeline: s for s in runtime.status(settings)}[name]
    assert status.last_error == "KeyboardInterrupt: "
    assert (status.last_ok is None) is first_run


def test_a_tenant_zone_polars_does_not_know_counts_in_utc(scratch) -> None:
    settings, olap = scratch
    tenant = olap.tenant("Mars/Olympus_Mons")
    olap.event(tenant, "SENT", datetime(2026, 5, 1, 23, 30, tzinfo=UTC))
    pipelines.run(settings, "daily_analytics")
    assert _daily(olap, tenant).select("day", "sent").rows() == [(date(2026, 5, 1), 1)]


def test_the_cli_runs_with_a_summary_and_shows_the_status(scratch) -> None:
    settings, olap = scratch
    tenant = olap.tenant()
    olap.event(tenant, "SENT", T0)
    ran = _cli(settings, "run", "daily_analytics")
    assert ran.returncode == 0, ran.stderr
    assert "daily_analytics" in ran.stdout and "rows written" in ran.stdout
    assert _daily(olap, tenant)["sent"].to_list() == [1]
    status = _cli(settings, "status")
    assert status.returncode == 0, status.stderr
    assert "daily_analytics" in status.stdout and "seq" in status.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["run", "nope"], "unknown pipeline 'nope'"),
        (["run", "--since", "tomorrowish"], "is not a date"),
        (["run", "--since", (date.today() + timedelta(days=2)).isoformat()], "in the future"),
        (["run", "--full", "--since", "2026-01-01"], "not both"),
    ],
)
def test_the_cli_refuses_bad_input_with_one_line_and_exit_code_2(args, says) -> None:
    ran = CliRunner().invoke(cli.app, ["pipelines", *args])
    assert ran.exit_code == 2
    assert says in ran.stderr and len(ran.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_run_killed_mid_way_leaves_tables_and_watermark_consistent(scratch) -> None:
    settings, olap = scratch
    tenants = [olap.tenant("Asia/Tokyo"), olap.tenant("America/New_York")]
    olap.bulk(tenants, 2_000, seed=0.8)
    pipelines.run(settings, "daily_analytics")
    tables, marks = _daily_table(olap), _watermarks(olap)
    olap.bulk(tenants, 600_000, seed=0.9)  # a run of several seconds: the kills land mid-way
    env = {**os.environ, "DATABASE_URL": settings.database_url}
    for delay in (0.05, 0.4):
        run = subprocess.Popen([*CLI, "run", "daily_analytics"], env=env)
        deadline = time.monotonic() + 60
        while not _lock_held(olap) and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(delay)
        assert run.poll() is None, "the run ended before the kill: nothing tested"
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        assert _watermarks(olap) == marks  # nothing of the killed run committed
        _same(tables, _daily_table(olap))
    pipelines.run(settings, "daily_analytics")
    finished = _daily_table(olap)
    assert not finished["daily"].equals(tables["daily"])
    pipelines.run(settings, "daily_analytics", full=True)
    _same(finished, _daily_table(olap))


def _daily_table(olap) -> dict:
    return {"daily": _tables(olap)["daily"]}


def _lock_held(olap) -> bool:
    return (
        olap.frame(
            "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND granted"
        ).item()
        > 0
    )


def test_connections_kept_between_runs_that_the_server_closed_are_replaced(scratch) -> None:
    settings, olap = scratch
    tenant = olap.tenant()
    pipelines.run(settings, "daily_analytics")  # leaves idle connections behind
    olap.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE usename = $1 AND datname = current_database()",
        settings.system_db_role,
    )
    olap.event(tenant, "SENT", T0)
    pipelines.run(settings, "daily_analytics")
    assert _daily(olap, tenant)["sent"].to_list() == [1]
