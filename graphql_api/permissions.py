"""Who may call what, as Strawberry permission classes.

On a mutation whose payload has `errors`, a refusal comes back as a FORBIDDEN UserError in the
payload (API.md); on a query it is a GraphQL error.
"""

from __future__ import annotations

from typing import Any

from strawberry.extensions.field_extension import FieldExtension
from strawberry.permission import BasePermission, PermissionExtension
from strawberry.types import Info
from strawberry.types.field import StrawberryField

from graphql_api.errors import UserError
from models.tenancy import Role


class IsAuthenticated(BasePermission):
    message = "sign in first"
    code = "UNAUTHENTICATED"

    async def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        return (await info.context.principal()) is not None


class IsMember(BasePermission):
    """Any role in the current tenant (X-Tenant-ID), or a tenant's API key."""

    message = "sign in and select a workspace you belong to (X-Tenant-ID)"
    code = "FORBIDDEN"
    roles = frozenset(Role)

    async def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        access = await info.context.access()
        return access is not None and access.role in self.roles


class IsAdmin(IsMember):
    """OWNER or ADMIN: members, billing and API keys."""

    message = "only an owner or admin may do this"
    roles = frozenset({Role.OWNER, Role.ADMIN})


class IsAdminOfTenant(BasePermission):
    """OWNER or ADMIN of the Tenant the field is on, which need not be the current one (`tenants`
    lists all of a user's workspaces)."""

    message = "only an owner or admin of this workspace may see this"
    code = "FORBIDDEN"

    async def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        return await info.context.role_in(source.row.id) in IsAdmin.roles


def allow(*permissions: type[BasePermission]) -> list[FieldExtension]:
    """`@strawberry.mutation(extensions=allow(IsAdmin))`."""
    return [PayloadPermissionExtension([p() for p in permissions])]


class PayloadPermissionExtension(PermissionExtension):
    def apply(self, field: StrawberryField) -> None:
        super().apply(field)
        payload = getattr(field.type, "__strawberry_definition__", None)
        has_errors = payload is not None and any(f.name == "errors" for f in payload.fields)
        self.payload_cls = field.type if has_errors else None

    def _on_unauthorized(self, permission: BasePermission) -> Any:
        if self.payload_cls is not None:
            code = getattr(permission, "code", "FORBIDDEN")
            return self.payload_cls(
                errors=[UserError(field=None, message=permission.message, code=code)]
            )
        return super()._on_unauthorized(permission)
