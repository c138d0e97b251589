"""Invitations: an owner or admin offers a role in the workspace to an email address, and the
user with that address accepts or declines it. Nobody becomes a member without accepting.

Inviting never looks the address up: the answer is the same whether it has an account or is
already a member. The addressee is no member of the inviting tenant: RLS shows them the
invitations addressed to their email (policy invitee_read) and the tenant's name
(app.invited_tenant_names()), nothing else. Their answer is written in a session bound to the
invitation's tenant, opened only for an invitation RLS has shown them, and checked again there
under a lock, as sign-up binds a tenant before writing its first membership.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from models.sessions import Database
from models.tenancy import Invitation, InvitationStatus, Role, Tenant, TenantUser, User
from services import account_mail, plans
from services.auth import check_grant, normalize_email
from services.errors import DomainError

INVITATION_TTL = timedelta(days=7)


def _not_found() -> DomainError:
    # Word for word what a malformed id gets: someone else's invitation is not told apart.
    return DomainError("NOT_FOUND", "no Invitation with this id", "id")


# --- the tenant's side -------------------------------------------------------------------------


async def invite(
    session: AsyncSession, tenant_id: uuid.UUID, actor_id: uuid.UUID | None, actor_role: Role,
    email: str, role: Role,
) -> tuple[Invitation, str]:  # fmt: skip
    """The tenant's pending invitation for `email`, a new one or the existing one refreshed
    (role, inviter, seven days from now), and the tenant's name; each queues a mail to the
    address with a link to it. A pending invitation holds a seat."""
    email = normalize_email(email)
    check_grant(actor_role, role)
    # Serialises the tenant's invitations and seat counts: the look-up below stays true.
    await plans.lock_usage(session, tenant_id, "seats")
    now = datetime.now(UTC)
    invitation = await session.scalar(
        select(Invitation).where(
            Invitation.tenant_id == tenant_id,
            Invitation.email == email,
            Invitation.status == InvitationStatus.PENDING,  # expired or not: one per address
        )
    )
    if invitation is not None:
        check_grant(actor_role, invitation.role)  # an admin does not rewrite an owner's offer
    if invitation is None or invitation.expires_at <= now:  # an expired one held no seat
        await plans.check_limit(session, tenant_id, "seats", await _seats_taken(session, tenant_id))
    if invitation is None:
        invitation = Invitation(tenant_id=tenant_id, email=email)
        session.add(invitation)
    invitation.role = role
    invitation.invited_by = actor_id
    invitation.expires_at = now + INVITATION_TTL
    await session.flush()
    await account_mail.queue_invitation(session, invitation)
    return invitation, await session.scalar(select(Tenant.name).where(Tenant.id == tenant_id))


async def pending_for_tenant(session: AsyncSession, tenant_id: uuid.UUID) -> list[Invitation]:
    return list(await session.scalars(_open_invitations(tenant_id).order_by(Invitation.created_at)))


async def revoke(
    session: AsyncSession, tenant_id: uuid.UUID, actor_role: Role, invitation_id: uuid.UUID
) -> tuple[Invitation, str]:
    """The invitation revoked, and the tenant's name."""
    found = (
        await session.execute(
            select(Invitation, Tenant.name)
            .join(Tenant, Tenant.id == Invitation.tenant_id)
            .where(Invitation.id == invitation_id, Invitation.tenant_id == tenant_id)
            .with_for_update(of=Invitation)
        )
    ).first()
    if found is None:
        raise _not_found()
    invitation, tenant_name = found
    check_grant(actor_role, invitation.role)
    _check_open(invitation)
    invitation.status = InvitationStatus.REVOKED
    await session.flush()
    return invitation, tenant_name


def _open_invitations(tenant_id: uuid.UUID) -> Select:
    """The tenant's pending invitations that have not expired."""
    # The tenant named, not left to RLS: a tenant session with a user bound also shows the
    # invitations addressed to that user by other tenants.
    return select(Invitation).where(Invitation.tenant_id == tenant_id, *_open())


def _open() -> tuple:
    """An invitation still waiting for its answer: pending and not expired."""
    return Invitation.status == InvitationStatus.PENDING, Invitation.expires_at > datetime.now(UTC)


async def _seats_taken(session: AsyncSession, tenant_id: uuid.UUID) -> int:
    members = select(func.count()).where(TenantUser.tenant_id == tenant_id).scalar_subquery()
    pending = _open_invitations(tenant_id).with_only_columns(func.count()).scalar_subquery()
    return await session.scalar(select(members + pending)) or 0


# --- the addressee's side ----------------------------------------------------------------------


async def pending_for_user(session: AsyncSession) -> list[tuple[Invitation, str]]:
    """The signed-in user's pending invitations with their tenants' names (a user session: RLS
    shows the invitations addressed to them and no tenant's data)."""
    names = func.app.invited_tenant_names().table_valued("tenant_id", "name").alias("names")
    rows = await session.execute(
        select(Invitation, names.c.name)
        .join(names, names.c.tenant_id == Invitation.tenant_id)
        .where(*_open())
        .order_by(Invitation.created_at)
    )
    return [(invitation, name) for invitation, name in rows]


async def accept(db: Database, user_id: uuid.UUID, invitation_id: uuid.UUID) -> Tenant:
    """Makes the user a member with the invited role, once their address is verified (else
    anyone who signed up with it could). A user who is a member already keeps their role
    (roles change by updateMemberRole); the invitation is closed all the same."""
    tenant_id = await _addressed_tenant(db, user_id, invitation_id)
    async with db.tenant_session(tenant_id, user_id=user_id) as session:
        await plans.lock_usage(session, tenant_id, "seats")  # the order invite() takes them in
        invitation = await _addressed_and_open(session, user_id, invitation_id)
        account_mail.require_verified(await session.get(User, user_id))
        if await session.get(TenantUser, (tenant_id, user_id)) is None:
            members = select(func.count()).where(TenantUser.tenant_id == tenant_id)
            await plans.check_limit(session, tenant_id, "seats", await session.scalar(members))
            session.add(TenantUser(tenant_id=tenant_id, user_id=user_id, role=invitation.role))
        invitation.status = InvitationStatus.ACCEPTED
        await session.flush()
        tenant = await session.get(Tenant, tenant_id)
    assert tenant is not None
    return tenant


async def decline(db: Database, user_id: uuid.UUID, invitation_id: uuid.UUID) -> None:
    tenant_id = await _addressed_tenant(db, user_id, invitation_id)
    async with db.tenant_session(tenant_id, user_id=user_id) as session:
        invitation = await _addressed_and_open(session, user_id, invitation_id)
        invitation.status = InvitationStatus.DECLINED


async def _addressed_tenant(
    db: Database, user_id: uuid.UUID, invitation_id: uuid.UUID
) -> uuid.UUID:
    """The tenant of an invitation addressed to the user, found through RLS with no tenant
    bound: another address's invitation does not exist here."""
    async with db.user_session(user_id) as session:
        tenant_id = await session.scalar(
            select(Invitation.tenant_id).where(Invitation.id == invitation_id)
        )
    if tenant_id is None:
        raise _not_found()
    return tenant_id


async def _addressed_and_open(
    session: AsyncSession, user_id: uuid.UUID, invitation_id: uuid.UUID
) -> Invitation:
    """In the invitation's tenant session: the invitation, locked, checked once more to be
    addressed to the user and still open."""
    own_email = select(User.email).where(User.id == user_id).scalar_subquery()
    invitation = await session.scalar(
        select(Invitation)
        .where(Invitation.id == invitation_id, Invitation.email == own_email)
        .with_for_update(of=Invitation)
    )
    if invitation is None:
        raise _not_found()
    _check_open(invitation)
    return invitation


# --- both --------------------------------------------------------------------------------------


def _check_open(invitation: Invitation) -> None:
    if invitation.status != InvitationStatus.PENDING:
        raise DomainError(
            "INVITATION_NOT_PENDING",
            f"this invitation was already {invitation.status.value.lower()}",
            "id",
        )
    if invitation.expires_at <= datetime.now(UTC):
        raise DomainError(
            "INVITATION_EXPIRED", "this invitation has expired; ask for a new one", "id"
        )
