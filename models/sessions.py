"""Engines per tier and role, and the only three ways to get a session:

- `tenant_session(tenant_id)`: the application role, one tenant bound for the transaction; RLS
  shows and accepts that tenant's rows only. Every resolver and tenant job uses this.
- `system_session()`: the system role (BYPASSRLS) for processes that work across all tenants by
  design: the queuer, pipelines, the scheduler's sweeps, log-in lookups by email.
- `staff_session(...)`: the system role for platform staff, writing an audit_log row for the read.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from models.tenancy import AuditLog
from penguinmails.settings import Settings, Tier

Role = Literal["app", "system", "owner"]
_BIND_TENANT = text(
    "SELECT set_config('app.tenant_id', :tenant, true), set_config('app.user_id', :user, true)"
)


class Database:
    """The engines of one process. Tiers sharing a DSN share an engine (and its pool)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._engines: dict[tuple[str, Role], AsyncEngine] = {}

    def engine(self, tier: Tier = "oltp", role: Role = "app") -> AsyncEngine:
        url = self.settings.role_url(tier, role)
        key = (url.render_as_string(hide_password=False), role)
        if key not in self._engines:
            self._engines[key] = create_async_engine(
                url,
                pool_size=self.settings.db_pool_size,
                max_overflow=self.settings.db_pool_size,
                pool_pre_ping=self.settings.db_pool_pre_ping,
                connect_args={
                    "server_settings": {
                        "application_name": f"penguinmails-{role}",
                        "statement_timeout": str(self.settings.db_statement_timeout_ms),
                    }
                },
            )
        return self._engines[key]

    @asynccontextmanager
    async def tenant_session(
        self, tenant_id: uuid.UUID, *, user_id: uuid.UUID | None = None, tier: Tier = "oltp"
    ) -> AsyncIterator[AsyncSession]:
        """One transaction as the application role with `tenant_id` bound (transaction-local)."""
        async with self._session(tier, "app") as session:
            await session.execute(
                _BIND_TENANT, {"tenant": str(tenant_id), "user": str(user_id) if user_id else ""}
            )
            yield session

    @asynccontextmanager
    async def user_session(self, user_id: uuid.UUID) -> AsyncIterator[AsyncSession]:
        """One transaction as the application role with only a user bound: their own row and
        the tenants they belong to, no tenant's data."""
        async with self._session("oltp", "app") as session:
            await session.execute(_BIND_TENANT, {"tenant": "", "user": str(user_id)})
            yield session

    @asynccontextmanager
    async def anonymous_session(self) -> AsyncIterator[AsyncSession]:
        """The application role with nothing bound: platform catalogue (plans) only, since RLS
        shows no tenant's and no user's rows."""
        async with self._session("oltp", "app") as session:
            yield session

    @asynccontextmanager
    async def system_session(self, tier: Tier = "oltp") -> AsyncIterator[AsyncSession]:
        """Cross-tenant access for system processes (queuer, pipelines, sweeps). Not for
        anything a user request can steer."""
        async with self._session(tier, "system") as session:
            yield session

    @asynccontextmanager
    async def staff_session(
        self,
        staff_user_id: uuid.UUID,
        action: str,
        *,
        tenant_id: uuid.UUID | None = None,
        details: dict | None = None,
    ) -> AsyncIterator[AsyncSession]:
        """Cross-tenant access for platform staff: refused unless the user is active staff, and
        audited in the same transaction (no audit row, no read)."""
        async with self._session("oltp", "system") as session:
            is_staff = await session.scalar(
                text("SELECT active FROM app.staff_members WHERE user_id = :u"),
                {"u": staff_user_id},
            )
            if not is_staff:
                raise PermissionError("not platform staff")
            session.add(
                AuditLog(
                    tenant_id=tenant_id,
                    actor_user_id=staff_user_id,
                    actor_kind="staff",
                    action=action,
                    details=details or {},
                )
            )
            await session.flush()
            yield session

    @asynccontextmanager
    async def owner_session(self, tier: Tier = "oltp") -> AsyncIterator[AsyncSession]:
        """The owner role: migrations, seeding and test set-up only."""
        async with self._session(tier, "owner") as session:
            yield session

    @asynccontextmanager
    async def _session(self, tier: Tier, role: Role) -> AsyncIterator[AsyncSession]:
        maker = async_sessionmaker(self.engine(tier, role), expire_on_commit=False)
        async with maker() as session, session.begin():
            yield session

    async def ping(self, tier: Tier) -> None:
        async with self.engine(tier, "app").connect() as conn:
            await conn.execute(select(1))

    async def dispose(self) -> None:
        for engine in self._engines.values():
            await engine.dispose()
        self._engines.clear()


async def driver_connection(session: AsyncSession):
    """The asyncpg connection under a session: same transaction, same tenant binding (for
    COPY and statements over arrays that the ORM would send a row at a time)."""
    conn = await session.connection()
    return (await conn.get_raw_connection()).driver_connection
