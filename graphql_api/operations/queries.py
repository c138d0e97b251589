"""queueStatus, and the live subscriptions (queue status, campaign progress, deliverability).

Subscriptions poll Postgres (queue, progress) at a bounded rate and push only on change;
deliverability events arrive on the tenant's Redis channel, published by workers.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncGenerator
from datetime import UTC, datetime

import strawberry
from strawberry.types import Info

from graphql_api.ids import decode_id, encode_id
from graphql_api.operations.types import CampaignProgress, DeliverabilityEvent, QueueStatus
from graphql_api.permissions import IsMember
from jobs.status import queue_status
from services import deliverability_events
from services.progress import campaign_progress

POLL_SECONDS = 0.5


@strawberry.type
class OperationsQuery:
    @strawberry.field(permission_classes=[IsMember])
    async def queue_status(self, info: Info) -> QueueStatus:
        async with info.context.tenant_session() as session:
            return QueueStatus.from_status(await queue_status(session))


@strawberry.type
class Subscription:
    @strawberry.subscription(permission_classes=[IsMember])
    async def queue_status(self, info: Info) -> AsyncGenerator[QueueStatus, None]:
        last = None
        while True:
            async with info.context.tenant_session() as session:
                current = await queue_status(session)
            key = (current.queued, current.scheduled, current.running, current.failed_last_hour,
                   current.dead, current.sent_last_minute,
                   tuple((t.ready, t.in_flight) for t in current.tiers))  # fmt: skip
            if key != last:
                last = key
                yield QueueStatus.from_status(current)
            await asyncio.sleep(POLL_SECONDS)

    @strawberry.subscription(permission_classes=[IsMember])
    async def campaign_progress(
        self, info: Info, campaign_id: strawberry.ID
    ) -> AsyncGenerator[CampaignProgress, None]:
        key = decode_id(campaign_id, "Campaign", "campaignId")
        last = None
        while True:
            async with info.context.tenant_session() as session:
                progress = await campaign_progress(session, key)
            if progress != last:
                last = progress
                yield CampaignProgress(
                    campaign_id=encode_id("Campaign", key),
                    sent=progress.sent,
                    opened=progress.opened,
                    clicked=progress.clicked,
                    replied=progress.replied,
                    bounced=progress.bounced,
                    queued=progress.queued,
                    at=datetime.now(UTC),
                )
            await asyncio.sleep(POLL_SECONDS)

    @strawberry.subscription(permission_classes=[IsMember])
    async def deliverability_events(self, info: Info) -> AsyncGenerator[DeliverabilityEvent, None]:
        access = await info.context.require_access()
        pubsub = info.context.redis.pubsub()
        await pubsub.subscribe(deliverability_events.channel(access.tenant_id))
        try:
            async for message in pubsub.listen():
                if message["type"] != "message":
                    continue
                event = json.loads(message["data"])
                yield DeliverabilityEvent(
                    kind=event["kind"],
                    subject_id=encode_id(event["subjectType"], uuid.UUID(event["subjectId"])),
                    message=event["message"],
                    at=datetime.fromisoformat(event["at"]),
                )
        finally:
            await pubsub.unsubscribe()
            await pubsub.aclose()
