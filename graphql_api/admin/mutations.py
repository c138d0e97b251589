"""liftSendingGuard: platform staff lift a domain's or IP's sending guard by hand (audited)."""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from graphql_api.admin.queries import IsStaff
from graphql_api.errors import user_errors
from graphql_api.ids import parse_id
from graphql_api.tenancy.types import OkPayload
from models.infrastructure import Domain, SmtpIpAddress
from services import deliverability_events, guards
from services.errors import DomainError

GUARDED = {"Domain": Domain, "SendingIp": SmtpIpAddress}


@strawberry.type
class AdminMutation:
    @strawberry.mutation(
        permission_classes=[IsStaff],
        description="Platform staff: the guard of a domain or sending IP (any tenant's) lifted; "
        "its rates count again from the next hour. Audited.",
    )
    async def lift_sending_guard(self, info: Info, id: strawberry.ID) -> OkPayload:
        user_id = await info.context.user_id()
        parsed = parse_id(id)
        model = GUARDED.get(parsed[0]) if parsed else None
        async with info.context.db.staff_session(
            user_id, "guard.lift", details={"subject": str(id)}
        ) as session:
            subject = await session.get(model, parsed[1]) if model else None
            if subject is None:
                error = DomainError("NOT_FOUND", "no domain or sending IP with this id", "id")
                return OkPayload(errors=user_errors(error))
            event = await guards.lift(session, subject, str(user_id))
        await deliverability_events.publish(info.context.redis, [event])
        return OkPayload(ok=True)
