"""`penguinmails up`, as a user runs it: migrates, seeds, serves GraphiQL; Ctrl-C stops it all."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import asyncpg
import httpx
import pytest

from services.demo import DEMO_EMAIL, DEMO_PASSWORD


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _run_a_job() -> str:
    """Enqueues a no-op job and waits for the platform's queuer and worker to run it."""
    conn = await asyncpg.connect(os.environ["DATABASE_URL"])
    try:
        job_id = await conn.fetchval("INSERT INTO queue.jobs (kind) VALUES ('noop') RETURNING id")
        deadline = time.monotonic() + 60
        while (
            status := await conn.fetchval("SELECT status FROM queue.jobs WHERE id = $1", job_id)
        ) != "succeeded":
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        return status
    finally:
        await conn.close()


def _served(url: str, within: float = 15.0) -> httpx.Response:
    """GET `url` once its server listens (Dramatiq starts its exposition after the workers)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return httpx.get(url, timeout=5)
        except httpx.ConnectError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _processes_with(marker: str) -> list[int]:
    """Processes whose environment holds `marker` (children inherit it)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


@pytest.mark.slow
def test_up_serves_graphiql_with_the_demo_data_and_stops_on_ctrl_c() -> None:
    """With a Stripe key whose server cannot be reached: the failure is printed, and the
    platform comes up all the same."""
    port, worker_port = _free_port(), _free_port()
    marker = f"PM_UP_TEST={uuid.uuid4().hex}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "penguinmails", "up", "--port", str(port)],
        env={
            **os.environ,
            marker.split("=")[0]: marker.split("=")[1],
            "PENGUINMAILS_ENVIRONMENT": "development",
            "PENGUINMAILS_SMTP_RELAY_PORT": str(_free_port()),
            "PENGUINMAILS_WORKER_METRICS_PORT": str(worker_port),
            "PENGUINMAILS_STRIPE_API_KEY": "sk_test_unreachable",
            "PENGUINMAILS_STRIPE_API_BASE": f"http://127.0.0.1:{_free_port()}",  # nobody listens
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    before_up = []
    try:
        for line in proc.stdout:  # until the banner (the suite's timeout bounds the wait)
            before_up.append(line)
            if "PenguinMails is up" in line:
                break
        assert proc.poll() is None, "".join(before_up) + proc.stdout.read()
        # "up" means served: the first request after the banner is answered.
        health = httpx.get(f"{base}/health", timeout=5)
        ide = httpx.get(f"{base}/graphql", headers={"Accept": "text/html"})
        plans = httpx.post(f"{base}/graphql", json={"query": "{ plans { name } }"}).json()
        job_status = asyncio.run(_run_a_job())  # through up's queuer and worker
        # The workers' metrics: on Dramatiq's port, and with the API's own on /metrics.
        metrics = httpx.get(f"{base}/metrics").text
        worker_metrics = _served(f"http://127.0.0.1:{worker_port}/").text
    finally:
        # A terminal's Ctrl-C under `uv run` arrives twice (the group's, and uv's forwarded one).
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
        output = "".join(before_up) + output
    assert _processes_with(marker) == [], "up exited before the processes it started"
    assert health.status_code == 200
    assert "GraphiQL" in ide.text
    names = [p["name"] for p in plans["data"]["plans"]]
    assert [n for n in names if n in {"Starter", "Growth", "Scale"}] == [
        "Starter",
        "Growth",
        "Scale",
    ]
    assert "demo tenant ready" in output and f"http://127.0.0.1:{port}/graphql" in output
    # Whole lines, never wrapped: the log-in and the URLs are copied from them.
    assert f"log in as {DEMO_EMAIL} / {DEMO_PASSWORD}\n" in output
    assert f"health at http://127.0.0.1:{port}/health\n" in output
    assert "Stripe not updated" in output and "plans sync" in output
    assert job_status == "succeeded"
    ran = 'penguinmails_job_run_seconds_count{kind="noop",outcome="succeeded"}'
    assert ran in metrics and "penguinmails_http_request_duration_seconds" in metrics
    assert "dramatiq_messages_total" in metrics
    assert ran in worker_metrics and "penguinmails_http_request" not in worker_metrics
    assert proc.returncode == 0
    with pytest.raises(httpx.TransportError):  # the API child is gone too
        httpx.get(f"{base}/health", timeout=1)
