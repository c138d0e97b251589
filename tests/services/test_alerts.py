"""The platform's alert conditions, each raised and resolved with data made for it, on a
database of this module's own (the conditions are platform-wide: another test's jobs must not
count); the alert webhook received by a local HTTP server; the Prometheus rules file."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import asyncpg
import pytest
import yaml
from sqlalchemy import select

from jobs.connections import system_dsn
from jobs.scheduler import evaluate_alerts
from models.operations import AlertSeverity
from models.queue import Job, JobStatus
from models.sessions import Database
from penguinmails.settings import PROJECT_ROOT, Settings
from services.alerts import raise_alert
from tests.conftest import migrated_database
from tests.factories import create_tenant
from tests.jobs.helpers import quiet_queue, wait_for


@pytest.fixture(scope="module")
def platform(settings: Settings) -> Iterator[Settings]:
    with migrated_database(settings, "pm_alerts") as own:
        yield own


@pytest.fixture
async def conn(platform: Settings) -> AsyncIterator[asyncpg.Connection]:
    """The system role on the module's database, starting from no jobs, logs, pipelines or
    alerts."""
    connection = await asyncpg.connect(system_dsn(platform))
    for table in ("queue.jobs", "queue.job_logs", "analytics.pipeline_watermarks", "app.alerts"):
        await connection.execute(f"DELETE FROM {table}")
    yield connection
    await connection.close()


async def open_alerts(conn: asyncpg.Connection) -> dict[tuple[str, str], str]:
    rows = await conn.fetch(
        "SELECT kind, subject, message FROM app.alerts"
        " WHERE tenant_id IS NULL AND resolved_at IS NULL"
    )
    return {(r["kind"], r["subject"]): r["message"] for r in rows}


async def test_more_than_a_thousand_jobs_ready_for_ten_minutes_raise_an_alert_until_they_run(
    platform: Settings, conn: asyncpg.Connection
) -> None:
    waiting = """INSERT INTO queue.jobs (kind, priority, run_at)
                 SELECT 'noop', 200, now() - interval '11 minutes' FROM generate_series(1, $1)"""
    await conn.execute(waiting, 1000)
    await conn.execute(  # ready for less than 10 minutes: not counted
        "INSERT INTO queue.jobs (kind, priority, run_at) VALUES ('noop', 200, now())"
    )
    await evaluate_alerts(platform)
    assert await open_alerts(conn) == {}

    await conn.execute(waiting, 1)
    await evaluate_alerts(platform)
    message = (await open_alerts(conn))[("jobs_waiting", "low")]
    assert message.startswith("1001 low jobs waiting for more than 10 minutes")

    await conn.execute("UPDATE queue.jobs SET status = 'succeeded', finished_at = now()")
    await evaluate_alerts(platform)
    assert await open_alerts(conn) == {}


async def test_a_dead_job_raises_one_alert_however_often_evaluated_and_resolves_an_hour_later(
    platform: Settings, conn: asyncpg.Connection
) -> None:
    job = await conn.fetchval(
        "INSERT INTO queue.jobs (kind, status, attempts, finished_at)"
        " VALUES ('verify_domain', 'dead', 5, now()) RETURNING id"
    )
    await conn.execute(
        "INSERT INTO queue.job_logs (job_id, attempt, status, message)"
        " VALUES ($1, 5, 'dead', 'RuntimeError: no answer')",
        job,
    )
    await evaluate_alerts(platform)
    await evaluate_alerts(platform)
    assert "1 verify_domain job(s) dead" in (await open_alerts(conn))[("dead_job", "verify_domain")]
    assert await conn.fetchval("SELECT count(*) FROM app.alerts WHERE kind = 'dead_job'") == 1

    await conn.execute("UPDATE queue.job_logs SET at = now() - interval '61 minutes'")
    await evaluate_alerts(platform)
    assert await open_alerts(conn) == {}
    assert await conn.fetchval(
        "SELECT resolved_at IS NOT NULL FROM app.alerts WHERE kind = 'dead_job'"
    )


async def test_more_than_five_percent_of_job_attempts_failing_in_five_minutes_raise_an_alert(
    platform: Settings, conn: asyncpg.Connection
) -> None:
    outcomes = """INSERT INTO queue.job_logs (job_id, attempt, status)
                  SELECT gen_random_uuid(), 1, $1::text
                  FROM generate_series(1, $2)"""
    await conn.execute(outcomes, "succeeded", 19)
    await conn.execute(outcomes, "failed", 1)  # 5 % exactly: not over
    await evaluate_alerts(platform)
    assert await open_alerts(conn) == {}

    await conn.execute(outcomes, "failed", 2)
    await evaluate_alerts(platform)
    message = (await open_alerts(conn))[("job_error_rate", "jobs")]
    assert message == "13.6% of job attempts failed in the last 5 minutes (3 of 22)"

    await conn.execute("UPDATE queue.job_logs SET at = now() - interval '6 minutes'")
    await evaluate_alerts(platform)
    assert await open_alerts(conn) == {}


async def test_a_pipeline_without_a_successful_run_for_five_minutes_raises_an_alert(
    platform: Settings, conn: asyncpg.Connection
) -> None:
    await conn.execute(
        "INSERT INTO analytics.pipeline_watermarks (pipeline, last_ok_at, last_error) VALUES"
        " ('daily_analytics', now() - interval '6 minutes', 'OperationalError: timeout'),"
        " ('campaign_analytics', now() - interval '4 minutes', NULL)"
    )
    await evaluate_alerts(platform)
    assert await open_alerts(conn) == {
        ("pipeline_lag", "daily_analytics"): "pipeline daily_analytics has not run successfully "
        "for 6 minutes: OperationalError: timeout"
    }

    await conn.execute("UPDATE analytics.pipeline_watermarks SET last_ok_at = now()")
    await evaluate_alerts(platform)
    assert await open_alerts(conn) == {}


async def test_a_statement_running_over_two_seconds_raises_an_alert_until_it_ends(
    platform: Settings, conn: asyncpg.Connection
) -> None:
    other = await asyncpg.connect(platform.database_url)  # the owner: another role's statement
    try:
        sleeping = asyncio.create_task(other.execute("SELECT pg_sleep(3)"))
        await asyncio.sleep(2.3)
        await evaluate_alerts(platform)
        message = (await open_alerts(conn))[("slow_query", "database")]
        assert "SELECT pg_sleep(3)" in message
        await sleeping
    finally:
        await other.close()
    await evaluate_alerts(platform)
    assert await open_alerts(conn) == {}


class Receiver(BaseHTTPRequestHandler):
    """Answers 500 to the first POST of each alert and 200 after; keeps what it received."""

    received: list[tuple[dict[str, str], bytes, int]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        alert = json.loads(body)["alert"]["id"]
        status = (
            200 if any(json.loads(b)["alert"]["id"] == alert for _, b, _ in self.received) else 500
        )
        self.received.append((dict(self.headers), body, status))
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    Receiver.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/alerts"
    server.shutdown()
    server.server_close()


async def test_an_alert_is_posted_signed_to_the_webhook_and_retried_after_a_500(
    settings: Settings, db: Database, receiver: str, start_worker, run_queuer
) -> None:
    await quiet_queue(db, settings)
    start_worker(alert_webhook_url=receiver, alert_webhook_secret="hook-secret")
    run_queuer()
    async with db.system_session() as session:
        tenant = await create_tenant(session)
        raise_alert(
            session, tenant, "domain_failed", "acme.test", "acme.test stopped verifying",
            severity=AlertSeverity.WARNING,
        )  # fmt: skip

    async def two_posts() -> list[tuple[dict[str, str], bytes, int]]:
        ours = [
            r for r in Receiver.received if json.loads(r[1])["alert"]["tenantId"] == str(tenant)
        ]
        return ours if len(ours) >= 2 else []

    (first_headers, first, refused), (headers, body, accepted) = await wait_for(two_posts, 30)
    assert (refused, accepted) == (500, 200)
    assert first == body
    expected = "sha256=" + hmac.new(b"hook-secret", body, hashlib.sha256).hexdigest()
    assert (
        headers["X-PenguinMails-Signature"] == first_headers["X-PenguinMails-Signature"] == expected
    )
    sent = json.loads(body)
    assert sent["event"] == "raised"
    assert sent["alert"]["kind"] == "domain_failed"
    assert sent["alert"]["severity"] == "WARNING"
    assert sent["alert"]["message"] == "acme.test stopped verifying"

    async def job_succeeded() -> bool:
        async with db.system_session("queue") as session:
            job = await session.scalar(
                select(Job).where(
                    Job.kind == "alert_webhook",
                    Job.payload["alert_id"].astext == sent["alert"]["id"],
                )
            )
        return job.status == JobStatus.SUCCEEDED and job.attempts == 2

    await wait_for(job_succeeded, 10)


def test_the_prometheus_rules_name_every_platform_condition() -> None:
    rules = yaml.safe_load((PROJECT_ROOT / "ops" / "alerts.yml").read_text())
    named = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    assert set(named) == {
        "PenguinMailsApiErrorRate", "PenguinMailsJobErrorRate", "PenguinMailsJobsWaiting",
        "PenguinMailsSlowQuery", "PenguinMailsBounceRate", "PenguinMailsPipelineLag",
        "PenguinMailsDeadJob",
    }  # fmt: skip
    assert all(rule["expr"] and rule["labels"]["severity"] for rule in named.values())
    assert named["PenguinMailsJobsWaiting"]["for"] == "10m"
    assert "> 0.05" in named["PenguinMailsApiErrorRate"]["expr"]
    assert "> 0.15" in named["PenguinMailsBounceRate"]["expr"]
    assert "> 300" in named["PenguinMailsPipelineLag"]["expr"]
    assert "> 2" in named["PenguinMailsSlowQuery"]["expr"]
