"""User, Tenant, Member, API key and the auth payloads."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import strawberry
from strawberry.types import Info

from graphql_api.errors import UserError
from graphql_api.ids import encode_id
from graphql_api.node import Node
from models import tenancy

if TYPE_CHECKING:
    from graphql_api.billing.types import Plan, Usage

Role = strawberry.enum(tenancy.Role, name="Role")


@strawberry.type
class User(Node):
    id: strawberry.ID
    email: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: tenancy.User) -> User:
        return cls(id=encode_id("User", row.id), email=row.email, created_at=row.created_at)


@strawberry.type
class Member:
    user: User
    role: Role
    joined_at: datetime


@strawberry.type
class Tenant(Node):
    id: strawberry.ID
    name: str
    slug: str
    created_at: datetime
    row: strawberry.Private[tenancy.Tenant]

    @classmethod
    def from_row(cls, row: tenancy.Tenant) -> Tenant:
        return cls(
            id=encode_id("Tenant", row.id), name=row.name, slug=row.slug,
            created_at=row.created_at, row=row,
        )  # fmt: skip

    @strawberry.field
    async def members(self, info: Info) -> list[Member]:
        return await info.context.loaders.members_by_tenant.load(self.row.id)

    @strawberry.field
    async def plan(
        self, info: Info
    ) -> Annotated[Plan, strawberry.lazy("graphql_api.billing.types")] | None:
        if self.row.plan_id is None:
            return None
        return await info.context.loaders.plan.load(self.row.plan_id)

    @strawberry.field
    async def usage(
        self, info: Info
    ) -> Annotated[Usage, strawberry.lazy("graphql_api.billing.types")]:
        from graphql_api.billing.types import Usage
        from services.usage import usage

        async with info.context.member_session(self.row.id) as session:
            return Usage.from_service(await usage(session, self.row.id))


@strawberry.type
class ApiKey(Node):
    id: strawberry.ID
    name: str
    prefix: str
    created_at: datetime
    key: str | None = strawberry.field(
        default=None, description="The key itself: present only in createApiKey's answer."
    )


@strawberry.type
class AuthPayload:
    token: str | None = None
    user: User | None = None
    tenant: Tenant | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class TenantPayload:
    tenant: Tenant | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class MemberPayload:
    member: Member | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class ApiKeyPayload:
    api_key: ApiKey | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)
