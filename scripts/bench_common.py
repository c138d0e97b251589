"""What the benchmark scripts share: the servers (the URLs' or the embedded ones), scratch
databases, and the platform processes they start and stop."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Coroutine
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from penguinmails import embedded
from penguinmails.settings import PROJECT_ROOT, Settings, get_settings


def run_with_servers(
    bench: Callable[[Settings], Coroutine], run: Callable[[Coroutine], object] = asyncio.run
) -> None:
    """Runs `bench(settings)` against DATABASE_URL/REDIS_URL, or embedded servers started for
    it (and stopped after) when they are not set."""
    settings = get_settings()
    started: list[str] = []
    if not settings.database_url or not settings.redis_url:
        servers = embedded.ensure_services(settings)
        os.environ.update(servers.env)
        started = servers.started
        get_settings.cache_clear()
        settings = get_settings()
    try:
        run(bench(settings))
    finally:
        embedded.stop_services(settings, started)


async def admin(server_url: str, sql: str) -> None:
    """One statement on the server's maintenance database (CREATE / DROP DATABASE)."""
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def platform_env(database_url: str, redis_url: str, namespace: str, **settings: object) -> dict:
    """The environment of the platform processes a benchmark starts: its scratch database, its
    Redis namespace, and `settings` as PENGUINMAILS_* variables."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "PENGUINMAILS_DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "PENGUINMAILS_REDIS_URL": redis_url,
        "PENGUINMAILS_REDIS_NAMESPACE": namespace,
        **{f"PENGUINMAILS_{name.upper()}": str(value) for name, value in settings.items()},
    }


def start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """A platform process in a session of its own, its output in `log`."""
    return subprocess.Popen(
        args, env=env, cwd=PROJECT_ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def wait_for_workers(proc: subprocess.Popen, log: Path, processes: int) -> None:
    deadline = time.monotonic() + 60
    while log.read_text().count("Worker process is ready") < processes:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"workers did not start:\n{log.read_text()}")
        time.sleep(0.1)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the main process (Dramatiq's tells its workers), then SIGKILL its group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
