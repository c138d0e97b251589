"""Job kinds and their handlers. A module registers its kinds with `@handler("kind")`; the
workers import the modules named in settings.job_modules."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from models.sessions import Database
from penguinmails.settings import Settings


@dataclass
class JobContext:
    """What a handler gets: the job, and the process's database and settings."""

    id: uuid.UUID
    kind: str
    tenant_id: uuid.UUID | None
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    db: Database
    settings: Settings
    redis: Redis
    # An earlier run of it ended (failed, deferred, cut short, lost): what it did may exist.
    # Not the same as attempt > 1, since a deferral gives its attempt back.
    ran_before: bool = False


Handler = Callable[[JobContext], Awaitable[None]]
# Runs all the jobs of one kind in a dispatched batch at once; returns, per job in order, None
# (succeeded) or the exception that job ends with (DeferJob, PermanentJobError, any failure).
BatchHandler = Callable[[list[JobContext]], Awaitable[list[BaseException | None]]]
_handlers: dict[str, Handler] = {}
_batch_handlers: dict[str, BatchHandler] = {}


class DeferJob(Exception):
    """Not now (a rate limit is full): run again after `seconds`, without using an attempt."""

    def __init__(self, seconds: float, reason: str) -> None:
        super().__init__(reason)
        self.seconds = seconds


class PermanentJobError(Exception):
    """The job can never succeed (bad payload, object gone): no retry, straight to dead."""


def handler(kind: str) -> Callable[[Handler], Handler]:
    return _register(kind, _handlers)


def batch_handler(kind: str) -> Callable[[BatchHandler], BatchHandler]:
    """For kinds whose jobs are cheaper together (one read and one write for many sends)."""
    return _register(kind, _batch_handlers)


def _register(kind: str, into: dict) -> Callable:
    def register(fn):
        if (kind in _handlers or kind in _batch_handlers) and into.get(kind) is not fn:
            raise ValueError(f"job kind {kind!r} has two handlers")
        into[kind] = fn
        return fn

    return register


def handler_for(kind: str) -> Handler | None:
    return _handlers.get(kind)


def batch_handler_for(kind: str) -> BatchHandler | None:
    return _batch_handlers.get(kind)


def kinds() -> list[str]:
    return sorted([*_handlers, *_batch_handlers])
