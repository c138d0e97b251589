"""queueStatus, and the live subscriptions (queue status, campaign progress, deliverability).

The subscriptions follow the process's live hub (graphql_api/live.py): queue status and
campaign progress are read once per tenant or campaign for all subscribers and pushed on
change, the current state first; deliverability events stream from the moment of subscribing.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from datetime import datetime

import strawberry
from graphql import GraphQLError
from strawberry.types import Info

from graphql_api.ids import decode_id, encode_id
from graphql_api.live import Reading, pushed
from graphql_api.operations.types import CampaignProgress, DeliverabilityEvent, QueueStatus
from graphql_api.permissions import IsMember
from jobs.status import queue_status
from models.campaigns import Campaign


@strawberry.type
class OperationsQuery:
    @strawberry.field(permission_classes=[IsMember])
    async def queue_status(self, info: Info) -> QueueStatus:
        access = await info.context.require_access()
        async with info.context.tenant_session() as session:
            return QueueStatus.from_status(await queue_status(session, access.tenant_id))


def _queue_status(reading: Reading) -> QueueStatus:
    return QueueStatus.from_status(reading.value, at=reading.at)


def _campaign_progress(reading: Reading) -> CampaignProgress:
    progress = reading.value
    return CampaignProgress(
        campaign_id=encode_id("Campaign", progress.campaign_id),
        sent=progress.sent,
        opened=progress.opened,
        clicked=progress.clicked,
        replied=progress.replied,
        bounced=progress.bounced,
        queued=progress.queued,
        at=reading.at,
    )


@strawberry.type
class Subscription:
    @strawberry.subscription(permission_classes=[IsMember])
    async def queue_status(self, info: Info) -> AsyncGenerator[QueueStatus, None]:
        access = await info.context.require_access()
        websocket = info.context.request
        readings = info.context.live.queue_status(access.tenant_id, websocket)
        async for view in pushed(websocket, readings, _queue_status):
            yield view

    @strawberry.subscription(permission_classes=[IsMember])
    async def campaign_progress(
        self, info: Info, campaign_id: strawberry.ID
    ) -> AsyncGenerator[CampaignProgress, None]:
        access = await info.context.require_access()
        key = decode_id(campaign_id, "Campaign", "campaignId")
        async with info.context.tenant_session() as session:  # RLS: the tenant's own only
            if await session.get(Campaign, key) is None:
                raise GraphQLError("Campaign not found.", extensions={"code": "NOT_FOUND"})
        websocket = info.context.request
        readings = info.context.live.campaign_progress(access.tenant_id, key, websocket)
        async for view in pushed(websocket, readings, _campaign_progress):
            yield view

    @strawberry.subscription(permission_classes=[IsMember])
    async def deliverability_events(self, info: Info) -> AsyncGenerator[DeliverabilityEvent, None]:
        access = await info.context.require_access()
        live = info.context.live
        async for event in live.deliverability_events(access.tenant_id, info.context.request):
            yield DeliverabilityEvent(
                kind=event["kind"],
                subject_id=encode_id(event["subjectType"], uuid.UUID(event["subjectId"])),
                message=event["message"],
                at=datetime.fromisoformat(event["at"]),
            )
