"""Deliverability events: a domain that stops or starts verifying, an IP listed or delisted, a
guard that throttles or pauses. Published on the tenant's Redis channel once the change is
committed; the `deliverabilityEvents` subscription relays them."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from redis.asyncio import Redis

log = logging.getLogger("penguinmails.deliverability")


@dataclass(frozen=True)
class Event:
    tenant_id: uuid.UUID
    kind: str  # domain_failed, domain_verified, …
    subject_type: str  # the API type of what it is about: Domain, SendingIp, EmailAccount
    subject_id: uuid.UUID
    message: str
    at: datetime


PATTERN = "events:*:deliverability"  # every tenant's channel (the API's live hub)


def channel(tenant_id: uuid.UUID | str) -> str:
    return f"events:{tenant_id}:deliverability"


async def publish(redis: Redis, events: list[Event]) -> None:
    """Best effort: a live view that misses one still reads the state from the API."""
    for event in events:
        body = {
            "kind": event.kind, "subjectType": event.subject_type,
            "subjectId": str(event.subject_id), "message": event.message,
            "at": event.at.isoformat(),
        }  # fmt: skip
        try:
            await redis.publish(channel(event.tenant_id), json.dumps(body))
        except Exception:
            log.warning("could not publish the deliverability event %s", event.kind, exc_info=True)
