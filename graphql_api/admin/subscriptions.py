"""opsStatus: the ops page's live view of the platform, for staff."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry
from strawberry.types import Info

from graphql_api.admin.queries import IsStaff
from graphql_api.admin.types import OpsStatus
from services import ops


@strawberry.type
class AdminSubscription:
    @strawberry.subscription(permission_classes=[IsStaff])
    async def ops_status(self, info: Info) -> AsyncGenerator[OpsStatus, None]:
        """Every tenant's queue, the last hour's outcomes, open alerts and pipeline lag: now,
        then on change. The watch is audited once, when it starts."""
        context = info.context
        user_id = await context.user_id()
        async with context.db.staff_session(user_id, "ops.status.watch"):
            pass
        async for status in ops.watch(context.db, context.settings, user_id):
            yield OpsStatus.from_status(status)
