"""OpsStatus: what the ops page shows platform staff, across every tenant."""

from __future__ import annotations

from datetime import datetime

import strawberry

from graphql_api.analytics.types import Alert
from graphql_api.operations.types import QueueTier
from services import ops


@strawberry.type
class PlatformQueue:
    queued: int
    scheduled: int
    running: int
    dead: int
    tiers: list[QueueTier]


@strawberry.type
class OutcomeMinute:
    """Sends, bounces and complaints of one minute, every tenant together."""

    at: datetime
    sent: int
    bounced: int
    complained: int


@strawberry.type
class PipelineLag:
    pipeline: str
    watermark: str
    lag_seconds: float | None  # since its last successful run; null: never ran
    last_error: str | None


@strawberry.type
class OpsStatus:
    queue: PlatformQueue
    minutes: list[OutcomeMinute]  # the last hour, oldest first
    alerts: list[Alert]
    pipelines: list[PipelineLag]
    at: datetime

    @classmethod
    def from_status(cls, s: ops.OpsStatus) -> OpsStatus:
        q = s.queue
        return cls(
            queue=PlatformQueue(
                queued=q.queued, scheduled=q.scheduled, running=q.running, dead=q.dead,
                tiers=[QueueTier(name=t.name, ready=t.ready, in_flight=t.in_flight) for t in q.tiers],
            ),
            minutes=[OutcomeMinute(at=m.at, sent=m.sent, bounced=m.bounced,
                                   complained=m.complained) for m in s.minutes],
            alerts=[Alert.from_row(a) for a in s.alerts],
            pipelines=[PipelineLag(pipeline=p.pipeline, watermark=p.watermark,
                                   lag_seconds=p.lag_seconds, last_error=p.last_error)
                       for p in s.pipelines],
            at=s.at,
        )  # fmt: skip
