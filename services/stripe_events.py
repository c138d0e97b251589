"""Stripe webhook events applied to tenants, subscriptions and payments: each event once (its id
stored in the same transaction as its effect), and never an older state over a newer one; and
the reconciliation that applies, from Stripe's list of events, the ones a webhook outage lost."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from models.billing import (
    LIVE_STATUSES,
    Payment,
    PaymentStatus,
    Plan,
    StripeEvent,
    Subscription,
    SubscriptionStatus,
)
from models.tenancy import Tenant
from services import billing, deliverability_events, grace

if TYPE_CHECKING:
    import stripe
    from redis.asyncio import Redis

    from models.sessions import Database

Event = dict[str, Any]

SUBSCRIPTION_STATUSES = {
    "trialing": SubscriptionStatus.TRIALING,
    "active": SubscriptionStatus.ACTIVE,
    "past_due": SubscriptionStatus.PAST_DUE,
    "unpaid": SubscriptionStatus.PAST_DUE,
    "canceled": SubscriptionStatus.CANCELED,
}
INVOICE_STATUSES = {
    "invoice.finalized": PaymentStatus.PENDING,
    "invoice.payment_failed": PaymentStatus.FAILED,
    "invoice.paid": PaymentStatus.SUCCEEDED,
}


async def apply_event(session: AsyncSession, event: Event, *, grace_days: int) -> bool:
    """Records the event and applies it; False when its id was already recorded (a replay).

    The session is a system session: the caller's commit makes the record and the effect one,
    then publishes `billing.take_events(session)`. A failed payment opens `grace_days` of
    grace (services/grace.py)."""
    created = _time(event["created"])
    recorded = await session.scalar(
        insert(StripeEvent)
        .values(id=event["id"], type=event["type"], stripe_created_at=created, payload=event)
        .on_conflict_do_nothing(index_elements=[StripeEvent.id])
        .returning(StripeEvent.id)
    )
    if recorded is None:
        return False
    obj = event["data"]["object"]
    tenant: Tenant | None = None
    try:
        if event["type"] == "checkout.session.completed":
            tenant = await _checkout_completed(session, obj, created)
        elif event["type"].startswith("customer.subscription."):
            tenant = await _tenant_of_customer(session, obj.get("customer"))
            if tenant is not None:
                await _subscription_changed(session, tenant, obj, created, grace_days)
        elif event["type"] in INVOICE_STATUSES:
            tenant = await _tenant_of_customer(session, obj.get("customer"))
            if tenant is not None:
                status = INVOICE_STATUSES[event["type"]]
                await _invoice_changed(session, tenant, obj, status, created, grace_days)
    except _OtherTenants:
        return True  # recorded, not applied
    if tenant is not None:
        record = await session.get(StripeEvent, event["id"])
        record.tenant_id = tenant.id
    return True


# Stripe lists events for 30 days; events that reach it out of order may be stored after newer
# ones, so the list is read again from a little before the newest stored.
LISTED_FOR = timedelta(days=30)
OVERLAP = timedelta(minutes=5)


async def reconcile(
    db: Database, client: stripe.StripeClient, *, grace_days: int, redis: Redis | None = None,
    page_size: int = 100,
) -> int:  # fmt: skip
    """Applies the events Stripe lists that are not stored (a webhook outage's), oldest first,
    each in a transaction of its own, publishing their deliverability events on `redis`;
    returns how many were new."""
    async with db.system_session() as session:
        newest = await session.scalar(select(func.max(StripeEvent.stripe_created_at)))
    since = newest - OVERLAP if newest is not None else datetime.now(UTC) - LISTED_FOR
    listed: list[Event] = []
    params: dict[str, Any] = {"created": {"gt": int(since.timestamp())}, "limit": page_size}
    while True:
        page = await client.v1.events.list_async(params)  # type: ignore[arg-type]
        listed.extend(event.to_dict(for_json=True) for event in page.data)
        if not page.has_more or not page.data:
            break
        params = {**params, "starting_after": page.data[-1].id}
    # Stripe lists newest first; applied in the order they happened (the same second: in the
    # reverse of the list's order), a later state wins.
    applied = 0
    for event in sorted(reversed(listed), key=lambda e: e["created"]):
        async with db.system_session() as session:
            applied += await apply_event(session, event, grace_days=grace_days)
            events = billing.take_events(session)
        if redis is not None:
            await deliverability_events.publish(redis, events)
    return applied


async def _checkout_completed(
    session: AsyncSession, checkout: Event, at: datetime
) -> Tenant | None:
    """The tenant (named by the session we created) becomes the Stripe customer, and its
    subscription the Stripe subscription, ACTIVE once paid."""
    tenant = await session.get(Tenant, _uuid(checkout.get("client_reference_id")))
    if tenant is None:
        tenant = await session.get(Tenant, _uuid((checkout.get("metadata") or {}).get("tenant_id")))
    if tenant is None:
        return None
    if checkout.get("customer") and tenant.stripe_customer_id != checkout["customer"]:
        tenant.stripe_customer_id = checkout["customer"]
    stripe_id = checkout.get("subscription")
    if not stripe_id:
        return tenant
    subscription = await _subscription_for(session, tenant, stripe_id)
    if subscription is not None and _is_older(at, subscription.stripe_updated_at):
        return tenant
    plan_id = _uuid((checkout.get("metadata") or {}).get("plan_id"))
    plan = await session.get(Plan, plan_id) if plan_id else None
    if subscription is None:
        if plan is None:
            return tenant
        subscription = Subscription(tenant_id=tenant.id, plan_id=plan.id)
        session.add(subscription)
    subscription.stripe_subscription_id = stripe_id
    if plan is not None:
        subscription.plan_id = tenant.plan_id = plan.id
    if checkout.get("payment_status") in ("paid", "no_payment_required"):
        await billing.set_status(
            session, subscription, SubscriptionStatus.ACTIVE, reason="checkout completed",
            tenant=tenant, at=at,
        )  # fmt: skip
    elif subscription.status is None:
        await billing.set_status(
            session, subscription, SubscriptionStatus.TRIALING, reason="checkout completed",
            tenant=tenant, at=at,
        )  # fmt: skip
    subscription.stripe_updated_at = at
    return tenant


async def _subscription_changed(
    session: AsyncSession, tenant: Tenant, stripe_sub: Event, at: datetime, grace_days: int
) -> None:
    subscription = await _subscription_for(session, tenant, stripe_sub["id"])
    if subscription is not None and _is_older(at, subscription.stripe_updated_at):
        return
    status = SUBSCRIPTION_STATUSES.get(stripe_sub.get("status"))
    items = (stripe_sub.get("items") or {}).get("data") or [{}]
    price_id = (items[0].get("price") or {}).get("id")
    plan_id = await session.scalar(select(Plan.id).where(Plan.stripe_price_id == price_id))
    if subscription is None:
        if plan_id is None or status is None:
            return  # nothing here to tie it to: recorded, not applied
        subscription = Subscription(tenant_id=tenant.id, plan_id=plan_id)
        session.add(subscription)
    subscription.stripe_subscription_id = stripe_sub["id"]
    if plan_id is not None:
        subscription.plan_id = plan_id
        if status != SubscriptionStatus.CANCELED:
            tenant.plan_id = plan_id
    if status is not None:
        await _subscription_status(session, tenant, subscription, status, at, grace_days)
    subscription.cancel_at_period_end = bool(stripe_sub.get("cancel_at_period_end"))
    # Newer API versions keep the period on the item, older ones on the subscription.
    start = stripe_sub.get("current_period_start") or items[0].get("current_period_start")
    end = stripe_sub.get("current_period_end") or items[0].get("current_period_end")
    subscription.current_period_start = _time(start) if start else None
    subscription.current_period_end = _time(end) if end else None
    ended = stripe_sub.get("ended_at") or stripe_sub.get("canceled_at")
    if status == SubscriptionStatus.CANCELED:
        subscription.canceled_at = _time(ended) if ended else at
    subscription.stripe_updated_at = at


async def _subscription_status(
    session: AsyncSession, tenant: Tenant, subscription: Subscription,
    status: SubscriptionStatus, at: datetime, grace_days: int,
) -> None:  # fmt: skip
    """Stripe's status, where the grace period has a say: past_due opens it (once: a suspended
    or extended one stays as it is), a paid status ends it."""
    if status == SubscriptionStatus.PAST_DUE:
        if subscription.status is None:  # first heard of as past due
            subscription.grace_until = at + timedelta(days=grace_days)
            await billing.set_status(session, subscription, status, reason="payment past due",
                                     tenant=tenant, at=at)  # fmt: skip
        else:
            await grace.payment_failed(session, subscription, grace_days, at)
    elif status != SubscriptionStatus.CANCELED and subscription.status in billing.OVERDUE_STATUSES:
        await grace.payment_received(session, subscription, at)
        await billing.set_status(session, subscription, status, reason="paid", tenant=tenant, at=at)
    else:
        reason = "ended" if status == SubscriptionStatus.CANCELED else "updated by Stripe"
        await billing.set_status(session, subscription, status, reason=reason, tenant=tenant, at=at)


async def _invoice_changed(
    session: AsyncSession, tenant: Tenant, invoice: Event, status: PaymentStatus, at: datetime,
    grace_days: int,
) -> None:  # fmt: skip
    """One payment row per invoice, holding its latest state."""
    payment = await session.scalar(
        select(Payment).where(Payment.stripe_invoice_id == invoice["id"])
    )
    if payment is not None and (
        _is_older(at, payment.stripe_updated_at)
        # Paid is final: a failure sent in the same second does not undo it.
        or (
            at == payment.stripe_updated_at
            and payment.status == PaymentStatus.SUCCEEDED
            and status != PaymentStatus.SUCCEEDED
        )
    ):
        return
    stripe_sub_id = invoice.get("subscription") or (
        ((invoice.get("parent") or {}).get("subscription_details") or {}).get("subscription")
    )
    # Looked up before a new payment is added: the query would flush it half-filled.
    subscription = stripe_sub_id and await session.scalar(
        select(Subscription).where(
            Subscription.tenant_id == tenant.id,
            Subscription.stripe_subscription_id == stripe_sub_id,
        )
    )
    if payment is None:
        payment = Payment(tenant_id=tenant.id, stripe_invoice_id=invoice["id"])
        session.add(payment)
    if stripe_sub_id:
        payment.subscription_id = subscription.id if subscription else None
    paid = status == PaymentStatus.SUCCEEDED
    payment.amount_cents = invoice.get("amount_paid" if paid else "amount_due") or 0
    payment.currency = (invoice.get("currency") or "usd").lower()
    payment.status = status
    payment.hosted_invoice_url = invoice.get("hosted_invoice_url")
    paid_at = (invoice.get("status_transitions") or {}).get("paid_at")
    payment.paid_at = (_time(paid_at) if paid_at else at) if paid else None
    payment.stripe_updated_at = at
    if subscription and not _is_older(at, subscription.stripe_updated_at):
        if status == PaymentStatus.FAILED:
            await grace.payment_failed(session, subscription, grace_days, at)
        elif status == PaymentStatus.SUCCEEDED:
            await grace.payment_received(session, subscription, at)


async def _tenant_of_customer(session: AsyncSession, customer: str | None) -> Tenant | None:
    if not customer:
        return None
    return await session.scalar(select(Tenant).where(Tenant.stripe_customer_id == customer))


async def _subscription_for(
    session: AsyncSession, tenant: Tenant, stripe_id: str
) -> Subscription | None:
    """The row of this Stripe subscription, or else the tenant's live one not yet at Stripe
    (the trial from sign-up) which it replaces."""
    subscription = await session.scalar(
        select(Subscription).where(Subscription.stripe_subscription_id == stripe_id)
    )
    if subscription is not None:
        if subscription.tenant_id != tenant.id:
            raise _OtherTenants
        return subscription
    return await session.scalar(
        select(Subscription)
        .where(
            Subscription.tenant_id == tenant.id,
            Subscription.stripe_subscription_id.is_(None),
            Subscription.status.in_(LIVE_STATUSES),
        )
        .order_by(Subscription.created_at.desc())
        .limit(1)
    )


class _OtherTenants(Exception):
    """The Stripe subscription belongs to another tenant here: the event changes nothing."""


def _is_older(at: datetime, applied: datetime | None) -> bool:
    return applied is not None and at < applied


def _time(seconds: int) -> datetime:
    return datetime.fromtimestamp(int(seconds), UTC)


def _uuid(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None
