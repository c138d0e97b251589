"""DailyStat, DeliverabilityStatus, Alert."""

from __future__ import annotations

from datetime import date, datetime

import strawberry

from graphql_api.infrastructure.types import Domain, SendingIp


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


@strawberry.type
class DeliverabilityStatus:
    bounce_rate: float
    complaint_rate: float
    domains: list[Domain]
    ips: list[SendingIp]
    alerts: list[Alert]
