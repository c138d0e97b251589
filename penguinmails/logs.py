"""Logging for every process: JSON lines in production, readable lines otherwise, each carrying
the request, tenant and job ids known where it was written (`scope`, `note`)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

from penguinmails.settings import Settings

IDS = ("request_id", "tenant_id", "job_id")
# Routine chatter shown only at DEBUG: the SMTP sink's and inbound server's dialogue (aiosmtpd),
# the scheduler's every tick (APScheduler), every request an HTTP client makes (httpx: `up`'s
# readiness checks, the Stripe and Loops clients).
QUIET = ("mail.log", "apscheduler", "httpx", "httpcore", "asyncssh")

# One dict per scope (a request, a job), shared by the tasks it starts: an id learnt in one of
# them (the tenant, once the caller is authenticated) reaches every later line of the scope.
_ids: ContextVar[dict[str, str] | None] = ContextVar("penguinmails_log_ids", default=None)


@contextmanager
def scope(**ids: object) -> Iterator[None]:
    """The lines logged inside carry these ids, and those of the enclosing scope."""
    token = _ids.set({**(_ids.get() or {}), **_strings(ids)})
    try:
        yield
    finally:
        _ids.reset(token)


def note(**ids: object) -> None:
    """Adds ids to the current scope (nothing outside one)."""
    current = _ids.get()
    if current is not None:
        current.update(_strings(ids))


def _strings(ids: dict[str, object]) -> dict[str, str]:
    return {name: str(value) for name, value in ids.items() if value is not None}


def stamp_records() -> None:
    """Every log record carries the ids of its scope as `record.ids`, taken when it is made
    (a handler may format it later, elsewhere). Idempotent."""
    make = logging.getLogRecordFactory()
    if getattr(make, "stamps_ids", False):
        return

    def stamped(*args, **kwargs) -> logging.LogRecord:
        record = make(*args, **kwargs)
        record.ids = dict(_ids.get() or {})
        return record

    stamped.stamps_ids = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(stamped)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, process, the ids, the traceback."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": self.process,
            **getattr(record, "ids", {}),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class ReadableFormatter(logging.Formatter):
    """`time LEVEL logger: message [request=… tenant=… job=…]`, then any traceback."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        ids = getattr(record, "ids", {})
        tags = " ".join(f"{name.removesuffix('_id')}={ids[name]}" for name in IDS if name in ids)
        return super().formatMessage(record) + (f" [{tags}]" if tags else "")


def configure(settings: Settings, process: str) -> None:
    """The one logging set-up of every process (api, worker, queuer, scheduler, up, …). Keeps
    the handlers a host installed (Dramatiq's worker logs through a pipe to its parent) and
    gives them this format; installs one on stderr when there is none."""
    stamp_records()
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler(sys.stderr))
    production = settings.environment == "production"
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter(process) if production else ReadableFormatter())
    logging.captureWarnings(True)  # Python's warnings as log lines too, not bare stderr text
    level = logging.getLevelName(settings.log_level)
    root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(level if level <= logging.DEBUG else logging.WARNING)
