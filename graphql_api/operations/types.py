"""QueueStatus, CampaignProgress, DeliverabilityEvent."""

from __future__ import annotations

from datetime import datetime

import strawberry

from jobs import status


@strawberry.type
class QueueTier:
    name: str
    ready: int
    in_flight: int


@strawberry.type
class QueueStatus:
    queued: int
    scheduled: int
    running: int
    failed_last_hour: int
    dead: int
    sent_last_minute: int
    tiers: list[QueueTier]
    at: datetime

    @classmethod
    def from_status(cls, s: status.QueueStatus, at: datetime | None = None) -> QueueStatus:
        return cls(
            queued=s.queued,
            scheduled=s.scheduled,
            running=s.running,
            failed_last_hour=s.failed_last_hour,
            dead=s.dead,
            sent_last_minute=s.sent_last_minute,
            tiers=[QueueTier(name=t.name, ready=t.ready, in_flight=t.in_flight) for t in s.tiers],
            at=at or s.at,
        )


@strawberry.type
class CampaignProgress:
    campaign_id: strawberry.ID
    sent: int
    opened: int
    clicked: int
    replied: int
    bounced: int
    queued: int
    at: datetime


@strawberry.type
class DeliverabilityEvent:
    kind: str
    subject_id: strawberry.ID
    message: str
    at: datetime
