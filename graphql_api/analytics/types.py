"""DailyStat, DeliverabilityStatus, Alert."""

from __future__ import annotations

from datetime import date, datetime

import strawberry

from graphql_api.infrastructure.types import Domain, SendingIp
from models import operations


@strawberry.type
class DailyStat:
    day: date
    sent: int = 0
    delivered: int = 0
    opened: int = 0
    clicked: int = 0
    replied: int = 0
    bounced: int = 0
    complained: int = 0
    unsubscribed: int = 0


@strawberry.type
class Alert:
    kind: str
    severity: str
    message: str
    at: datetime
    resolved_at: datetime | None = None  # null while the condition holds

    @classmethod
    def from_row(cls, row: operations.Alert) -> Alert:
        return cls(
            kind=row.kind,
            severity=row.severity.value,
            message=row.message,
            at=row.created_at,
            resolved_at=row.resolved_at,
        )


@strawberry.type
class DeliverabilityStatus:
    bounce_rate: float
    complaint_rate: float
    domains: list[Domain]
    ips: list[SendingIp]
    alerts: list[Alert]
