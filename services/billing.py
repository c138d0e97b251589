"""Plans and subscriptions: Checkout for a plan (Stripe, or the local mode without a key), the
customer portal, cancellation at the period's end, plan changes with proration; and the status
of a subscription moved in one place, with its audit row, its deliverability event and the
tenant's sending suspended or restored with it."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import jwt
import stripe
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models.billing import LIVE_STATUSES, Plan, Subscription, SubscriptionStatus
from models.tenancy import AuditLog, Tenant, TenantStatus
from penguinmails.settings import Settings
from services import usage as usage_
from services.deliverability_events import Event
from services.errors import DomainError

log = logging.getLogger("penguinmails.billing")
T = TypeVar("T")

# Owed money: the grace step suspends these once grace_until has passed.
OVERDUE_STATUSES = (
    SubscriptionStatus.PAST_DUE,
    SubscriptionStatus.GRACE,
    SubscriptionStatus.SUSPENDED,
)
LOCAL_CHECKOUT_PATH = "/billing/local-checkout"
LOCAL_CHECKOUT_TTL = timedelta(hours=1)


def local_mode(settings: Settings) -> bool:
    """No Stripe key: checkout activates a plan after a confirmation page, and nothing is paid."""
    return settings.stripe_api_key is None


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


# --- checkout, portal, cancellation, plan changes --------------------------------------------


async def start_checkout(
    session: AsyncSession, settings: Settings, tenant_id: uuid.UUID, plan_id: uuid.UUID,
    customer_email: str | None,
) -> str:  # fmt: skip
    """Where to send the user to buy the plan: a Stripe Checkout Session (the tenant's Stripe
    customer created at its first checkout), or in local mode the API's confirmation page."""
    plan = await _plan_for_sale(session, settings, plan_id)
    # One checkout at a time per tenant, so two cannot both create its Stripe customer.
    tenant = await session.get(Tenant, tenant_id, with_for_update=True)
    subscription = await current_subscription(session)
    if subscription is not None and subscription.stripe_subscription_id:
        raise DomainError(
            "ALREADY_SUBSCRIBED", "There is a subscription already; change its plan instead.",
            "planId",
        )  # fmt: skip
    if local_mode(settings):
        return local_checkout_url(settings, tenant_id, plan.id)
    client = stripe_client(settings)
    if tenant.stripe_customer_id is None:
        customer = await _stripe(
            client.v1.customers.create_async(
                {"email": customer_email or "", "name": tenant.name,
                 "metadata": {"tenant_id": str(tenant_id)}},
                # A retry after a failure below gets the same customer, not a second one.
                {"idempotency_key": f"penguinmails-customer-{tenant_id}"},
            )
        )  # fmt: skip
        tenant.stripe_customer_id = customer.id
    checkout = await _stripe(
        client.v1.checkout.sessions.create_async({
            "mode": "subscription",
            "customer": tenant.stripe_customer_id,
            "line_items": [{"price": plan.stripe_price_id, "quantity": 1}],
            "client_reference_id": str(tenant_id),
            "metadata": {"tenant_id": str(tenant_id), "plan_id": str(plan.id)},
            "success_url": f"{settings.public_url}/billing/success",
            "cancel_url": f"{settings.public_url}/billing/cancelled",
        })
    )  # fmt: skip
    return checkout.url


async def open_billing_portal(
    session: AsyncSession, settings: Settings, tenant_id: uuid.UUID
) -> str:
    """A Stripe customer-portal session's URL: cards, invoices, the billing address."""
    if local_mode(settings):
        raise DomainError(
            "BILLING_LOCAL_MODE", "Billing is in local mode (no Stripe key): there is no portal."
        )
    tenant = await session.get(Tenant, tenant_id)
    if tenant.stripe_customer_id is None:
        raise DomainError("NO_BILLING_ACCOUNT", "Buy a plan first: there is nothing to manage yet.")
    portal = await _stripe(
        stripe_client(settings).v1.billing_portal.sessions.create_async(
            {"customer": tenant.stripe_customer_id, "return_url": f"{settings.public_url}/billing"}
        )
    )
    return portal.url


async def cancel_subscription(
    session: AsyncSession, settings: Settings, actor_user_id: uuid.UUID | None = None
) -> Subscription:
    """Cancels at the end of the paid period: the subscription stays as it is, with
    cancel_at_period_end, until Stripe ends it (or, without Stripe, the grace step does). A
    subscription with no period to run out (the trial from sign-up) ends now."""
    subscription = await current_subscription(session)
    if subscription is None:
        raise DomainError("NO_SUBSCRIPTION", "there is no subscription to cancel")
    if subscription.stripe_subscription_id:
        await _stripe(
            stripe_client(settings).v1.subscriptions.update_async(
                subscription.stripe_subscription_id, {"cancel_at_period_end": True}
            )
        )
    elif subscription.current_period_end is None or subscription.current_period_end <= _now():
        await set_status(
            session, subscription, SubscriptionStatus.CANCELED, reason="cancelled by the tenant",
            actor_kind="user", actor_user_id=actor_user_id,
        )  # fmt: skip
        subscription.canceled_at = _now()
        return subscription
    subscription.cancel_at_period_end = True
    audit(session, subscription, "billing.cancel_at_period_end", "user", actor_user_id, {})
    return subscription


async def change_plan(
    session: AsyncSession, settings: Settings, tenant_id: uuid.UUID, plan_id: uuid.UUID,
    actor_user_id: uuid.UUID | None = None,
) -> Subscription:  # fmt: skip
    """Switches the subscription to the plan now, prorated by Stripe; a pending cancellation is
    withdrawn. Refused when the tenant holds more than the plan allows (PLAN_TOO_SMALL)."""
    plan = await _plan_for_sale(session, settings, plan_id)
    subscription = await current_subscription(session)
    if subscription is None:
        raise DomainError("NO_SUBSCRIPTION", "There is no subscription: buy a plan first.")
    if subscription.plan_id == plan.id:
        return subscription
    await _check_fits(session, tenant_id, plan)
    if subscription.stripe_subscription_id:
        client = stripe_client(settings)
        current = await _stripe(
            client.v1.subscriptions.retrieve_async(subscription.stripe_subscription_id)
        )
        item = current["items"]["data"][0]["id"]
        await _stripe(
            client.v1.subscriptions.update_async(subscription.stripe_subscription_id, {
                "items": [{"id": item, "price": plan.stripe_price_id}],
                "proration_behavior": "create_prorations",
                "cancel_at_period_end": False,
            })
        )  # fmt: skip
    elif not local_mode(settings):
        raise DomainError(
            "CHECKOUT_REQUIRED", f"Buy {plan.name} through checkout: there is no card on file.",
            "planId",
        )  # fmt: skip
    before = subscription.plan_id
    subscription.plan_id = plan.id
    subscription.cancel_at_period_end = False
    tenant = await session.get(Tenant, tenant_id)
    tenant.plan_id = plan.id
    audit(session, subscription, "billing.plan_changed", "user", actor_user_id,
           {"from": str(before), "to": str(plan.id)})  # fmt: skip
    return subscription


async def _plan_for_sale(session: AsyncSession, settings: Settings, plan_id: uuid.UUID) -> Plan:
    plan = await session.get(Plan, plan_id)
    if plan is None or not plan.active:
        raise DomainError("NOT_FOUND", "no such plan", "planId")
    # A private plan is one the platform assigns (the catalogue's `public = false`), never sold.
    if not plan.public or (not plan.stripe_price_id and not local_mode(settings)):
        raise DomainError("PLAN_NOT_PURCHASABLE", f"{plan.name} cannot be bought online", "planId")
    return plan


async def _check_fits(session: AsyncSession, tenant_id: uuid.UUID, plan: Plan) -> None:
    used = await usage_.usage(session, tenant_id)
    over = [
        f"{count} {noun} (it allows {limit})"
        for count, limit, noun in (
            (used.domains, plan.max_domains, "domains"),
            (used.ips, plan.max_ips, "sending IPs"),
            (used.email_accounts, plan.max_email_accounts, "email accounts"),
            (used.seats, plan.max_seats, "seats"),
        )
        if count > limit
    ]
    if over:
        raise DomainError(
            "PLAN_TOO_SMALL", f"The {plan.name} plan is too small: you have {', '.join(over)}.",
            "planId",
        )  # fmt: skip


async def _stripe(call: Awaitable[T]) -> T:
    try:
        return await call
    except stripe.StripeError as e:
        raise DomainError("PAYMENT_PROVIDER_ERROR", f"Stripe: {e.user_message or e}") from e


# --- local mode ------------------------------------------------------------------------------


def local_checkout_url(settings: Settings, tenant_id: uuid.UUID, plan_id: uuid.UUID) -> str:
    now = _now()
    token = jwt.encode(
        {"typ": "local_checkout", "sub": str(tenant_id), "plan": str(plan_id),
         "iat": now, "exp": now + LOCAL_CHECKOUT_TTL},
        settings.secret_key.get_secret_value(), algorithm="HS256",
    )  # fmt: skip
    return f"{settings.public_url}{LOCAL_CHECKOUT_PATH}?token={token}"


def read_local_checkout(settings: Settings, token: str) -> tuple[uuid.UUID, uuid.UUID]:
    """(tenant, plan) of a local checkout link; DomainError when it is forged or expired."""
    try:
        claims = jwt.decode(
            token, settings.secret_key.get_secret_value(), algorithms=["HS256"],
            options={"require": ["exp", "sub", "plan"]},
        )  # fmt: skip
        if claims.get("typ") != "local_checkout":
            raise ValueError(claims.get("typ"))
        return uuid.UUID(claims["sub"]), uuid.UUID(claims["plan"])
    except jwt.ExpiredSignatureError as e:
        raise DomainError("TOKEN_EXPIRED", "This checkout link has expired.", "token") from e
    except (jwt.InvalidTokenError, ValueError) as e:
        raise DomainError("INVALID_TOKEN", "This checkout link is not valid.", "token") from e


async def activate_local(session: AsyncSession, tenant_id: uuid.UUID, plan_id: uuid.UUID) -> Plan:
    """Local mode's payment: the plan becomes the tenant's, ACTIVE for one interval from now.
    The session is a system session; a second confirmation of the same link changes nothing."""
    plan = await session.get(Plan, plan_id)
    tenant = await session.get(Tenant, tenant_id, with_for_update=True)
    if plan is None or tenant is None:
        raise DomainError("NOT_FOUND", "no such plan or tenant", "token")
    subscription = await session.scalar(
        select(Subscription)
        .where(Subscription.tenant_id == tenant_id, Subscription.status.in_(LIVE_STATUSES))
        .order_by(Subscription.created_at.desc())
        .limit(1)
    )
    if subscription is not None and subscription.stripe_subscription_id:
        raise DomainError("ALREADY_SUBSCRIBED", "This tenant pays through Stripe.", "token")
    if subscription is None:
        subscription = Subscription(tenant_id=tenant_id, plan_id=plan.id)
        session.add(subscription)
    elif subscription.plan_id == plan.id and subscription.status == SubscriptionStatus.ACTIVE:
        return plan
    start = _now()
    subscription.plan_id = plan.id
    subscription.current_period_start = start
    subscription.current_period_end = add_interval(start, plan.interval)
    subscription.cancel_at_period_end = False
    tenant.plan_id = plan.id
    await set_status(
        session, subscription, SubscriptionStatus.ACTIVE, reason=f"{plan.name} (local mode)",
        tenant=tenant,
    )  # fmt: skip
    return plan


def add_interval(start: datetime, interval: str) -> datetime:
    """One billing interval (month or year) on: the same day of the month, or its last."""
    months = 12 if interval == "year" else 1
    month0 = start.month - 1 + months
    year, month = start.year + month0 // 12, month0 % 12 + 1
    for day in range(start.day, 27, -1):
        try:
            return start.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    return start.replace(year=year, month=month, day=min(start.day, 28))


# --- status ----------------------------------------------------------------------------------


async def set_status(
    session: AsyncSession, subscription: Subscription, status: SubscriptionStatus, *,
    reason: str, actor_kind: str = "system", actor_user_id: uuid.UUID | None = None,
    tenant: Tenant | None = None, at: datetime | None = None,
) -> None:  # fmt: skip
    """Moves the subscription to `status` (nothing when it is there): an audit row, a
    deliverability event for after the commit (see `take_events`), and the tenant's sending
    suspended (SUSPENDED, or CANCELED with no other live subscription) or restored."""
    before = subscription.status
    if before == status:
        return
    subscription.status = status
    if status not in OVERDUE_STATUSES:
        subscription.grace_until = None
    await session.flush()
    tenant = tenant or await session.get(Tenant, subscription.tenant_id)
    if tenant.status != TenantStatus.CLOSED:
        suspend = status == SubscriptionStatus.SUSPENDED or (
            status == SubscriptionStatus.CANCELED and not await _other_live(session, subscription)
        )
        from services import provisioning

        if suspend:
            tenant.status = TenantStatus.SUSPENDED
            tenant.sending_suspended_reason = reason
            vps_events = await provisioning.suspend_for_billing(session, tenant.id, reason)
        elif status in LIVE_STATUSES and tenant.status == TenantStatus.SUSPENDED:
            tenant.status = TenantStatus.ACTIVE
            tenant.sending_suspended_reason = None
            vps_events = await provisioning.resume_after_billing(session, tenant.id)
        else:
            vps_events = []
        session.info.setdefault(_EVENTS, []).extend(vps_events)
    audit(session, subscription, f"billing.{status.value.lower()}", actor_kind, actor_user_id,
           {"from": before.value if before else None, "to": status.value, "reason": reason})  # fmt: skip
    message = f"subscription {status.value.lower().replace('_', ' ')}: {reason}"
    session.info.setdefault(_EVENTS, []).append(
        Event(subscription.tenant_id, f"billing_{status.value.lower()}", "Tenant",
              subscription.tenant_id, message, at or _now())
    )  # fmt: skip
    log.info("tenant %s: %s", subscription.tenant_id, message)


_EVENTS = "billing_events"


def take_events(session: AsyncSession) -> list[Event]:
    """The deliverability events of the status changes made in `session`, to publish once it
    has committed."""
    return session.info.pop(_EVENTS, [])


async def _other_live(session: AsyncSession, subscription: Subscription) -> bool:
    return bool(
        await session.scalar(
            select(Subscription.id)
            .where(
                Subscription.tenant_id == subscription.tenant_id,
                Subscription.id != subscription.id,
                Subscription.status.in_(LIVE_STATUSES),
            )
            .limit(1)
        )
    )


def audit(
    session: AsyncSession, subscription: Subscription, action: str, actor_kind: str,
    actor_user_id: uuid.UUID | None, details: dict,
) -> None:  # fmt: skip
    session.add(
        AuditLog(
            tenant_id=subscription.tenant_id, actor_user_id=actor_user_id, actor_kind=actor_kind,
            action=action, subject=f"subscription:{subscription.id}", details=details,
        )
    )  # fmt: skip


def _now() -> datetime:
    return datetime.now(UTC)
