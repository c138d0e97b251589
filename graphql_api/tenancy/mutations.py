"""signUp, logIn, verifyEmail and password reset, createTenant, updateTenant, members and
invitations, API keys."""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from graphql_api.errors import user_errors
from graphql_api.ids import decode_id, encode_id
from graphql_api.input_limits import Email, Name, OptionalName, OptionalShort, Password, Short
from graphql_api.permissions import IsAdmin, IsAuthenticated, allow
from graphql_api.tenancy.types import (
    ApiKey,
    ApiKeyPayload,
    AuthPayload,
    Invitation,
    InvitationPayload,
    Member,
    MemberPayload,
    OkPayload,
    Role,
    Tenant,
    TenantPayload,
    User,
)
from models import tenancy
from services import account_mail, auth, invitations
from services.errors import DomainError


@strawberry.type
class TenancyMutation:
    @strawberry.mutation
    async def sign_up(
        self, info: Info, email: Email, password: Password, tenant_name: Name
    ) -> AuthPayload:
        ctx = info.context
        try:
            user, tenant = await auth.sign_up(ctx.db, email, password, tenant_name)
        except DomainError as e:
            return AuthPayload(errors=user_errors(e))
        return AuthPayload(
            token=auth.issue_access_token(ctx.settings, user.id),
            user=User.from_row(user),
            tenant=Tenant.from_row(tenant),
        )

    @strawberry.mutation
    async def log_in(self, info: Info, email: Email, password: Password) -> AuthPayload:
        ctx = info.context
        try:
            user, tenant = await auth.log_in(
                ctx.db, ctx.redis, ctx.settings, email, password, ctx.client_ip
            )
        except DomainError as e:
            return AuthPayload(errors=user_errors(e))
        return AuthPayload(
            token=auth.issue_access_token(ctx.settings, user.id),
            user=User.from_row(user),
            tenant=Tenant.from_row(tenant) if tenant else None,
        )

    @strawberry.mutation(description="Confirms the address the token was mailed to.")
    async def verify_email(self, info: Info, token: Short) -> OkPayload:
        try:
            await account_mail.verify_email(info.context.db, token)
        except DomainError as e:
            return OkPayload(errors=user_errors(e))
        return OkPayload(ok=True)

    @strawberry.mutation(
        extensions=allow(IsAuthenticated),
        description="Mails the signed-in user another link that confirms their address.",
    )
    async def resend_verification(self, info: Info) -> OkPayload:
        user_id = await info.context.user_id()
        if user_id is None:
            return OkPayload(
                errors=user_errors(DomainError("FORBIDDEN", "an API key has no address"))
            )
        try:
            await account_mail.resend_verification(info.context.db, user_id)
        except DomainError as e:
            return OkPayload(errors=user_errors(e))
        return OkPayload(ok=True)

    @strawberry.mutation(
        description="Mails a password-reset link when an account has this address; the answer "
        "is the same when none has."
    )
    async def request_password_reset(self, info: Info, email: Email) -> OkPayload:
        await account_mail.request_password_reset(info.context.db, email)
        return OkPayload(ok=True)

    @strawberry.mutation(description="Sets a new password with a mailed token, and logs in.")
    async def reset_password(self, info: Info, token: Short, password: Password) -> AuthPayload:
        ctx = info.context
        try:
            user, tenant = await account_mail.reset_password(ctx.db, token, password)
        except DomainError as e:
            return AuthPayload(errors=user_errors(e))
        return AuthPayload(
            token=auth.issue_access_token(ctx.settings, user.id),
            user=User.from_row(user),
            tenant=Tenant.from_row(tenant) if tenant else None,
        )

    @strawberry.mutation(extensions=allow(IsAuthenticated))
    async def create_tenant(self, info: Info, name: Name) -> TenantPayload:
        user_id = await info.context.user_id()
        if user_id is None:
            return TenantPayload(
                errors=user_errors(DomainError("FORBIDDEN", "an API key cannot create workspaces"))
            )
        try:
            tenant = await auth.create_tenant(info.context.db, user_id, name)
        except DomainError as e:
            return TenantPayload(errors=user_errors(e))
        return TenantPayload(tenant=Tenant.from_row(tenant))

    @strawberry.mutation(extensions=allow(IsAdmin))
    async def update_tenant(
        self, info: Info, name: OptionalName = None, timezone: OptionalShort = None
    ) -> TenantPayload:
        access = await info.context.require_access()
        try:
            async with info.context.tenant_session() as session:
                tenant = await auth.update_tenant(
                    session, access.tenant_id, name=name, timezone=timezone
                )
        except DomainError as e:
            return TenantPayload(errors=user_errors(e))
        return TenantPayload(tenant=Tenant.from_row(tenant))

    @strawberry.mutation(extensions=allow(IsAdmin))
    async def invite_member(self, info: Info, email: Email, role: Role) -> MemberPayload:
        access = await info.context.require_access()
        try:
            async with info.context.tenant_session() as session:
                row, tenant_name = await invitations.invite(
                    session, access.tenant_id, access.user_id, access.role, email, role
                )
        except DomainError as e:
            return MemberPayload(errors=user_errors(e))
        return MemberPayload(invitation=Invitation.from_row(row, tenant_name))

    @strawberry.mutation(extensions=allow(IsAdmin))
    async def revoke_invitation(self, info: Info, id: strawberry.ID) -> InvitationPayload:
        access = await info.context.require_access()
        try:
            async with info.context.tenant_session() as session:
                row, tenant_name = await invitations.revoke(
                    session, access.tenant_id, access.role, decode_id(id, "Invitation")
                )
        except DomainError as e:
            return InvitationPayload(errors=user_errors(e))
        return InvitationPayload(invitation=Invitation.from_row(row, tenant_name))

    @strawberry.mutation(extensions=allow(IsAuthenticated))
    async def accept_invitation(self, info: Info, id: strawberry.ID) -> TenantPayload:
        user_id = await info.context.user_id()
        if user_id is None:
            return TenantPayload(errors=user_errors(_no_user()))
        try:
            tenant = await invitations.accept(info.context.db, user_id, decode_id(id, "Invitation"))
        except DomainError as e:
            return TenantPayload(errors=user_errors(e))
        return TenantPayload(tenant=Tenant.from_row(tenant))

    @strawberry.mutation(extensions=allow(IsAuthenticated))
    async def decline_invitation(self, info: Info, id: strawberry.ID) -> OkPayload:
        user_id = await info.context.user_id()
        if user_id is None:
            return OkPayload(errors=user_errors(_no_user()))
        try:
            await invitations.decline(info.context.db, user_id, decode_id(id, "Invitation"))
        except DomainError as e:
            return OkPayload(errors=user_errors(e))
        return OkPayload(ok=True)

    @strawberry.mutation(extensions=allow(IsAdmin))
    async def update_member_role(
        self, info: Info, user_id: strawberry.ID, role: Role
    ) -> MemberPayload:
        access = await info.context.require_access()
        try:
            async with info.context.tenant_session() as session:
                member = await auth.update_member_role(
                    session,
                    access.tenant_id,
                    access.role,
                    decode_id(user_id, "User", "userId"),
                    role,
                )
                return MemberPayload(member=await _member(session, member))
        except DomainError as e:
            return MemberPayload(errors=user_errors(e))

    @strawberry.mutation(extensions=allow(IsAdmin))
    async def remove_member(self, info: Info, user_id: strawberry.ID) -> MemberPayload:
        access = await info.context.require_access()
        try:
            async with info.context.tenant_session() as session:
                key = decode_id(user_id, "User", "userId")
                user = await session.get(tenancy.User, key)
                member = await auth.remove_member(session, access.tenant_id, access.role, key)
                return MemberPayload(
                    member=Member(
                        user=User.from_row(user), role=member.role, joined_at=member.created_at
                    )
                )
        except DomainError as e:
            return MemberPayload(errors=user_errors(e))

    @strawberry.mutation(extensions=allow(IsAdmin))
    async def create_api_key(self, info: Info, name: Name) -> ApiKeyPayload:
        access = await info.context.require_access()
        try:
            async with info.context.tenant_session() as session:
                row, key = await auth.create_api_key(
                    session, access.tenant_id, access.user_id, name
                )
        except DomainError as e:
            return ApiKeyPayload(errors=user_errors(e))
        return ApiKeyPayload(
            api_key=ApiKey(
                id=encode_id("ApiKey", row.id),
                name=row.name,
                prefix=row.prefix,
                created_at=row.created_at,
                key=key,
            )
        )


def _no_user() -> DomainError:
    # Invitations are addressed to people; an API key is a tenant's and has none.
    return DomainError("FORBIDDEN", "an API key cannot answer invitations")


async def _member(session, member: tenancy.TenantUser) -> Member:
    user = await session.get(tenancy.User, member.user_id)
    return Member(user=User.from_row(user), role=member.role, joined_at=member.created_at)
