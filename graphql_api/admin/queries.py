"""admin { tenants } and platformAlerts: platform staff read across the platform; every read is
audited."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from sqlalchemy import select
from strawberry.permission import BasePermission
from strawberry.types import Info

from graphql_api.analytics.types import Alert
from graphql_api.ids import encode_id
from graphql_api.pagination import Connection, paginate
from models import tenancy
from services import ops, staff


class IsStaff(BasePermission):
    message = "platform staff only"

    async def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        user_id = await info.context.user_id()
        return user_id is not None and await staff.is_active_staff(info.context.db, user_id)


@strawberry.type
class AdminTenant:
    id: strawberry.ID
    name: str
    slug: str
    status: str
    created_at: datetime
    members: int


@strawberry.type
class Admin:
    @strawberry.field
    async def tenants(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[AdminTenant]:
        user_id = await info.context.user_id()
        counts: dict = {}

        def shape(row: tenancy.Tenant) -> AdminTenant:
            return AdminTenant(
                id=encode_id("Tenant", row.id),
                name=row.name,
                slug=row.slug,
                status=row.status.value,
                created_at=row.created_at,
                members=counts.get(row.id, 0),
            )

        async with info.context.db.staff_session(
            user_id, "admin.tenants.list", details={"first": first, "after": after}
        ) as session:
            page = await paginate(
                session,
                select(tenancy.Tenant),
                keys=(tenancy.Tenant.created_at, tenancy.Tenant.id),
                first=first,
                after=after,
                max_page=info.context.settings.graphql_max_page_size,
                node=lambda row: row,
            )
            counts.update(await staff.member_counts(session, [e.node.id for e in page.edges]))
        for edge in page.edges:
            edge.node = shape(edge.node)
        return page


@strawberry.type
class AdminQuery:
    @strawberry.field(permission_classes=[IsStaff])
    def admin(self) -> Admin:
        return Admin()

    @strawberry.field(permission_classes=[IsStaff])
    async def platform_alerts(self, info: Info, first: int | None = 50) -> list[Alert]:
        """Open alerts of every tenant and the platform's own, newest first."""
        user_id = await info.context.user_id()
        limit = max(0, min(first or 0, info.context.settings.graphql_max_page_size))
        async with info.context.db.staff_session(user_id, "admin.alerts.list") as session:
            return [Alert.from_row(row) for row in await ops.open_alerts(session, limit)]
