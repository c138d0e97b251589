"""Plan and its limits."""

from __future__ import annotations

import strawberry

from models.billing import Plan as PlanRow


@strawberry.type
class PlanLimits:
    emails_per_month: int
    domains: int
    ips: int
    email_accounts: int
    seats: int


@strawberry.type
class Plan:
    id: strawberry.ID
    name: str
    price_cents: int
    currency: str
    interval: str
    limits: PlanLimits

    @classmethod
    def from_row(cls, row: PlanRow) -> Plan:
        return cls(
            id=strawberry.ID(str(row.id)),
            name=row.name,
            price_cents=row.price_cents,
            currency=row.currency,
            interval=row.interval,
            limits=PlanLimits(
                emails_per_month=row.emails_per_month,
                domains=row.max_domains,
                ips=row.max_ips,
                email_accounts=row.max_email_accounts,
                seats=row.max_seats,
            ),
        )
