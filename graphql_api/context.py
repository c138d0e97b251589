"""What every resolver receives: who is calling, in which tenant, and the ways to reach data.

Authentication is resolved once per request, lazily: `Authorization: Bearer <token or pm_ key>`
and `X-Tenant-ID` (a Tenant global ID or raw UUID; may be omitted by a user with one tenant).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection
from starlette.responses import Response

from graphql_api.ids import parse_id
from graphql_api.live import Hub
from models.sessions import Database
from models.tenancy import Role
from penguinmails import logs
from penguinmails.settings import Settings
from services import auth
from services.errors import DomainError


@dataclass
class Access:
    """A caller admitted to one tenant."""

    tenant_id: uuid.UUID
    role: Role
    user_id: uuid.UUID | None  # None for an API key


_UNRESOLVED: Any = object()


@dataclass
class Context:
    request: HTTPConnection
    response: Response | None
    db: Database
    redis: Redis
    settings: Settings
    live: Hub | None = None  # the process's live hub (graphql_api/live.py)
    connection_params: dict[str, Any] | None = None
    _principal: Any = field(default=_UNRESOLVED, repr=False)
    _access: Any = field(default=_UNRESOLVED, repr=False)
    _roles: dict[uuid.UUID, asyncio.Future] = field(default_factory=dict, repr=False)

    # --- who ---------------------------------------------------------------------------------

    def _credentials(self) -> tuple[str | None, str | None]:
        if self.connection_params is not None:  # a websocket: from connection_init
            params = self.connection_params
            header, tenant = params.get("Authorization"), params.get("tenantId")
        else:
            header = self.request.headers.get("authorization")
            tenant = self.request.headers.get("x-tenant-id")
        token = header[7:].strip() if header and header[:7].lower() == "bearer " else None
        return token, tenant

    async def principal(self) -> auth.Principal | None:
        # Resolvers of one request run concurrently: memoise the task, not its result.
        if self._principal is _UNRESOLVED:
            self._principal = asyncio.ensure_future(self._resolve_principal())
        return await self._principal

    async def _resolve_principal(self) -> auth.Principal | None:
        token, _ = self._credentials()
        if token and token.startswith(auth.API_KEY_PREFIX):
            return await auth.principal_for_api_key(self.db, token)
        if token:
            user_id = auth.read_access_token(self.settings, token)
            return auth.Principal(user_id=user_id) if user_id else None
        return None

    async def access(self) -> Access | None:
        """The current tenant and the caller's role in it, or None when not admitted."""
        if self._access is _UNRESOLVED:
            self._access = asyncio.ensure_future(self._resolve_access())
        access = await self._access
        if access is not None:
            logs.note(tenant_id=access.tenant_id)
        return access

    async def _resolve_access(self) -> Access | None:
        principal = await self.principal()
        if principal is None:
            return None
        if principal.api_key_tenant_id is not None:
            return Access(principal.api_key_tenant_id, Role.MEMBER, None)
        assert principal.user_id is not None
        _, header = self._credentials()
        tenant_id = _tenant_from_header(header) if header else None
        if header and tenant_id is None:
            return None
        if tenant_id is None:
            tenant_id = await auth.only_tenant(self.db, principal.user_id)
            if tenant_id is None:
                return None
        role = await auth.membership_role(self.db, principal.user_id, tenant_id)
        return Access(tenant_id, role, principal.user_id) if role else None

    async def require_access(self) -> Access:
        access = await self.access()
        if access is None:  # permission classes run first; this guards direct use
            raise DomainError("FORBIDDEN", "not a member of this workspace")
        return access

    async def role_in(self, tenant_id: uuid.UUID) -> Role | None:
        """The caller's role in `tenant_id`, the current tenant or another of the user's; looked
        up once per request and tenant (a permission and a resolver of one field both ask)."""
        if tenant_id not in self._roles:
            self._roles[tenant_id] = asyncio.ensure_future(self._resolve_role(tenant_id))
        return await self._roles[tenant_id]

    async def _resolve_role(self, tenant_id: uuid.UUID) -> Role | None:
        access = await self.access()
        if access is not None and access.tenant_id == tenant_id:
            return access.role
        user_id = await self.user_id()
        return await auth.membership_role(self.db, user_id, tenant_id) if user_id else None

    async def user_id(self) -> uuid.UUID | None:
        principal = await self.principal()
        return principal.user_id if principal else None

    # --- data --------------------------------------------------------------------------------

    @asynccontextmanager
    async def tenant_session(self) -> AsyncIterator[AsyncSession]:
        """One transaction bound to the caller's tenant (RLS)."""
        access = await self.require_access()
        async with self.db.tenant_session(access.tenant_id, user_id=access.user_id) as session:
            yield session

    @asynccontextmanager
    async def member_session(self, tenant_id: uuid.UUID) -> AsyncIterator[AsyncSession]:
        """A session bound to `tenant_id`, which need not be the current tenant but must be one
        the caller belongs to (the tenant switcher lists all of a user's workspaces)."""
        access = await self.require_access()
        if await self.role_in(tenant_id) is None:
            raise DomainError("FORBIDDEN", "not a member of this workspace")
        async with self.db.tenant_session(tenant_id, user_id=access.user_id) as session:
            yield session

    @cached_property
    def loaders(self):
        from graphql_api.loaders import Loaders

        return Loaders(self)

    @property
    def client_ip(self) -> str:
        """The client's address as the rate limits resolved it (trusted proxies' X-Forwarded-For)."""
        return self.request.scope["state"]["client_ip"]


def _tenant_from_header(value: str) -> uuid.UUID | None:
    parsed = parse_id(value)
    if parsed and parsed[0] == "Tenant":
        return parsed[1]
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
