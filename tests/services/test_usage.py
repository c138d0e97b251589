"""Usage: this period's sent emails against the plan, and what the tenant holds."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncSession

from models.billing import Plan, Subscription, SubscriptionStatus
from models.content import MessageStatus
from models.infrastructure import IpStatus
from models.sessions import Database
from models.tenancy import InvitationStatus, Role, Tenant, TenantUser
from services.usage import usage
from tests.factories import build_row, create_row, create_tenant, table


async def insert_row(session: AsyncSession, fullname: str, tenant_id: uuid.UUID, **values: Any):
    row = await build_row(session, table(fullname), tenant_id)
    await session.execute(insert(table(fullname)).values({**row, **values}))


async def create_plan(session: AsyncSession, emails_per_month: int) -> uuid.UUID:
    plan = Plan(
        code=f"p{uuid.uuid4().hex[:12]}", name="Test", price_cents=0,
        emails_per_month=emails_per_month, max_domains=5, max_ips=5, max_email_accounts=5,
        max_seats=5,
    )  # fmt: skip
    session.add(plan)
    await session.flush()
    return plan.id


async def send_messages(
    session: AsyncSession, tenant_id: uuid.UUID, n: int, *, at: datetime, status=MessageStatus.SENT
) -> None:
    for _ in range(n):
        await insert_row(session, "content.email_messages", tenant_id, status=status, sent_at=at)


def month_start() -> datetime:
    return datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def test_usage_counts_this_months_sent_emails_and_what_the_tenant_holds(db: Database):
    now = datetime.now(UTC)
    async with db.system_session() as s:
        tenant, other = await create_tenant(s), await create_tenant(s)
        plan = await create_plan(s, emails_per_month=1000)
        await s.execute(update(Tenant).where(Tenant.id == tenant).values(plan_id=plan))
        await send_messages(s, tenant, 3, at=now)
        await send_messages(s, tenant, 2, at=month_start() - timedelta(seconds=1))  # last month
        await send_messages(s, tenant, 1, at=now, status=MessageStatus.BOUNCED)
        await send_messages(s, other, 4, at=now)
        for _ in range(2):
            await create_row(s, table("app.domains"), tenant)
            await create_row(s, table("app.tenant_users"), tenant)
        for _ in range(3):
            await create_row(s, table("app.email_accounts"), tenant)  # each with its own domain
        await insert_row(s, "app.smtp_ip_addresses", tenant, status=IpStatus.ACTIVE)
        await insert_row(s, "app.smtp_ip_addresses", tenant, status=IpStatus.RELEASED)
        await create_row(s, table("app.email_accounts"), other)
        # Open invitations hold seats (the seat limit counts them); answered or expired ones not.
        later, earlier = now + timedelta(days=1), now - timedelta(days=1)
        await insert_row(
            s, "app.invitations", tenant, status=InvitationStatus.PENDING, expires_at=later
        )
        await insert_row(
            s, "app.invitations", tenant, status=InvitationStatus.PENDING, expires_at=earlier
        )
        await insert_row(
            s, "app.invitations", tenant, status=InvitationStatus.REVOKED, expires_at=later
        )
        # A member of both tenants: their session also sees their membership of the other one.
        member = await create_row(s, table("app.tenant_users"), other)
        s.add(TenantUser(tenant_id=tenant, user_id=member["user_id"], role=Role.MEMBER))

    async with db.tenant_session(tenant, user_id=member["user_id"]) as s:
        used = await usage(s, tenant)

    assert used.period_start == month_start()
    assert (used.emails_sent, used.emails_limit, used.emails_left) == (3, 1000, 997)
    assert (used.domains, used.ips, used.email_accounts, used.seats) == (5, 1, 3, 4)
    assert used.plan_name == "Test"


async def test_the_period_starts_at_the_live_subscriptions_current_period(db: Database):
    now = datetime.now(UTC)
    period_start = now - timedelta(days=3)
    async with db.system_session() as s:
        tenant = await create_tenant(s)
        plan = await create_plan(s, emails_per_month=10)
        await s.execute(update(Tenant).where(Tenant.id == tenant).values(plan_id=plan))
        s.add_all(
            [
                Subscription(
                    tenant_id=tenant, plan_id=plan, status=SubscriptionStatus.ACTIVE,
                    current_period_start=period_start, current_period_end=now + timedelta(days=27),
                ),
                Subscription(  # an earlier, cancelled one does not count
                    tenant_id=tenant, plan_id=plan, status=SubscriptionStatus.CANCELED,
                    current_period_start=now - timedelta(days=1),
                ),
            ]
        )  # fmt: skip
        await send_messages(s, tenant, 2, at=now - timedelta(days=1))
        await send_messages(s, tenant, 5, at=period_start - timedelta(minutes=1))

    async with db.tenant_session(tenant) as s:
        used = await usage(s, tenant)

    assert used.period_start == period_start
    assert (used.emails_sent, used.emails_limit) == (2, 10)


async def test_a_subscription_period_that_has_ended_falls_back_to_the_calendar_month(
    db: Database,
):
    now = datetime.now(UTC)
    async with db.system_session() as s:
        tenant = await create_tenant(s)
        plan = await create_plan(s, emails_per_month=10)
        s.add(
            Subscription(
                tenant_id=tenant, plan_id=plan, status=SubscriptionStatus.PAST_DUE,
                current_period_start=now - timedelta(days=90),
                current_period_end=now - timedelta(days=60),
            )
        )  # fmt: skip

    async with db.tenant_session(tenant) as s:
        used = await usage(s, tenant)

    assert used.period_start == month_start()


async def test_a_tenant_without_a_plan_has_no_emails_to_send(db: Database):
    async with db.system_session() as s:
        tenant = await create_tenant(s)
    async with db.tenant_session(tenant) as s:
        used = await usage(s, tenant)
    assert (used.emails_sent, used.emails_limit, used.emails_left) == (0, 0, 0)
    assert (used.domains, used.ips, used.email_accounts, used.seats) == (0, 0, 0, 0)
