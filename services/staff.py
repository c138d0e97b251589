"""Platform staff: who is staff, and what the admin panel reads across tenants (always through
`Database.staff_session`, which audits the read)."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from models.sessions import Database
from models.tenancy import StaffMember, TenantUser


async def is_active_staff(db: Database, user_id: uuid.UUID) -> bool:
    async with db.system_session() as session:  # staff are not tenant data
        return bool(
            await session.scalar(select(StaffMember.active).where(StaffMember.user_id == user_id))
        )


async def member_counts(session: AsyncSession, tenant_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Members per tenant, for a page of tenants (one statement)."""
    rows = await session.execute(
        select(TenantUser.tenant_id, func.count())
        .where(TenantUser.tenant_id.in_(tenant_ids))
        .group_by(TenantUser.tenant_id)
    )
    return dict(rows.all())
