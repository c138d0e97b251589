"""liftSendingGuard: platform staff lift a domain's or IP's sending guard by hand (audited)."""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from graphql_api.admin.queries import IsStaff
from graphql_api.errors import user_errors
from graphql_api.ids import parse_id
from graphql_api.tenancy.types import OkPayload
from services import deliverability_events, guards
from services.errors import DomainError


@strawberry.type
class AdminMutation:
    @strawberry.mutation(
        permission_classes=[IsStaff],
        description="Platform staff: the guard of a domain or sending IP (any tenant's) lifted; "
        "its rates count again from the next hour. Audited.",
    )
    async def lift_sending_guard(self, info: Info, id: strawberry.ID) -> OkPayload:
        user_id = await info.context.user_id()
        subject_type, subject_id = parse_id(id) or ("", None)
        try:
            async with info.context.db.staff_session(
                user_id, "guard.lift", details={"subject": str(id)}
            ) as session:
                event = await guards.lift_by_id(session, subject_type, subject_id, str(user_id))
        except DomainError as e:
            return OkPayload(errors=user_errors(e))
        await deliverability_events.publish(info.context.redis, [event])
        return OkPayload(ok=True)
