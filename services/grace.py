"""Payments owed: a failed payment makes the subscription PAST_DUE with a grace period
(`billing_grace_days`); the grace step suspends the tenant's sending once it has run out (the
queuer then holds its jobs, launches and resumes are refused, nothing is deleted); staff may
extend it (GRACE); a payment restores ACTIVE at once."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from models.billing import LIVE_STATUSES, Subscription, SubscriptionStatus
from models.sessions import Database
from models.tenancy import Tenant
from services import account_mail
from services.billing import OVERDUE_STATUSES, audit, set_status, take_events
from services.deliverability_events import Event
from services.errors import DomainError


async def payment_failed(
    session: AsyncSession, subscription: Subscription, grace_days: int, at: datetime
) -> None:
    """Opens the grace period; a later failure of the same debt does not move its end."""
    if subscription.status not in (SubscriptionStatus.TRIALING, SubscriptionStatus.ACTIVE):
        return
    subscription.grace_until = at + timedelta(days=grace_days)
    await set_status(
        session, subscription, SubscriptionStatus.PAST_DUE, at=at,
        reason=f"a payment failed; sending stops at {_when(subscription.grace_until)} unless it is paid",
    )  # fmt: skip
    await account_mail.notify_owners(session, subscription.tenant_id, "payment_failed")


async def payment_received(session: AsyncSession, subscription: Subscription, at: datetime) -> None:
    """What was owed is paid: ACTIVE now, and a suspended tenant's sends go out again."""
    if subscription.status not in OVERDUE_STATUSES:
        return
    was_suspended = subscription.status == SubscriptionStatus.SUSPENDED
    await set_status(
        session, subscription, SubscriptionStatus.ACTIVE, reason="payment received", at=at
    )
    if was_suspended:
        await account_mail.notify_owners(session, subscription.tenant_id, "restored")


async def enforce(db: Database, now: datetime) -> list[Event]:
    """The grace step, as of `now`: suspends each tenant whose grace has run out, and ends the
    subscriptions without Stripe (local mode) cancelled at a period end that has passed. Returns
    the deliverability events to publish (committed)."""
    async with db.system_session() as session:
        expired = await session.scalars(
            select(Subscription)
            .where(
                Subscription.status.in_((SubscriptionStatus.PAST_DUE, SubscriptionStatus.GRACE)),
                Subscription.grace_until <= now,
            )
            .order_by(Subscription.grace_until)
            .with_for_update(skip_locked=True)
        )
        for subscription in expired.all():
            await set_status(
                session, subscription, SubscriptionStatus.SUSPENDED, at=now,
                reason=f"payment overdue: the grace period ended at {_when(subscription.grace_until)}",
            )  # fmt: skip
            await account_mail.notify_owners(session, subscription.tenant_id, "suspended")
        ended = await session.scalars(
            select(Subscription)
            .where(
                Subscription.stripe_subscription_id.is_(None),
                Subscription.cancel_at_period_end,
                Subscription.current_period_end <= now,
                Subscription.status.in_(LIVE_STATUSES),
            )
            .with_for_update(skip_locked=True)
        )
        for subscription in ended.all():
            subscription.canceled_at = subscription.current_period_end
            await set_status(
                session, subscription, SubscriptionStatus.CANCELED, at=now,
                reason="cancelled at the end of its period",
            )  # fmt: skip
        events = take_events(session)
    return events


async def extend(
    db: Database, tenant: str, days: int, now: datetime, operator: str
) -> tuple[Subscription, list[Event]]:
    """Staff's extension of an owed subscription's grace by `days` from its end (or from now,
    when it has passed): GRACE, and a suspended tenant sends again until then. Audited. Returns
    the subscription and the deliverability events to publish (committed)."""
    if days < 1:
        raise DomainError("INVALID_DAYS", "the extension must be at least one day", "days")
    async with db.system_session() as session:
        found = await session.scalar(select(Tenant).where(_tenant_named(tenant)))
        if found is None:
            raise DomainError("NOT_FOUND", f"no tenant {tenant!r}", "tenant")
        subscription = await session.scalar(
            select(Subscription)
            .where(Subscription.tenant_id == found.id, Subscription.status.in_(OVERDUE_STATUSES))
            .with_for_update()
        )
        if subscription is None:
            raise DomainError(
                "NOT_OVERDUE", f"{found.name} owes nothing: no grace to extend", "tenant"
            )
        start = max(subscription.grace_until or now, now)
        subscription.grace_until = start + timedelta(days=days)
        reason = f"grace extended by {days} days to {_when(subscription.grace_until)} by {operator}"
        audit(session, subscription, "billing.grace_extended", "operator", None,
              {"days": days, "grace_until": subscription.grace_until.isoformat(), "by": operator})  # fmt: skip
        await set_status(
            session, subscription, SubscriptionStatus.GRACE, reason=reason, actor_kind="operator",
            tenant=found, at=now,
        )  # fmt: skip
        events = take_events(session)
    return subscription, events


def _tenant_named(name: str):
    try:
        return Tenant.id == uuid.UUID(name)
    except ValueError:
        return or_(Tenant.slug == name, Tenant.name == name)


def _when(at: datetime | None) -> str:
    return f"{at:%Y-%m-%d %H:%M} UTC" if at else "now"
