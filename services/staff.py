"""Platform staff: who is staff (made by `penguinmails staff add`), and what the admin panel
reads across tenants (always through `Database.staff_session`, which audits the read)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from models.sessions import Database
from models.tenancy import AuditLog, StaffMember, StaffRole, TenantUser, User
from services.errors import DomainError

DEFAULT_ROLE = "superadmin"


@dataclass
class StaffEntry:
    email: str
    role: str
    active: bool


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


async def add(
    session: AsyncSession, email: str, operator: str, role: str = DEFAULT_ROLE
) -> StaffEntry:
    """Makes an existing user active platform staff with `role` (the role made when new); a
    deactivated member is activated again. Written to the audit log."""
    user = await _user(session, email)
    role_id = await session.scalar(select(StaffRole.id).where(StaffRole.name == role))
    if role_id is None:
        staff_role = StaffRole(name=role)
        session.add(staff_role)
        await session.flush()
        role_id = staff_role.id
    member = await session.scalar(select(StaffMember).where(StaffMember.user_id == user.id))
    if member is None:
        session.add(StaffMember(user_id=user.id, role_id=role_id, active=True))
    else:
        member.role_id, member.active = role_id, True
    _audit(session, "staff.added", user, {"role": role, "by": operator})
    return StaffEntry(user.email, role, active=True)


async def remove(session: AsyncSession, email: str, operator: str) -> StaffEntry:
    """Deactivates a staff member (the row stays, as the audit log names them)."""
    user = await _user(session, email)
    row = (
        await session.execute(
            select(StaffMember, StaffRole.name)
            .join(StaffRole, StaffRole.id == StaffMember.role_id)
            .where(StaffMember.user_id == user.id)
        )
    ).one_or_none()
    if row is None or not row[0].active:
        raise DomainError("NOT_STAFF", f"{user.email} is not platform staff", "email")
    row[0].active = False
    _audit(session, "staff.removed", user, {"by": operator})
    return StaffEntry(user.email, row[1], active=False)


async def members(session: AsyncSession) -> list[StaffEntry]:
    rows = await session.execute(
        select(User.email, StaffRole.name, StaffMember.active)
        .join(StaffMember, StaffMember.user_id == User.id)
        .join(StaffRole, StaffRole.id == StaffMember.role_id)
        .order_by(User.email)
    )
    return [StaffEntry(*row) for row in rows.all()]


async def _user(session: AsyncSession, email: str) -> User:
    address = email.strip().lower()  # as logIn looks it up (the demo user's .local too)
    user = await session.scalar(select(User).where(User.email == address))
    if user is None:
        raise DomainError("USER_NOT_FOUND", f"no user {address}: sign up first", "email")
    return user


def _audit(session: AsyncSession, action: str, user: User, details: dict) -> None:
    session.add(AuditLog(actor_kind="operator", action=action, subject=user.email, details=details))
