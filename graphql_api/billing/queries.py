"""plans, billing."""

from __future__ import annotations

import strawberry
from sqlalchemy import select
from strawberry.types import Info

from graphql_api.billing.types import Billing, Plan
from graphql_api.permissions import IsAdmin
from models import billing
from services.billing import current_subscription


@strawberry.type
class BillingQuery:
    @strawberry.field
    async def plans(self, info: Info) -> list[Plan]:
        """The public plan catalogue."""
        async with info.context.db.anonymous_session() as session:
            rows = await session.scalars(
                select(billing.Plan)
                .where(billing.Plan.active, billing.Plan.public)
                .order_by(billing.Plan.price_cents)
            )
            return [Plan.from_row(row) for row in rows]

    @strawberry.field(permission_classes=[IsAdmin])
    async def billing(self, info: Info) -> Billing:
        async with info.context.tenant_session() as session:
            subscription = await current_subscription(session)
        return Billing.of(subscription, info.context.settings)
