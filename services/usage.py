"""What a tenant has used against its plan: emails sent this billing period, and the domains,
sending IPs, email accounts and seats it holds (members and open invitations, as the seat limit
counts them)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ScalarSelect, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from models.billing import LIVE_STATUSES, Plan, Subscription
from models.content import EmailMessage, MessageStatus
from models.infrastructure import Domain, EmailAccount, IpStatus, SmtpIpAddress
from models.tenancy import Invitation, InvitationStatus, Tenant, TenantUser


@dataclass(frozen=True)
class Usage:
    period_start: datetime
    emails_sent: int
    emails_limit: int  # 0 without a plan: nothing may be sent until one is chosen
    domains: int
    ips: int
    email_accounts: int
    seats: int
    plan_name: str | None = None

    @property
    def emails_left(self) -> int:
        return max(self.emails_limit - self.emails_sent, 0)


async def usage(session: AsyncSession, tenant_id: uuid.UUID) -> Usage:
    """One round trip. The period is the live subscription's current one, or the calendar month
    (UTC) when there is none, or its period has ended without Stripe telling us of the next.
    Reads content.email_messages through `session`, so it assumes the content tier shares the
    OLTP database (the default)."""
    period = select(
        func.coalesce(_subscription_period_start(tenant_id), _month_start()).label("start")
    ).cte("period")
    sent = _count(
        EmailMessage,
        EmailMessage.tenant_id == tenant_id,
        EmailMessage.status == MessageStatus.SENT,
        EmailMessage.sent_at >= period.c.start,
    )
    plan = select(Plan).join(Tenant, Tenant.plan_id == Plan.id).where(Tenant.id == tenant_id)
    open_invitations = _count(
        Invitation,
        Invitation.tenant_id == tenant_id,
        Invitation.status == InvitationStatus.PENDING,
        Invitation.expires_at > func.now(),
    )
    # Each count names the tenant as well as relying on RLS: a tenant session with a user bound
    # also sees that user's memberships of other tenants.
    row = (
        await session.execute(
            select(
                period.c.start,
                sent,
                func.coalesce(plan.with_only_columns(Plan.emails_per_month).scalar_subquery(), 0),
                _count(Domain, Domain.tenant_id == tenant_id),
                _count(
                    SmtpIpAddress,
                    SmtpIpAddress.tenant_id == tenant_id,
                    SmtpIpAddress.status != IpStatus.RELEASED,
                ),
                _count(EmailAccount, EmailAccount.tenant_id == tenant_id),
                _count(TenantUser, TenantUser.tenant_id == tenant_id) + open_invitations,
                plan.with_only_columns(Plan.name).scalar_subquery(),
            ).select_from(period)
        )
    ).one()
    return Usage(*row)


def _subscription_period_start(tenant_id: uuid.UUID) -> ScalarSelect:
    return (
        select(Subscription.current_period_start)
        .where(
            Subscription.tenant_id == tenant_id,
            Subscription.status.in_(LIVE_STATUSES),
            Subscription.current_period_start <= func.now(),
            or_(
                Subscription.current_period_end.is_(None),
                Subscription.current_period_end > func.now(),
            ),
        )
        .order_by(Subscription.created_at.desc())
        .limit(1)
        .scalar_subquery()
    )


def _month_start():
    return func.date_trunc("month", func.now(), "UTC")


def _count(model: type, *where) -> ScalarSelect:
    return select(func.count()).select_from(model).where(*where).scalar_subquery()
