"""startCheckout, openBillingPortal, changePlan, cancelSubscription."""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from graphql_api.billing.types import Billing, BillingPayload, CheckoutPayload
from graphql_api.errors import user_errors
from graphql_api.ids import decode_id
from graphql_api.permissions import IsAdmin, allow
from models.tenancy import User
from services import billing, deliverability_events
from services.errors import DomainError


@strawberry.type
class BillingMutation:
    @strawberry.mutation(extensions=allow(IsAdmin))
    async def start_checkout(self, info: Info, plan_id: strawberry.ID) -> CheckoutPayload:
        access = await info.context.require_access()
        try:
            async with info.context.tenant_session() as session:
                user = await session.get(User, access.user_id) if access.user_id else None
                url = await billing.start_checkout(
                    session,
                    info.context.settings,
                    access.tenant_id,
                    decode_id(plan_id, "Plan", "planId"),
                    user.email if user else None,
                )
        except DomainError as e:
            return CheckoutPayload(errors=user_errors(e))
        return CheckoutPayload(url=url)

    @strawberry.mutation(extensions=allow(IsAdmin))
    async def open_billing_portal(self, info: Info) -> CheckoutPayload:
        access = await info.context.require_access()
        try:
            async with info.context.tenant_session() as session:
                url = await billing.open_billing_portal(
                    session, info.context.settings, access.tenant_id
                )
        except DomainError as e:
            return CheckoutPayload(errors=user_errors(e))
        return CheckoutPayload(url=url)

    @strawberry.mutation(extensions=allow(IsAdmin))
    async def change_plan(self, info: Info, plan_id: strawberry.ID) -> BillingPayload:
        access = await info.context.require_access()
        try:
            async with info.context.tenant_session() as session:
                subscription = await billing.change_plan(
                    session, info.context.settings, access.tenant_id,
                    decode_id(plan_id, "Plan", "planId"), access.user_id,
                )  # fmt: skip
        except DomainError as e:
            return BillingPayload(errors=user_errors(e))
        return BillingPayload(billing=Billing.of(subscription, info.context.settings))

    @strawberry.mutation(extensions=allow(IsAdmin))
    async def cancel_subscription(self, info: Info) -> BillingPayload:
        access = await info.context.require_access()
        try:
            async with info.context.tenant_session() as session:
                subscription = await billing.cancel_subscription(
                    session, info.context.settings, access.user_id
                )
                events = billing.take_events(session)
        except DomainError as e:
            return BillingPayload(errors=user_errors(e))
        await deliverability_events.publish(info.context.redis, events)
        return BillingPayload(billing=Billing.of(subscription, info.context.settings))
