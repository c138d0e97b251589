"""The processes' logs: `penguinmails api` read as an operator's log collector reads it, and a
worker's lines about a job."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import sys
import time
import uuid

import asyncpg
import httpx
import pytest

from graphql_api.ids import parse_id
from jobs.connections import system_dsn
from penguinmails import logs
from penguinmails.settings import Settings
from tests.graphql_api.conftest import Api, sign_up


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_the_production_api_logs_json_lines_with_the_request_and_tenant_and_an_unauthenticated_query_as_one_line() -> (
    None
):
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "penguinmails", "api", "--port", str(port),
        env={
            **os.environ,
            "PENGUINMAILS_ENVIRONMENT": "production",
            "PENGUINMAILS_SECRET_KEY": secrets.token_urlsafe(32),
        },
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if (await http.get(f"{base}/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.returncode is None, "the API exited"
                assert time.monotonic() < deadline, "the API did not start"
                await asyncio.sleep(0.1)
            account = await sign_up(Api(base, None, http), "Logs", verified=False)  # type: ignore[arg-type]
            member = await http.post(
                f"{base}/graphql",
                json={"query": "{ tenant { id } }"},
                headers={"Authorization": f"Bearer {account.token}", "X-Request-ID": "req-member"},
            )
            anonymous = await http.post(
                f"{base}/graphql",
                json={"query": "{ tenants { id } }"},
                headers={"X-Request-ID": "req-anonymous"},
            )
    finally:
        proc.terminate()
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    output = out.decode()
    assert member.json()["data"]["tenant"]["id"] == account.tenant
    assert anonymous.json()["errors"][0]["message"] == "sign in first"
    # Every line the server wrote is JSON (after it, Python's resource tracker, another
    # process, may warn about semaphores on stderr).
    written = output.splitlines()
    last = next(n for n, line in enumerate(written) if "Finished server process" in line)
    lines = [json.loads(line) for line in written[: last + 1]]
    [_, tenant_id] = parse_id(account.tenant) or (None, None)
    member_lines = [line for line in lines if line.get("request_id") == "req-member"]
    assert member_lines and all(line["tenant_id"] == str(tenant_id) for line in member_lines)
    assert {"time", "level", "logger", "message"} <= member_lines[0].keys()
    assert member_lines[0]["process"] == "api"
    refused = [line for line in lines if line.get("request_id") == "req-anonymous"]
    assert [line["message"] for line in refused if line["logger"] == "penguinmails.graphql"] == [
        "sign in first at tenants"
    ]
    assert not any("exception" in line for line in lines)
    assert "Traceback" not in output


async def test_a_jobs_log_lines_carry_its_job_and_tenant(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    from jobs.runner import Runner
    from tests.jobs import handlers  # noqa: F401  (the always_fails job kind)

    logs.stamp_records()  # as logs.configure does in every process
    tenant = uuid.uuid4()
    conn = await asyncpg.connect(system_dsn(settings))
    try:  # dispatched, as a queuer leaves it (no queuer takes it), and dead once it fails
        job_id = await conn.fetchval(
            "INSERT INTO queue.jobs (kind, tenant_id, status, attempts, max_attempts, lease_until)"
            " VALUES ('always_fails', $1, 'dispatched', 1, 1, now() + interval '1 minute')"
            " RETURNING id",
            tenant,
        )
    finally:
        await conn.close()
    runner = Runner(settings)
    try:
        with caplog.at_level(logging.WARNING, logger="penguinmails.jobs"):
            await runner.run([[str(job_id), 1]])
    finally:
        await (await runner.pool()).close()
        await runner.db.dispose()
        if runner.redis is not None:
            await runner.redis.aclose()
    [failed] = [r for r in caplog.records if str(job_id) in r.getMessage()]
    line = json.loads(logs.JsonFormatter("worker").format(failed))
    assert line["job_id"] == str(job_id) and line["tenant_id"] == str(tenant)
    assert line["level"] == "WARNING" and line["process"] == "worker"
