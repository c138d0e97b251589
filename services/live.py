"""Live change events: "this tenant's queue, and these campaigns' counts, may have changed".

Published best effort on the tenant's `live:{tenant}` channel once the change is committed, one
message per tenant per batch: `{"campaignIds": [...], "at": <unix time>}` (no state; `at`, when
it was published, lets a benchmark time it). Each API process's hub (graphql_api/live.py) turns
them into one shared read per tenant or campaign for all its subscribers. A lost event costs a
late push, never a wrong one: the hub also refreshes slowly.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

log = logging.getLogger("penguinmails.live")

CHANNEL_PATTERN = "live:*"


@dataclass(frozen=True)
class Change:
    tenant_id: uuid.UUID
    campaign_id: uuid.UUID | None = None


def channel(tenant_id: uuid.UUID | str) -> str:
    return f"live:{tenant_id}"


def messages(changes: Iterable[Change]) -> dict[str, str]:
    """One message per tenant, naming each of its campaigns once."""
    now = time.time()
    campaigns: dict[uuid.UUID, set[str]] = {}
    for change in changes:
        named = campaigns.setdefault(change.tenant_id, set())
        if change.campaign_id is not None:
            named.add(str(change.campaign_id))
    return {
        channel(tenant): json.dumps({"campaignIds": sorted(ids), "at": now})
        for tenant, ids in campaigns.items()
    }


def add(pipe, changes: Iterable[Change]) -> None:
    """Queue the publishes on a pipeline (sync or asyncio) the caller executes anyway."""
    for name, body in messages(changes).items():
        pipe.publish(name, body)


async def publish(redis: Redis | None, changes: Iterable[Change]) -> None:
    """One round trip whatever the number of changes; a failure only logs."""
    changes = list(changes)
    if redis is None or not changes:
        return
    for attempt in (1, 2):
        try:
            async with redis.pipeline(transaction=False) as pipe:
                add(pipe, changes)
                await pipe.execute()
            return
        except RedisConnectionError:
            # A pooled connection Redis dropped (a restart) fails once, and is discarded: the
            # second attempt takes a new one.
            if attempt == 1:
                continue
            log.warning("could not publish %d live changes", len(changes), exc_info=True)
        except RedisError:
            log.warning("could not publish %d live changes", len(changes), exc_info=True)
            return
