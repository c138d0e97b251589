"""User, Tenant, Member, Invitation, API key and the payloads."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import strawberry
from strawberry.types import Info

from graphql_api.errors import UserError
from graphql_api.ids import encode_id
from graphql_api.node import Node
from graphql_api.permissions import IsAdminOfTenant
from models import tenancy
from services import invitations

if TYPE_CHECKING:
    from graphql_api.billing.types import Plan, Usage

Role = strawberry.enum(tenancy.Role, name="Role")


@strawberry.type
class Invitation(Node):
    id: strawberry.ID
    email: str
    role: Role
    tenant_name: str
    expires_at: datetime

    @classmethod
    def from_row(cls, row: tenancy.Invitation, tenant_name: str) -> Invitation:
        return cls(
            id=encode_id("Invitation", row.id), email=row.email, role=row.role,
            tenant_name=tenant_name, expires_at=row.expires_at,
        )  # fmt: skip


@strawberry.type
class User(Node):
    id: strawberry.ID
    email: str
    created_at: datetime
    email_verified: bool = strawberry.field(
        description="Whether the address is confirmed (verifyEmail); until it is, the user "
        "cannot launch or resume campaigns, nor accept invitations."
    )
    key: strawberry.Private[uuid.UUID]

    @classmethod
    def from_row(cls, row: tenancy.User) -> User:
        return cls(
            id=encode_id("User", row.id), email=row.email, created_at=row.created_at,
            email_verified=row.email_verified_at is not None, key=row.id,
        )  # fmt: skip

    @strawberry.field(
        description="Pending invitations addressed to this user: the signed-in user's own; "
        "empty for any other user (a colleague in the members list)."
    )
    async def invitations(self, info: Info) -> list[Invitation]:
        if await info.context.user_id() != self.key:
            return []
        async with info.context.db.user_session(self.key) as session:
            rows = await invitations.pending_for_user(session)
        return [Invitation.from_row(row, tenant_name) for row, tenant_name in rows]


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
    timezone: str = strawberry.field(
        description="The workspace's IANA time zone: its analytics days are this zone's days."
    )
    row: strawberry.Private[tenancy.Tenant]

    @classmethod
    def from_row(cls, row: tenancy.Tenant) -> Tenant:
        return cls(
            id=encode_id("Tenant", row.id), name=row.name, slug=row.slug,
            created_at=row.created_at, timezone=row.timezone, row=row,
        )  # fmt: skip

    @strawberry.field
    async def members(self, info: Info) -> list[Member]:
        return await info.context.loaders.members_by_tenant.load(self.row.id)

    @strawberry.field(
        permission_classes=[IsAdminOfTenant],
        description="The workspace's pending invitations (owners and admins).",
    )
    async def invitations(self, info: Info) -> list[Invitation]:
        async with info.context.member_session(self.row.id) as session:
            rows = await invitations.pending_for_tenant(session, self.row.id)
        return [Invitation.from_row(row, self.row.name) for row in rows]

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
    invitation: Invitation | None = strawberry.field(
        default=None, description="inviteMember's answer: member stays null until accepted."
    )
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class InvitationPayload:
    invitation: Invitation | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class OkPayload:
    ok: bool = False
    errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class ApiKeyPayload:
    api_key: ApiKey | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)
