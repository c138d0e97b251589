"""A payment that fails, as Stripe tells it: PAST_DUE with a grace period; the grace step (the
operator's command, with the clock moved) suspends the tenant's sending — the queuer holds its
campaign's jobs, launches are refused, the data stays readable — and the payment, once made,
restores it at once. Staff may extend the grace."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select, update

from jobs.queuer import Queuer
from models.billing import Plan, Subscription, SubscriptionStatus
from models.campaigns import Campaign
from models.infrastructure import EmailAccount
from models.queue import Job
from models.sessions import Database
from models.tenancy import AuditLog, Role, Tenant, TenantStatus, TenantUser
from penguinmails.settings import Settings
from services import billing, campaigns, leads, stripe_events
from services.deliverability_events import channel
from services.errors import DomainError
from tests.cli import run_cli
from tests.factories import create_row, sending_campaign, table
from tests.stripe_server import event, invoice, subscription

GRACE_DAYS = 7


class Paying(NamedTuple):
    tenant: uuid.UUID
    campaign: uuid.UUID  # running: its planning job waits in the queue
    customer: str
    subscription: str  # the Stripe subscription, ACTIVE here


@pytest.fixture
async def paying(db: Database, queue_settings: Settings) -> Paying:
    tenant, campaign, _ = await sending_campaign(db, queue_settings, 3, 1, 1)
    customer, sub = f"cus_{uuid.uuid4().hex[:12]}", f"sub_{uuid.uuid4().hex[:12]}"
    async with db.system_session() as s:
        plan = await s.scalar(select(Plan.id).where(Plan.code == "scale"))
        await s.execute(
            update(Tenant).where(Tenant.id == tenant).values(stripe_customer_id=customer)
        )
        s.add(Subscription(tenant_id=tenant, plan_id=plan, status=SubscriptionStatus.ACTIVE,
                           stripe_subscription_id=sub))  # fmt: skip
        owner = await create_row(s, table("app.users"), None)
        s.add(TenantUser(tenant_id=tenant, user_id=owner["id"], role=Role.OWNER))
    return Paying(tenant, campaign, customer, sub)


@pytest.fixture
async def published(settings: Settings, paying: Paying) -> AsyncIterator[list[dict]]:
    """The deliverability events published on the tenant's channel from now on."""
    redis = Redis.from_url(settings.redis_url)
    pubsub = redis.pubsub()
    await pubsub.subscribe(channel(paying.tenant))
    received: list[dict] = []

    async def listen() -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                received.append(json.loads(message["data"]))

    task = asyncio.create_task(listen())
    yield received
    task.cancel()
    await pubsub.aclose()
    await redis.aclose()


async def _apply(db: Database, stripe_event: dict) -> None:
    async with db.system_session() as s:
        assert await stripe_events.apply_event(s, stripe_event, grace_days=GRACE_DAYS)
        billing.take_events(s)  # published by the webhook and reconcile paths (tested there)


async def _state(
    db: Database, paying: Paying
) -> tuple[SubscriptionStatus, TenantStatus, Subscription]:
    async with db.system_session() as s:
        sub = await s.scalar(
            select(Subscription).where(Subscription.stripe_subscription_id == paying.subscription)
        )
        tenant = await s.get(Tenant, paying.tenant)
    return sub.status, tenant.status, sub


async def _job_statuses(db: Database, tenant: uuid.UUID) -> set[str]:
    async with db.system_session("queue") as s:
        rows = await s.scalars(select(Job.status).where(Job.tenant_id == tenant))
        return {status.value for status in rows}


async def _actions(db: Database, tenant: uuid.UUID) -> list[str]:
    async with db.system_session() as s:
        rows = await s.scalars(
            select(AuditLog.action).where(AuditLog.tenant_id == tenant).order_by(AuditLog.at)
        )
        return list(rows)


async def _notices(db: Database, mail: str) -> int:
    async with db.system_session("queue") as s:
        return await s.scalar(
            select(func.count()).select_from(Job)
            .where(Job.kind == "account_mail", Job.payload["mail"].astext == mail)
        )  # fmt: skip


async def _draft_campaign(db: Database, settings: Settings, tenant: uuid.UUID) -> uuid.UUID:
    """A campaign ready to launch, from the tenant's accounts, with one lead."""
    async with db.tenant_session(tenant) as s:
        senders = list(await s.scalars(select(EmailAccount.id)))
        spec = campaigns.CampaignSpec(
            name="next", account_ids=senders,
            steps=[campaigns.StepSpec(delay_days=0, subject="Hi", html="<p>Hi</p>", text="Hi")],
        )  # fmt: skip
        campaign = await campaigns.create_campaign(s, tenant, spec)
        await leads.import_leads(s, settings, campaign.id, "email\nnext@inbox.example\n")
        return campaign.id


async def _enforce(settings: Settings, at: datetime) -> tuple[int, str, str]:
    return await run_cli(settings, "billing", "enforce-grace", "--now", at.isoformat())


async def test_a_failed_payment_suspends_sending_after_the_grace_and_a_payment_restores_it(
    db: Database, queue_settings: Settings, conn, paying: Paying, published: list[dict]
) -> None:
    failed_at = datetime.now(UTC).replace(microsecond=0)
    notices_before = await _notices(db, "payment_failed")
    failure = invoice("in_" + uuid.uuid4().hex[:10], paying.customer, 4900, 0,
                      subscription=paying.subscription)  # fmt: skip
    await _apply(db, event("invoice.payment_failed", failure, int(failed_at.timestamp())))

    status, tenant_status, sub = await _state(db, paying)
    assert (status, tenant_status) == (SubscriptionStatus.PAST_DUE, TenantStatus.ACTIVE)
    assert sub.grace_until == failed_at + timedelta(days=GRACE_DAYS)
    assert await _notices(db, "payment_failed") == notices_before + 1  # to the one owner

    # Within the grace, the step changes nothing.
    code, out, _ = await _enforce(queue_settings, sub.grace_until - timedelta(hours=1))
    assert code == 0 and str(paying.tenant) not in out  # (other tests' tenants share the database)
    assert (await _state(db, paying))[:2] == (SubscriptionStatus.PAST_DUE, TenantStatus.ACTIVE)

    code, out, err = await _enforce(queue_settings, sub.grace_until + timedelta(minutes=1))
    assert code == 0, err
    assert f"tenant {paying.tenant}: subscription suspended" in out
    status, tenant_status, _ = await _state(db, paying)
    assert (status, tenant_status) == (SubscriptionStatus.SUSPENDED, TenantStatus.SUSPENDED)
    assert await _notices(db, "suspended") >= 1

    # The queuer holds the running campaign's jobs.
    await Queuer(queue_settings).round(conn)
    assert await _job_statuses(db, paying.tenant) == {"queued"}
    # A launch is refused; the data stays readable.
    draft = await _draft_campaign(db, queue_settings, paying.tenant)
    with pytest.raises(DomainError) as refused:
        async with db.tenant_session(paying.tenant) as s:
            await campaigns.launch(s, draft)
    assert refused.value.code == "TENANT_SUSPENDED"
    assert "payment overdue" in refused.value.message
    async with db.tenant_session(paying.tenant) as s:
        assert await s.get(Campaign, paying.campaign) is not None

    paid_at = failed_at + timedelta(days=GRACE_DAYS, hours=2)
    paid = {
        **failure,
        "amount_paid": 4900,
        "status_transitions": {"paid_at": int(paid_at.timestamp())},
    }
    await _apply(db, event("invoice.paid", paid, int(paid_at.timestamp())))
    status, tenant_status, sub = await _state(db, paying)
    assert (status, tenant_status) == (SubscriptionStatus.ACTIVE, TenantStatus.ACTIVE)
    assert sub.grace_until is None
    await Queuer(queue_settings).round(conn)
    assert await _job_statuses(db, paying.tenant) == {"dispatched"}

    assert await _actions(db, paying.tenant) == [
        "billing.past_due", "billing.suspended", "billing.active",
    ]  # fmt: skip
    await asyncio.sleep(0.2)
    assert "billing_suspended" in [e["kind"] for e in published]  # published by the command


async def test_with_no_grace_days_the_next_grace_step_suspends_and_stripes_past_due_keeps_it(
    db: Database, queue_settings: Settings, paying: Paying
) -> None:
    failed_at = datetime.now(UTC).replace(microsecond=0)
    failure = invoice("in_" + uuid.uuid4().hex[:10], paying.customer, 4900, 0,
                      subscription=paying.subscription)  # fmt: skip
    async with db.system_session() as s:
        await stripe_events.apply_event(
            s, event("invoice.payment_failed", failure, int(failed_at.timestamp())), grace_days=0
        )
    assert (await _state(db, paying))[2].grace_until == failed_at
    code, out, _ = await _enforce(queue_settings, failed_at)
    assert code == 0 and f"tenant {paying.tenant}: subscription suspended" in out
    # Stripe goes on calling it past_due: it stays suspended, not back to a new grace.
    later = subscription(paying.subscription, paying.customer, "price_x", "past_due")
    await _apply(db, event("customer.subscription.updated", later, int(failed_at.timestamp()) + 60))
    assert (await _state(db, paying))[:2] == (SubscriptionStatus.SUSPENDED, TenantStatus.SUSPENDED)


async def test_staff_extend_the_grace_of_a_suspended_tenant_which_sends_again_until_it_ends(
    db: Database, queue_settings: Settings, paying: Paying
) -> None:
    unknown = await run_cli(queue_settings, "billing", "extend-grace", "no-such-tenant", "3")
    assert unknown[0] == 2 and unknown[2].strip() == "penguinmails: no tenant 'no-such-tenant'"
    owes_nothing = await run_cli(queue_settings, "billing", "extend-grace", str(paying.tenant), "3")
    assert owes_nothing[0] == 2 and "owes nothing" in owes_nothing[2]

    failure = invoice("in_" + uuid.uuid4().hex[:10], paying.customer, 4900, 0,
                      subscription=paying.subscription)  # fmt: skip
    await _apply(db, event("invoice.payment_failed", failure))
    grace_until = (await _state(db, paying))[2].grace_until
    await _enforce(queue_settings, grace_until + timedelta(minutes=1))
    assert (await _state(db, paying))[1] == TenantStatus.SUSPENDED

    code, out, err = await run_cli(
        queue_settings, "billing", "extend-grace", str(paying.tenant), "3"
    )
    assert code == 0, err
    status, tenant_status, sub = await _state(db, paying)
    assert (status, tenant_status) == (SubscriptionStatus.GRACE, TenantStatus.ACTIVE)
    assert sub.grace_until == grace_until + timedelta(days=3)  # (the clock was moved past it)
    assert out.strip() == f"grace until {sub.grace_until.isoformat()} (GRACE)"
    async with db.system_session() as s:
        extension = await s.scalar(
            select(AuditLog).where(
                AuditLog.tenant_id == paying.tenant, AuditLog.action == "billing.grace_extended"
            )
        )
    assert extension.actor_kind == "operator" and extension.details["days"] == 3
    assert extension.details["by"]  # the operator's login

    code, out, _ = await _enforce(queue_settings, sub.grace_until + timedelta(minutes=1))
    assert f"tenant {paying.tenant}: subscription suspended" in out
    assert (await _state(db, paying))[:2] == (SubscriptionStatus.SUSPENDED, TenantStatus.SUSPENDED)
