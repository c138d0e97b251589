"""`penguinmails …` run as an operator runs it, in a process of its own."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from penguinmails.settings import Settings


async def run_cli(settings: Settings, *args: str, **env: str | Path) -> tuple[int, str, str]:
    """Runs `penguinmails ARGS` against the settings' database (without waiting in a way that
    would stop this event loop: a Stripe test server may be serving in it); (exit code, stdout,
    stderr)."""
    environment = {**os.environ, "DATABASE_URL": settings.database_url}
    environment.update((name, str(value)) for name, value in env.items())
    if "PENGUINMAILS_STRIPE_API_KEY" not in env:
        environment.pop("PENGUINMAILS_STRIPE_API_KEY", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "penguinmails", *args, env=environment,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    return proc.returncode, out.decode(), err.decode()
