"""Benchmark: a whole campaign send against raw aiosmtplib into the same local SMTP sink.

(a) raw: CONNECTIONS concurrent aiosmtplib connections (one process, uvloop when importable),
    each sending a prebuilt ~4 KB message in a loop, MESSAGES in all; the clock runs from the
    first send to the sink's count reaching MESSAGES.
(b) platform: a 20,000-lead single-step campaign on a scratch database (tenant on the "scale"
    plan, a DKIM-keyed domain, 4 accounts, window all days 0–24 UTC, spacing 0, limits high),
    `penguinmails worker --processes 2` and `penguinmails queuer` started beforehand and
    relaying to the sink; the clock runs from the launch's COMMIT until the sink has accepted
    every message (bounded wait: TIMEOUT_SECONDS, then the partial rate is reported). The SENT
    rows in content.email_messages are counted afterwards.

The sink (scripts/bench_send_sink.py) is a separate process: a minimal asyncio SMTP server
on uvloop that only counts accepted messages (its `XCOUNT` verb reports the count), so it is not
the limit. CONNECTIONS defaults to the platform's own concurrency: 2 worker processes × the
SMTP pool size of 8 (services.smtp.ConnectionPool).

Runs on a scratch database created on the server DATABASE_URL names and a Redis namespace of
its own; every process it starts is stopped, the database dropped and the Redis keys deleted:

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/0 \
        uv run python scripts/bench_send.py [--messages 20000] [--connections 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from email.message import EmailMessage as MimeMessage
from pathlib import Path

import aiosmtplib
import redis
from sqlalchemy import func, select, update

from models.billing import Plan
from models.content import EmailMessage, MessageStatus
from models.sessions import Database
from models.tenancy import Tenant
from penguinmails import embedded, migrations
from penguinmails.settings import PROJECT_ROOT, Settings, get_settings
from scripts_path import add_scripts_path  # noqa: F401  (see below)

PROCESSES = 2
ACCOUNTS = 4
TIMEOUT_SECONDS = 600
HIGH_RATE = "10000000"
LOGS = Path(tempfile.mkdtemp(prefix="pm_bench_send_"))
