"""Real Dramatiq worker processes and real queuers for the queue's tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text

from jobs.connections import system_dsn
from jobs.queuer import Queuer
from models.sessions import Database
from penguinmails.settings import Settings
from tests.jobs.handlers import EFFECT_TABLES

# Fast enough to test retries and lease expiry in seconds, not minutes.
QUEUE_SETTINGS = {
    "job_modules": ["jobs.handlers", "tests.jobs.handlers"],
    "job_backoff_base_seconds": 0.05,
    "job_backoff_max_seconds": 0.2,
    "queue_lease_seconds": 3.0,
    "queue_poll_seconds": 0.2,
    "job_timeout_seconds": 20.0,
}


def _env(settings: Settings, **overrides) -> dict[str, str]:
    env = {**os.environ}
    for key, value in {**QUEUE_SETTINGS, **overrides}.items():
        env[f"PENGUINMAILS_{key.upper()}"] = (
            json.dumps(value) if isinstance(value, list | dict) else str(value)
        )
    return env


@pytest.fixture(scope="session")
def queue_settings(settings: Settings) -> Settings:
    return settings.model_copy(update=QUEUE_SETTINGS)


@pytest.fixture
async def conn(queue_settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """The queue tier as the system role, as a queuer connects."""
    connection = await asyncpg.connect(system_dsn(queue_settings))
    yield connection
    await connection.close()


@pytest.fixture(scope="session")
async def effects(db: Database) -> None:
    async with db.owner_session() as s:
        for sql in EFFECT_TABLES.strip().split(";\n"):
            await s.execute(text(sql))
        await s.execute(
            text(
                f"GRANT ALL ON public.test_effects, public.test_effect_runs TO {db.settings.system_db_role}"
            )
        )


class WorkerProcess:
    def __init__(self, proc: subprocess.Popen, log: Path) -> None:
        self.proc, self.log = proc, log

    def kill(self) -> None:
        """kill -9 the whole process group: the dramatiq parent and its worker processes."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """Graceful: SIGTERM to Dramatiq's main process only, which tells its workers once (a
        worker signalled twice skips its clean shutdown)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def spawn_worker(
    settings: Settings, log: Path, processes: int = 1, threads: int = 4, **overrides
) -> WorkerProcess:
    """A worker process with the queue's fast settings and `overrides` (e.g. smtp_relay_port),
    its output in `log`; returns once every worker process is ready."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "penguinmails", "worker", "--processes", str(processes), "--threads", str(threads)],
        env=_env(settings, **overrides), stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while log.read_text().count("Worker process is ready") < processes:
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    return WorkerProcess(proc, log)


@pytest.fixture
def start_worker(
    queue_settings: Settings, tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(processes: int = 1, threads: int = 4, **overrides) -> WorkerProcess:
        """A worker; `overrides` are settings for it (e.g. smtp_relay_port)."""
        log = tmp_path / f"worker-{len(started)}.log"
        worker = spawn_worker(queue_settings, log, processes, threads, **overrides)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
async def run_queuer(queue_settings: Settings) -> AsyncIterator[Callable[..., Queuer]]:
    tasks: list[tuple[asyncio.Task, asyncio.Event]] = []

    def start(**overrides) -> Queuer:
        queuer = Queuer(queue_settings.model_copy(update=overrides))
        stop = asyncio.Event()
        tasks.append((asyncio.create_task(queuer.run(stop)), stop))
        return queuer

    yield start
    for task, stop in tasks:
        stop.set()
        await asyncio.wait_for(task, 10)
