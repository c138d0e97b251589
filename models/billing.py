"""Plans and their limits, Stripe subscriptions, payments and the processed webhook events (OLTP)."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, TenantOwned, Timestamps, UUIDPrimaryKey, enum_column


class SubscriptionStatus(enum.StrEnum):
    TRIALING = "TRIALING"
    ACTIVE = "ACTIVE"
    PAST_DUE = "PAST_DUE"
    GRACE = "GRACE"
    SUSPENDED = "SUSPENDED"
    CANCELED = "CANCELED"


# A subscription that has not ended: it has a running period (a suspended one too).
LIVE_STATUSES = (
    SubscriptionStatus.TRIALING,
    SubscriptionStatus.ACTIVE,
    SubscriptionStatus.PAST_DUE,
    SubscriptionStatus.GRACE,
    SubscriptionStatus.SUSPENDED,
)


class PaymentStatus(enum.StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    REFUNDED = "REFUNDED"


class Plan(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "plans"
    __table_args__ = (
        CheckConstraint("price_cents >= 0", name="price_not_negative"),
        CheckConstraint("interval IN ('month', 'year')", name="interval_known"),
        CheckConstraint(
            "emails_per_month >= 0 AND max_domains >= 0 AND max_ips >= 0 "
            "AND max_email_accounts >= 0 AND max_seats >= 1",
            name="limits_sane",
        ),
        {"schema": "app"},
    )

    # The catalogue's key for the plan, and its Stripe price's lookup key.
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    price_cents: Mapped[int] = mapped_column()
    currency: Mapped[str] = mapped_column(String(3), default="usd", server_default="usd")
    interval: Mapped[str] = mapped_column(String(8), default="month", server_default="month")
    # The price checkout sells and its product, kept in step by services/plan_catalogue.py.
    stripe_price_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    stripe_product_id: Mapped[str | None] = mapped_column(String(64))
    emails_per_month: Mapped[int] = mapped_column(BigInteger)
    max_domains: Mapped[int] = mapped_column()
    max_ips: Mapped[int] = mapped_column()
    max_email_accounts: Mapped[int] = mapped_column()
    max_seats: Mapped[int] = mapped_column()
    active: Mapped[bool] = mapped_column(default=True, server_default="true")
    # Listed by the `plans` query and open to sign-up; a private plan is assigned by the platform.
    public: Mapped[bool] = mapped_column(default=True, server_default="true")


class Subscription(UUIDPrimaryKey, TenantOwned, Timestamps, Base):
    __tablename__ = "subscriptions"
    __table_args__ = (
        Index("ix_subscriptions_tenant_id_status", "tenant_id", "status"),
        {"schema": "app"},
    )

    plan_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("app.plans.id", ondelete="RESTRICT")
    )
    status: Mapped[SubscriptionStatus] = mapped_column(
        enum_column(SubscriptionStatus, "subscription_status")
    )
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    current_period_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    current_period_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    grace_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    canceled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Stripe ends it at current_period_end; until then it stays as it is.
    cancel_at_period_end: Mapped[bool] = mapped_column(default=False, server_default="false")
    # The Stripe event time that last changed this row: older events arriving late are ignored.
    stripe_updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Payment(UUIDPrimaryKey, TenantOwned, Timestamps, Base):
    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint("amount_cents >= 0", name="amount_not_negative"),
        Index("ix_payments_tenant_id_created_at", "tenant_id", "created_at"),
        {"schema": "app"},
    )

    subscription_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("app.subscriptions.id", ondelete="SET NULL")
    )
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3), default="usd", server_default="usd")
    status: Mapped[PaymentStatus] = mapped_column(enum_column(PaymentStatus, "payment_status"))
    stripe_invoice_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    hosted_invoice_url: Mapped[str | None] = mapped_column(Text)
    # The Stripe event time that last changed this row: older events arriving late are ignored.
    stripe_updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class StripeEvent(Base):
    """Every Stripe webhook event applied, by its id: a redelivered event is applied once."""

    __tablename__ = "stripe_events"
    __table_args__ = (
        Index("ix_stripe_events_stripe_created_at", "stripe_created_at"),
        {"schema": "app"},
    )

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # Stripe's evt_… id
    type: Mapped[str] = mapped_column(String(100))
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("app.tenants.id", ondelete="SET NULL")
    )
    stripe_created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    processed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
