"""Plan, subscription, payments and usage."""

from __future__ import annotations

import enum
from datetime import datetime

import strawberry
from sqlalchemy import select
from strawberry.types import Info

from graphql_api.errors import UserError
from graphql_api.ids import encode_id
from graphql_api.node import Node
from graphql_api.pagination import Connection, paginate
from models import billing
from penguinmails.settings import Settings
from services.billing import local_mode

SubscriptionStatus = strawberry.enum(billing.SubscriptionStatus, name="SubscriptionStatus")


@strawberry.enum
class BillingMode(enum.Enum):
    STRIPE = "STRIPE"
    LOCAL = "LOCAL"  # no payment provider: checkout activates a plan after a confirmation page


@strawberry.type
class PlanLimits:
    emails_per_month: int
    domains: int
    ips: int
    email_accounts: int
    seats: int


@strawberry.type
class Plan(Node):
    id: strawberry.ID
    name: str
    price_cents: int
    currency: str
    interval: str
    limits: PlanLimits

    @classmethod
    def from_row(cls, row: billing.Plan) -> Plan:
        return cls(
            id=encode_id("Plan", row.id),
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


@strawberry.type
class BillingSubscription:
    status: SubscriptionStatus
    current_period_end: datetime | None
    grace_until: datetime | None
    cancel_at_period_end: bool
    row: strawberry.Private[billing.Subscription]

    @classmethod
    def from_row(cls, row: billing.Subscription) -> BillingSubscription:
        return cls(
            status=row.status,
            current_period_end=row.current_period_end,
            grace_until=row.grace_until,
            cancel_at_period_end=row.cancel_at_period_end,
            row=row,
        )

    @strawberry.field
    async def plan(self, info: Info) -> Plan:
        return await info.context.loaders.plan.load(self.row.plan_id)


@strawberry.type
class Payment(Node):
    id: strawberry.ID
    amount_cents: int
    currency: str
    status: str
    paid_at: datetime | None
    invoice_url: str | None

    @classmethod
    def from_row(cls, row: billing.Payment) -> Payment:
        return cls(
            id=encode_id("Payment", row.id),
            amount_cents=row.amount_cents,
            currency=row.currency,
            status=row.status.value,
            paid_at=row.paid_at,
            invoice_url=row.hosted_invoice_url,
        )


@strawberry.type
class Billing:
    subscription: BillingSubscription | None
    mode: BillingMode

    @classmethod
    def of(cls, subscription: billing.Subscription | None, settings: Settings) -> Billing:
        return cls(
            subscription=BillingSubscription.from_row(subscription) if subscription else None,
            mode=BillingMode.LOCAL if local_mode(settings) else BillingMode.STRIPE,
        )

    @strawberry.field
    async def payments(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[Payment]:
        async with info.context.tenant_session() as session:
            return await paginate(
                session,
                select(billing.Payment),
                keys=(billing.Payment.created_at, billing.Payment.id),
                first=first,
                after=after,
                max_page=info.context.settings.graphql_max_page_size,
                node=Payment.from_row,
            )


@strawberry.type
class Usage:
    period_start: datetime
    emails_sent: int
    emails_limit: int
    domains: int
    ips: int
    email_accounts: int
    seats: int

    @classmethod
    def from_service(cls, usage) -> Usage:
        return cls(
            period_start=usage.period_start,
            emails_sent=usage.emails_sent,
            emails_limit=usage.emails_limit,
            domains=usage.domains,
            ips=usage.ips,
            email_accounts=usage.email_accounts,
            seats=usage.seats,
        )


@strawberry.type
class CheckoutPayload:
    url: str | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class BillingPayload:
    billing: Billing | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)
