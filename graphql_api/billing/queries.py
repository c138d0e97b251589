"""plans: the public plan catalogue."""

from __future__ import annotations

import strawberry
from sqlalchemy import select
from strawberry.types import Info

from graphql_api.billing.types import Plan
from models.billing import Plan as PlanRow


@strawberry.type
class BillingQuery:
    @strawberry.field
    async def plans(self, info: Info) -> list[Plan]:
        async with info.context.db.anonymous_session() as session:
            rows = await session.scalars(
                select(PlanRow).where(PlanRow.active).order_by(PlanRow.price_cents)
            )
            return [Plan.from_row(row) for row in rows]
