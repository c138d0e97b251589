"""me, tenant, tenants."""

from __future__ import annotations

import strawberry
from sqlalchemy import select
from strawberry.types import Info

from graphql_api.permissions import IsAuthenticated, IsMember
from graphql_api.tenancy.types import Tenant, User
from models import tenancy


@strawberry.type
class TenancyQuery:
    @strawberry.field
    async def me(self, info: Info) -> User | None:
        user_id = await info.context.user_id()
        if user_id is None:
            return None
        async with info.context.db.user_session(user_id) as session:
            row = await session.get(tenancy.User, user_id)
        return User.from_row(row) if row else None

    @strawberry.field(permission_classes=[IsMember])
    async def tenant(self, info: Info) -> Tenant | None:
        access = await info.context.require_access()
        async with info.context.tenant_session() as session:
            row = await session.get(tenancy.Tenant, access.tenant_id)
        return Tenant.from_row(row) if row else None

    @strawberry.field(permission_classes=[IsAuthenticated])
    async def tenants(self, info: Info) -> list[Tenant]:
        """The workspaces the caller belongs to (an API key: its own)."""
        principal = await info.context.principal()
        if principal.user_id is None:
            async with info.context.tenant_session() as session:
                rows = list(await session.scalars(select(tenancy.Tenant)))
        else:
            async with info.context.db.user_session(principal.user_id) as session:
                rows = list(
                    await session.scalars(
                        select(tenancy.Tenant).order_by(tenancy.Tenant.created_at)
                    )
                )
        return [Tenant.from_row(row) for row in rows]
