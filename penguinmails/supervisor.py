"""Runs the platform's processes side by side for `penguinmails up`, and stops them together."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import httpx


def penguinmails_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "penguinmails", *args]


def supervise(
    commands: dict[str, Sequence[str]],
    env: dict[str, str],
    *,
    ready_url: str | None = None,
    on_ready: Callable[[], None] = lambda: None,
) -> int:
    """Start every command; when one exits, or on Ctrl-C / SIGTERM, stop the rest. Calls
    `on_ready` once `ready_url` answers 200 (at once without one).
    Returns the exit code of the first process that ended on its own (0 on Ctrl-C)."""
    procs = {
        # Its own session: a terminal's Ctrl-C reaches `up` alone, which signals each child
        # once (Dramatiq's worker, signalled twice, skips its clean shutdown).
        name: subprocess.Popen(list(cmd), env={**os.environ, **env}, start_new_session=True)
        for name, cmd in commands.items()
    }
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    code = 0
    waiting = True
    try:
        while True:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    print(f"penguinmails: {name} exited with {proc.returncode}", file=sys.stderr)
                    return proc.returncode or 1
            if waiting and (ready_url is None or _answers(ready_url)):
                waiting = False
                on_ready()
            time.sleep(0.2)
    except KeyboardInterrupt:
        code = 0
    finally:
        # A terminal's Ctrl-C reaches `up` twice under `uv run` (the group's signal, and uv's
        # forwarded one): once stopping, the second must not cut the children's shutdown short.
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            _stop_all(list(procs.values()))
        finally:
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous)
    return code


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _stop_all(procs: list[subprocess.Popen], grace: float = 10.0) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
