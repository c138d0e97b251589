"""`/metrics`: every metric the platform exposes, after requests to the API and a job run by a
real worker (whose metrics reach the API through the multiprocess directory); loopback only by
default."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pipelines
from jobs.queue import enqueue
from models.sessions import Database
from penguinmails.settings import Settings
from tests.graphql_api.conftest import serve
from tests.jobs.conftest import queue_settings, run_queuer, start_worker  # noqa: F401 (fixtures)
from tests.jobs.helpers import quiet_queue, statuses, wait_for

NAMES = [
    "penguinmails_http_request_duration_seconds",
    "penguinmails_graphql_operation_duration_seconds",
    "penguinmails_queue_jobs",
    "penguinmails_job_wait_seconds",
    "penguinmails_job_run_seconds",
    "penguinmails_sends_total",
    "penguinmails_bounces_total",
    "penguinmails_complaints_total",
    "penguinmails_websocket_clients",
    "penguinmails_websocket_dropped_total",
    "penguinmails_pipeline_lag_seconds",
]


async def test_metrics_show_the_api_the_queue_and_the_workers_jobs(
    settings: Settings,
    db: Database,
    tmp_path: Path,
    start_worker,  # noqa: F811
    run_queuer,  # noqa: F811
) -> None:
    directory = tmp_path / "metrics"
    await quiet_queue(db, settings)
    start_worker(metrics_dir=str(directory))
    run_queuer()
    async with db.system_session("queue") as session:
        job = await enqueue(session, "noop", {}, tenant_id=None, priority=10)
    await wait_for(lambda: _done(db, job), 30)
    await asyncio.to_thread(pipelines.run, settings, "queue_health")

    async for api in serve(settings.model_copy(update={"metrics_dir": directory})):
        await api.http.post(f"{api.url}/graphql", json={"query": "query Probe { __typename }"})
        await api.http.post(f"{api.url}/graphql", json={"query": "{ __typename }"})
        await api.http.get(f"{api.url}/t/o/some-token-{'x' * 20}")
        await api.http.get(f"{api.url}/no/such/path")
        response = await api.http.get(f"{api.url}/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in NAMES:
        assert re.search(rf"^{name}(_bucket|_count)?({{| )", text, re.M), name
    assert 'route="/t/o/{token}"' in text
    assert "some-token" not in text
    assert 'route="unmatched"' in text and "/no/such/path" not in text
    assert 'operation="Probe"' in text and 'operation="anonymous"' in text
    assert re.search(
        r'penguinmails_job_run_seconds_count\{kind="noop",outcome="succeeded"\} [1-9]', text
    )
    assert re.search(r'penguinmails_job_wait_seconds_count\{kind="noop"\} [1-9]', text)
    assert 'penguinmails_queue_jobs{status="ready",tier="high"}' in text
    assert 'penguinmails_pipeline_lag_seconds{pipeline="queue_health"}' in text


async def _done(db: Database, job) -> bool:
    return await statuses(db, [job]) == {"succeeded": 1}


async def test_metrics_are_refused_outside_the_allowed_networks(settings: Settings) -> None:
    async for api in serve(settings.model_copy(update={"metrics_allow": "10.0.0.0/8"})):
        response = await api.http.get(f"{api.url}/metrics")
    assert response.status_code == 403
    assert "penguinmails_" not in response.text


async def test_metrics_are_refused_to_a_public_client_behind_a_trusted_proxy(
    settings: Settings,
) -> None:
    """The suite's loopback is a trusted proxy: the forwarded address is the client's."""
    async for api in serve(settings):
        relayed = await api.http.get(
            f"{api.url}/metrics", headers={"X-Forwarded-For": "203.0.113.9"}
        )
        local = await api.http.get(f"{api.url}/metrics", headers={"X-Forwarded-For": "127.0.0.1"})
    assert (relayed.status_code, local.status_code) == (403, 200)
