"""Plans and subscriptions against Stripe: Checkout for a plan, cancellation. (Webhooks, grace
periods and suspension arrive with the billing issue.)"""

from __future__ import annotations

import uuid

import stripe
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from models.billing import Plan, Subscription, SubscriptionStatus
from models.tenancy import Tenant
from penguinmails.settings import Settings
from services.errors import DomainError

LIVE_STATUSES = (
    SubscriptionStatus.TRIALING,
    SubscriptionStatus.ACTIVE,
    SubscriptionStatus.PAST_DUE,
    SubscriptionStatus.GRACE,
    SubscriptionStatus.SUSPENDED,
)


def stripe_client(settings: Settings) -> stripe.StripeClient:
    if settings.stripe_api_key is None:
        raise DomainError("BILLING_NOT_CONFIGURED", "payments are not set up on this platform")
    base = {"api": settings.stripe_api_base} if settings.stripe_api_base else {}
    return stripe.StripeClient(settings.stripe_api_key.get_secret_value(), base_addresses=base)


async def current_subscription(session: AsyncSession) -> Subscription | None:
    return await session.scalar(
        select(Subscription)
        .where(Subscription.status.in_(LIVE_STATUSES))
        .order_by(Subscription.created_at.desc())
        .limit(1)
    )


async def start_checkout(
    session: AsyncSession, settings: Settings, tenant_id: uuid.UUID, plan_id: uuid.UUID,
    customer_email: str | None,
) -> str:  # fmt: skip
    """A Stripe Checkout Session for the plan; returns the URL to send the user to."""
    plan = await session.get(Plan, plan_id)
    if plan is None or not plan.active:
        raise DomainError("NOT_FOUND", "no such plan", "planId")
    # A private plan is one the platform assigns (the catalogue's `public = false`), never sold.
    if not plan.stripe_price_id or not plan.public:
        raise DomainError("PLAN_NOT_PURCHASABLE", f"{plan.name} cannot be bought online", "planId")
    client = stripe_client(settings)
    tenant = await session.get(Tenant, tenant_id)
    params: dict = {
        "mode": "subscription",
        "line_items": [{"price": plan.stripe_price_id, "quantity": 1}],
        "client_reference_id": str(tenant_id),
        "metadata": {"tenant_id": str(tenant_id), "plan_id": str(plan.id)},
        "success_url": f"{settings.public_url}/billing/success",
        "cancel_url": f"{settings.public_url}/billing/cancelled",
    }
    if tenant.stripe_customer_id:
        params["customer"] = tenant.stripe_customer_id
    elif customer_email:
        params["customer_email"] = customer_email
    try:
        checkout = await client.v1.checkout.sessions.create_async(params)
    except stripe.StripeError as e:
        raise DomainError("PAYMENT_PROVIDER_ERROR", f"Stripe: {e.user_message or e}") from e
    return checkout.url


async def cancel_subscription(session: AsyncSession, settings: Settings) -> Subscription:
    """Cancels at Stripe first (when it is a Stripe subscription), then here."""
    subscription = await current_subscription(session)
    if subscription is None:
        raise DomainError("NO_SUBSCRIPTION", "there is no subscription to cancel")
    if subscription.stripe_subscription_id:
        try:
            await stripe_client(settings).v1.subscriptions.cancel_async(
                subscription.stripe_subscription_id
            )
        except stripe.StripeError as e:
            raise DomainError("PAYMENT_PROVIDER_ERROR", f"Stripe: {e.user_message or e}") from e
    await session.execute(
        update(Subscription)
        .where(Subscription.id == subscription.id)
        .values(status=SubscriptionStatus.CANCELED, canceled_at=func.now())
    )
    await session.refresh(subscription)
    return subscription
