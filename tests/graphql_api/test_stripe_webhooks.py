"""`POST /webhooks/stripe` over real HTTP, with events signed by the stripe SDK's own scheme."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import pytest
import stripe
from pydantic import SecretStr
from sqlalchemy import func, select, update

from graphql_api.ids import parse_id
from models.billing import Payment, PaymentStatus, Plan, StripeEvent, Subscription
from models.sessions import Database
from models.tenancy import AuditLog, Tenant
from penguinmails.settings import Settings
from tests.graphql_api.conftest import Account, Api, serve, sign_up
from tests.stripe_server import event, invoice, subscription

SECRET = "whsec_local_test"
BILLING = """{ billing { subscription { status plan { name } }
  payments(first: 10) { edges { node { amountCents currency status } } } } }"""


@pytest.fixture(scope="module")
async def hooks(settings: Settings) -> AsyncIterator[Api]:
    async for api in serve(
        settings.model_copy(update={"stripe_webhook_secret": SecretStr(SECRET)})
    ):
        yield api


async def _post(
    api: Api, body: dict | str, *, secret: str = SECRET, timestamp: int | None = None,
    tamper: bool = False,
) -> int:  # fmt: skip
    payload = body if isinstance(body, str) else json.dumps(body)
    header = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp)
    if tamper:
        payload = payload.replace('"type": "', '"type": "x')
    response = await api.http.post(
        f"{api.url}/webhooks/stripe",
        content=payload.encode(),
        headers={"Stripe-Signature": header, "Content-Type": "application/json"},
    )
    return response.status_code


async def _customer(db: Database, account: Account) -> str:
    """Makes the account's tenant a Stripe customer, as a completed checkout would."""
    customer = f"cus_{uuid.uuid4().hex[:12]}"
    async with db.system_session() as s:
        await s.execute(
            update(Tenant)
            .where(Tenant.id == parse_id(account.tenant)[1])
            .values(stripe_customer_id=customer)
        )
    return customer


async def _priced_plan(db: Database, code: str) -> tuple[uuid.UUID, str]:
    price = f"price_{code}_{uuid.uuid4().hex[:6]}"
    async with db.system_session() as s:
        plan_id = await s.scalar(select(Plan.id).where(Plan.code == code))
        await s.execute(update(Plan).where(Plan.id == plan_id).values(stripe_price_id=price))
    return plan_id, price


class Customer(NamedTuple):
    account: Account
    id: str  # its Stripe customer id
    price: str  # the Stripe price of the Growth plan
    sub_id: str  # its subscription, not yet heard of here

    def subscription(self, status: str, **more: Any) -> dict[str, Any]:
        return subscription(self.sub_id, self.id, self.price, status, **more)


async def _growth_customer(api: Api, db: Database) -> Customer:
    """A new account whose tenant is a Stripe customer, about to subscribe to Growth."""
    account = await sign_up(api)
    _, price = await _priced_plan(db, "growth")
    return Customer(account, await _customer(db, account), price, f"sub_{uuid.uuid4().hex[:12]}")


async def _stored(db: Database, event_id: str) -> StripeEvent | None:
    async with db.system_session() as s:
        return await s.get(StripeEvent, event_id)


async def test_a_completed_checkout_makes_the_tenant_a_paying_customer(
    hooks: Api, db: Database
) -> None:
    account = await sign_up(hooks)
    tenant_id = parse_id(account.tenant)[1]
    plan_id, _ = await _priced_plan(db, "growth")
    checkout = {
        "id": "cs_test_1", "object": "checkout.session", "mode": "subscription",
        "customer": f"cus_{uuid.uuid4().hex[:12]}", "subscription": f"sub_{uuid.uuid4().hex[:12]}",
        "client_reference_id": str(tenant_id), "payment_status": "paid",
        "metadata": {"tenant_id": str(tenant_id), "plan_id": str(plan_id)},
    }  # fmt: skip
    completed = event("checkout.session.completed", checkout)

    assert await _post(hooks, completed) == 200

    billing = (await hooks.gql(BILLING, token=account.token))["data"]["billing"]
    assert billing["subscription"] == {"status": "ACTIVE", "plan": {"name": "Growth"}}
    async with db.system_session() as s:
        tenant = await s.get(Tenant, tenant_id)
        subscriptions = (
            await s.scalars(select(Subscription).where(Subscription.tenant_id == tenant_id))
        ).all()
    assert tenant.stripe_customer_id == checkout["customer"]
    assert tenant.plan_id == plan_id  # the plan's limits are the tenant's now
    assert [x.stripe_subscription_id for x in subscriptions] == [checkout["subscription"]]
    assert (await _stored(db, completed["id"])).tenant_id == tenant_id


async def test_an_update_delivered_before_the_creation_is_not_overwritten_by_it(
    hooks: Api, db: Database
) -> None:
    customer = await _growth_customer(hooks, db)
    now = int(time.time())
    updated = customer.subscription("active", cancel_at_period_end=True)
    created = customer.subscription("trialing")

    assert await _post(hooks, event("customer.subscription.updated", updated, now)) == 200
    assert await _post(hooks, event("customer.subscription.created", created, now - 10)) == 200

    billing = (await hooks.gql(BILLING, token=customer.account.token))["data"]["billing"]
    assert billing["subscription"] == {"status": "ACTIVE", "plan": {"name": "Growth"}}
    async with db.system_session() as s:
        row = await s.scalar(
            select(Subscription).where(Subscription.stripe_subscription_id == customer.sub_id)
        )
    assert row.cancel_at_period_end and row.current_period_end.timestamp() == 1_802_592_000


async def test_a_replayed_event_is_acknowledged_and_changes_nothing(
    hooks: Api, db: Database
) -> None:
    customer = await _growth_customer(hooks, db)
    updated = event("customer.subscription.updated", customer.subscription("past_due"))
    assert await _post(hooks, updated) == 200
    async with db.system_session() as s:  # something else happened since, here
        await s.execute(
            update(Subscription).where(Subscription.stripe_subscription_id == customer.sub_id)
            .values(status="ACTIVE", stripe_updated_at=None)
        )  # fmt: skip

    assert await _post(hooks, updated) == 200

    billing = (await hooks.gql(BILLING, token=customer.account.token))["data"]["billing"]
    assert billing["subscription"]["status"] == "ACTIVE"
    async with db.system_session() as s:
        stored = await s.scalar(select(func.count()).where(StripeEvent.id == updated["id"]))
    assert stored == 1


async def test_a_deleted_subscription_is_canceled(hooks: Api, db: Database) -> None:
    customer = await _growth_customer(hooks, db)
    now = int(time.time())
    active = customer.subscription("active")
    canceled = customer.subscription("canceled", ended_at=now)
    assert await _post(hooks, event("customer.subscription.created", active, now - 5)) == 200
    assert await _post(hooks, event("customer.subscription.deleted", canceled, now)) == 200

    async with db.system_session() as s:
        row = await s.scalar(
            select(Subscription).where(Subscription.stripe_subscription_id == customer.sub_id)
        )
    assert row.status == "CANCELED" and row.canceled_at.timestamp() == now


@pytest.mark.parametrize(
    "how",
    ["another secret", "no signature", "expired timestamp", "tampered body", "not JSON"],
)
async def test_a_request_stripe_did_not_sign_as_sent_is_refused(
    hooks: Api, db: Database, how: str
) -> None:
    sent = event("customer.tax_id.created", {"id": "txi_1", "customer": "cus_x"})
    if how == "another secret":
        status = await _post(hooks, sent, secret="whsec_someone_else")
    elif how == "no signature":
        response = await hooks.http.post(f"{hooks.url}/webhooks/stripe", json=sent)
        status = response.status_code
    elif how == "expired timestamp":
        status = await _post(hooks, sent, timestamp=int(time.time()) - 600)
    elif how == "tampered body":
        status = await _post(hooks, sent, tamper=True)
    else:
        status = await _post(hooks, "{not json " + sent["id"])

    assert status == 400
    assert await _stored(db, sent["id"]) is None


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_body_over_a_megabyte_is_refused_unread(hooks: Api, declared: bool) -> None:
    body = b"{" + b" " * (10 * 1024 * 1024) + b"}"

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    response = await hooks.http.post(
        f"{hooks.url}/webhooks/stripe",
        content=body if declared else chunks(),
        headers={"Stripe-Signature": "t=1,v1=0"},
    )
    assert response.status_code == 413


async def test_an_unknown_type_or_customer_is_stored_and_acknowledged(
    hooks: Api, db: Database
) -> None:
    unknown_type = event("customer.tax_id.created", {"id": "txi_1", "customer": "cus_x"})
    sub_id = f"sub_{uuid.uuid4().hex[:12]}"
    unknown_customer = event(
        "customer.subscription.updated", subscription(sub_id, "cus_nobody", "price_x", "active")
    )

    assert await _post(hooks, unknown_type) == 200
    assert await _post(hooks, unknown_customer) == 200

    assert (await _stored(db, unknown_type["id"])).type == "customer.tax_id.created"
    assert (await _stored(db, unknown_customer["id"])).tenant_id is None
    async with db.system_session() as s:
        assert await s.scalar(
            select(Subscription).where(Subscription.stripe_subscription_id == sub_id)
        ) is None  # fmt: skip


async def test_a_failed_then_paid_invoice_is_one_payment_with_the_final_status(
    hooks: Api, db: Database
) -> None:
    account = await sign_up(hooks)
    customer = await _customer(db, account)
    invoice_id = f"in_{uuid.uuid4().hex[:12]}"
    now = int(time.time())
    due = invoice(
        invoice_id, customer, 14900, 0,
        hosted_invoice_url=f"https://invoice.stripe.test/{invoice_id}",
    )  # fmt: skip
    paid = {**due, "amount_paid": 14900, "status_transitions": {"paid_at": now}}

    assert await _post(hooks, event("invoice.finalized", due, now - 20)) == 200
    assert await _post(hooks, event("invoice.payment_failed", due, now - 10)) == 200
    assert await _post(hooks, event("invoice.paid", paid, now)) == 200
    # A failure delivered late does not undo the payment.
    assert await _post(hooks, event("invoice.payment_failed", due, now - 5)) == 200

    billing = (await hooks.gql(BILLING, token=account.token))["data"]["billing"]
    assert [e["node"] for e in billing["payments"]["edges"]] == [
        {"amountCents": 14900, "currency": "usd", "status": "SUCCEEDED"}
    ]
    async with db.system_session() as s:
        payment = await s.scalar(select(Payment).where(Payment.stripe_invoice_id == invoice_id))
    assert payment.status == PaymentStatus.SUCCEEDED and payment.paid_at.timestamp() == now
    assert payment.hosted_invoice_url == due["hosted_invoice_url"]


async def test_a_failed_payment_over_the_webhook_is_audited_and_published_once_committed(
    hooks: Api, db: Database, settings: Settings
) -> None:
    from redis.asyncio import Redis

    from services.deliverability_events import channel

    customer = await _growth_customer(hooks, db)
    tenant_id = parse_id(customer.account.tenant)[1]
    assert (
        await _post(hooks, event("customer.subscription.created", customer.subscription("active")))
        == 200
    )
    redis = Redis.from_url(settings.redis_url)
    pubsub = redis.pubsub()
    await pubsub.subscribe(channel(tenant_id))
    try:
        failed = invoice(
            "in_" + uuid.uuid4().hex[:8], customer.id, 4900, 0, subscription=customer.sub_id
        )
        assert await _post(hooks, event("invoice.payment_failed", failed)) == 200
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
        while message is None or message["type"] != "message":
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
    finally:
        await pubsub.aclose()
        await redis.aclose()
    published = json.loads(message["data"])
    assert (published["kind"], published["subjectType"]) == ("billing_past_due", "Tenant")
    assert "a payment failed" in published["message"]
    body = await hooks.gql(
        "{ billing { subscription { status graceUntil } } }", token=customer.account.token
    )
    assert body["data"]["billing"]["subscription"]["status"] == "PAST_DUE"
    assert body["data"]["billing"]["subscription"]["graceUntil"] is not None
    async with db.system_session() as s:
        actions = list(
            await s.scalars(select(AuditLog.action).where(AuditLog.tenant_id == tenant_id))
        )
    assert actions.count("billing.past_due") == 1
