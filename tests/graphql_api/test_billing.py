"""Plans, billing, Checkout and cancellation, with the real Stripe client pointed at a local
server that stands in for Stripe's API."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr
from sqlalchemy import insert, select, update

from graphql_api.ids import encode_id, parse_id
from models.billing import Payment, PaymentStatus, Plan, Subscription
from models.sessions import Database
from models.tenancy import AuditLog, Tenant, TenantStatus
from penguinmails.settings import Settings
from tests.factories import create_row, table
from tests.graphql_api.conftest import Api, serve, sign_up
from tests.stripe_server import FakeStripe, running_stripe, subscription


@pytest.fixture
async def stripe_served(settings: Settings) -> AsyncIterator[tuple[Api, FakeStripe]]:
    """The API with Stripe set up, its client pointed at a fake Stripe: (the API, the fake)."""
    async with running_stripe() as (base, fake):
        configured = settings.model_copy(
            update={"stripe_api_key": SecretStr("sk_test_local"), "stripe_api_base": base}
        )
        async for api in serve(configured):
            yield api, fake


CHECKOUT = (
    """mutation($planId: ID!) { startCheckout(planId: $planId) { url errors { code field } } }"""
)


async def _plan_id(db: Database, code: str, price: str | None) -> str:
    async with db.system_session() as s:
        plan = await s.scalar(select(Plan).where(Plan.code == code))
        await s.execute(update(Plan).where(Plan.id == plan.id).values(stripe_price_id=price))
    return encode_id("Plan", plan.id)


async def test_plans_are_public_with_their_limits(api: Api) -> None:
    body = await api.gql(
        "{ plans { id name priceCents currency interval limits { emailsPerMonth seats } } }"
    )
    starter = next(p for p in body["data"]["plans"] if p["name"] == "Starter")
    assert starter["priceCents"] == 4900 and starter["currency"] == "usd"
    assert starter["limits"] == {"emailsPerMonth": 10000, "seats": 2}


async def test_billing_shows_the_subscription_and_pages_of_payments(api: Api, db: Database) -> None:
    account = await sign_up(api)
    tenant_id = parse_id(account.tenant)[1]
    async with db.system_session() as s:
        subscription = await s.scalar(
            select(Subscription.id).where(Subscription.tenant_id == tenant_id)
        )
        await s.execute(insert(Payment).values([
            dict(tenant_id=tenant_id, subscription_id=subscription, amount_cents=4900 + n,
                 status=PaymentStatus.SUCCEEDED) for n in range(3)
        ]))  # fmt: skip
    query = """query($after: String) { billing { subscription { status plan { name } }
      payments(first: 2, after: $after) { edges { node { amountCents status } } pageInfo { hasNextPage endCursor } } } }"""
    first = (await api.gql(query, token=account.token))["data"]["billing"]
    assert first["subscription"] == {"status": "TRIALING", "plan": {"name": "Starter"}}
    assert len(first["payments"]["edges"]) == 2 and first["payments"]["pageInfo"]["hasNextPage"]
    rest = await api.gql(
        query, {"after": first["payments"]["pageInfo"]["endCursor"]}, token=account.token
    )
    page = rest["data"]["billing"]["payments"]
    assert len(page["edges"]) == 1 and not page["pageInfo"]["hasNextPage"]
    amounts = [e["node"]["amountCents"] for e in first["payments"]["edges"] + page["edges"]]
    assert sorted(amounts) == [4900, 4901, 4902]


async def test_the_first_checkout_creates_the_tenants_stripe_customer_then_a_session_for_it(
    settings: Settings, db: Database, stripe_served
) -> None:
    api, fake = stripe_served
    growth = await _plan_id(db, "growth", f"price_growth_{uuid.uuid4().hex[:6]}")
    account = await sign_up(api)
    tenant_id = parse_id(account.tenant)[1]
    body = await api.gql(CHECKOUT, {"planId": growth}, token=account.token)
    assert body["data"]["startCheckout"] == {
        "url": "https://checkout.stripe.test/pay/cs_test_1",
        "errors": [],
    }
    customer, checkout = fake.requests[-2:]
    assert (customer.method, customer.path, customer.authorization) == (
        "POST", "/v1/customers", "Bearer sk_test_local",
    )  # fmt: skip
    assert customer.form["email"] == [account.email]
    assert customer.form["metadata[tenant_id]"] == [str(tenant_id)]
    assert customer.idempotency_key == f"penguinmails-customer-{tenant_id}"
    async with db.system_session() as s:
        customer_id = (await s.get(Tenant, tenant_id)).stripe_customer_id
    assert customer_id in fake.customers
    assert (checkout.method, checkout.path) == ("POST", "/v1/checkout/sessions")
    assert checkout.form["mode"] == ["subscription"]
    assert checkout.form["customer"] == [customer_id]
    assert checkout.form["line_items[0][price]"][0].startswith("price_growth")
    assert checkout.form["client_reference_id"] == [str(tenant_id)]
    assert checkout.form["metadata[tenant_id]"] == [str(tenant_id)]

    again = await api.gql(CHECKOUT, {"planId": growth}, token=account.token)
    assert again["data"]["startCheckout"]["errors"] == []
    assert [r.path for r in fake.requests[-1:]] == ["/v1/checkout/sessions"]  # same customer
    assert len(fake.customers) == 1

    await _subscribed(db, fake, tenant_id)  # subscribed: a plan change, not a second checkout
    subscribed = await api.gql(CHECKOUT, {"planId": growth}, token=account.token)
    assert subscribed["data"]["startCheckout"]["errors"] == [
        {"code": "ALREADY_SUBSCRIBED", "field": "planId"}
    ]


async def test_checkout_refuses_plans_that_are_not_for_sale(
    settings: Settings, db: Database, stripe_served
) -> None:
    api, fake = stripe_served
    account = await sign_up(api)
    starter = await _plan_id(db, "starter", None)
    refused = await api.gql(CHECKOUT, {"planId": starter}, token=account.token)
    assert refused["data"]["startCheckout"]["errors"] == [
        {"code": "PLAN_NOT_PURCHASABLE", "field": "planId"}
    ]
    async with db.system_session() as s:  # a private plan, even with a Stripe price
        private = await create_row(s, table("app.plans"), None)
        await s.execute(
            update(Plan).where(Plan.id == private["id"]).values(stripe_price_id="price_p")
        )
    assert private["public"] is False
    hidden = await api.gql(
        CHECKOUT, {"planId": encode_id("Plan", private["id"])}, token=account.token
    )
    assert hidden["data"]["startCheckout"]["errors"] == [
        {"code": "PLAN_NOT_PURCHASABLE", "field": "planId"}
    ]
    unknown = await api.gql(
        CHECKOUT, {"planId": encode_id("Plan", uuid.uuid4())}, token=account.token
    )
    assert unknown["data"]["startCheckout"]["errors"][0]["code"] == "NOT_FOUND"
    assert fake.writes() == []


PORTAL = "mutation { openBillingPortal { url errors { code } } }"


async def test_the_billing_portal_opens_for_the_tenants_stripe_customer(
    settings: Settings, db: Database, stripe_served
) -> None:
    api, fake = stripe_served
    account = await sign_up(api)
    before = await api.gql(PORTAL, token=account.token)
    assert before["data"]["openBillingPortal"] == {
        "url": None, "errors": [{"code": "NO_BILLING_ACCOUNT"}],
    }  # fmt: skip
    growth = await _plan_id(db, "growth", f"price_growth_{uuid.uuid4().hex[:6]}")
    await api.gql(CHECKOUT, {"planId": growth}, token=account.token)
    (customer_id,) = fake.customers
    body = await api.gql(PORTAL, token=account.token)
    assert body["data"]["openBillingPortal"] == {
        "url": "https://billing.stripe.test/p/session_1", "errors": [],
    }  # fmt: skip
    portal = fake.requests[-1]
    assert (portal.method, portal.path) == ("POST", "/v1/billing_portal/sessions")
    assert portal.form["customer"] == [customer_id]
    assert portal.form["return_url"] == [f"{settings.public_url}/billing"]


async def _subscribed(
    db: Database, fake: FakeStripe, tenant_id: uuid.UUID, *, cancel_at_period_end: bool = False
) -> str:
    """The tenant's subscription becomes an ACTIVE Stripe one, which the fake Stripe knows."""
    sub_id = f"sub_{uuid.uuid4().hex[:8]}"
    fake.subscriptions[sub_id] = subscription(
        sub_id, "cus_x", "price_starter", "active", cancel_at_period_end=cancel_at_period_end
    )
    async with db.system_session() as s:
        await s.execute(
            update(Subscription)
            .where(Subscription.tenant_id == tenant_id)
            .values(stripe_subscription_id=sub_id, status="ACTIVE",
                    cancel_at_period_end=cancel_at_period_end)
        )  # fmt: skip
    return sub_id


CANCEL = """mutation { cancelSubscription {
  billing { subscription { status cancelAtPeriodEnd } } errors { code } } }"""


async def test_cancelling_a_stripe_subscription_ends_it_at_the_period_end_not_now(
    settings: Settings, db: Database, stripe_served
) -> None:
    api, fake = stripe_served
    account = await sign_up(api)
    tenant_id = parse_id(account.tenant)[1]
    sub_id = await _subscribed(db, fake, tenant_id)
    body = await api.gql(CANCEL, token=account.token)
    assert body["data"]["cancelSubscription"] == {
        "billing": {"subscription": {"status": "ACTIVE", "cancelAtPeriodEnd": True}},
        "errors": [],
    }
    update_ = fake.requests[-1]
    assert (update_.method, update_.path) == ("POST", f"/v1/subscriptions/{sub_id}")
    assert update_.form == {"cancel_at_period_end": ["true"]}
    assert fake.subscriptions[sub_id]["cancel_at_period_end"] is True
    shown = await api.gql(
        "{ billing { subscription { status cancelAtPeriodEnd } } }", token=account.token
    )
    assert shown["data"]["billing"]["subscription"] == {
        "status": "ACTIVE", "cancelAtPeriodEnd": True,
    }  # fmt: skip
    async with db.system_session() as s:
        audited = await s.scalar(
            select(AuditLog.action).where(AuditLog.tenant_id == tenant_id)
            .order_by(AuditLog.at.desc()).limit(1)
        )  # fmt: skip
    assert audited == "billing.cancel_at_period_end"


async def test_cancelling_the_trial_from_sign_up_ends_it_now_and_stops_sending(
    api: Api, db: Database
) -> None:
    account = await sign_up(api)
    tenant_id = parse_id(account.tenant)[1]
    body = await api.gql(CANCEL, token=account.token)
    assert body["data"]["cancelSubscription"] == {
        "billing": {"subscription": {"status": "CANCELED", "cancelAtPeriodEnd": False}},
        "errors": [],
    }
    again = await api.gql(CANCEL, token=account.token)
    assert again["data"]["cancelSubscription"]["errors"] == [{"code": "NO_SUBSCRIPTION"}]
    async with db.system_session() as s:
        tenant = await s.get(Tenant, tenant_id)
    assert tenant.status == TenantStatus.SUSPENDED
    assert tenant.sending_suspended_reason == "cancelled by the tenant"


CHANGE = """mutation($planId: ID!) { changePlan(planId: $planId) {
  billing { subscription { plan { name } cancelAtPeriodEnd } } errors { code field message } } }"""


async def test_changing_plan_switches_the_stripe_subscriptions_price_with_proration(
    settings: Settings, db: Database, stripe_served
) -> None:
    api, fake = stripe_served
    growth_price = f"price_growth_{uuid.uuid4().hex[:6]}"
    growth = await _plan_id(db, "growth", growth_price)
    account = await sign_up(api)
    tenant_id = parse_id(account.tenant)[1]
    sub_id = await _subscribed(db, fake, tenant_id, cancel_at_period_end=True)
    body = await api.gql(CHANGE, {"planId": growth}, token=account.token)
    assert body["data"]["changePlan"] == {
        "billing": {"subscription": {"plan": {"name": "Growth"}, "cancelAtPeriodEnd": False}},
        "errors": [],
    }
    read, write = fake.requests[-2:]
    assert (read.method, read.path) == ("GET", f"/v1/subscriptions/{sub_id}")
    assert (write.method, write.path) == ("POST", f"/v1/subscriptions/{sub_id}")
    assert write.form == {
        "items[0][id]": [f"si_{sub_id}"], "items[0][price]": [growth_price],
        "proration_behavior": ["create_prorations"], "cancel_at_period_end": ["false"],
    }  # fmt: skip
    limits = await api.gql(
        "{ tenant { usage { emailsLimit } plan { name } } }", token=account.token
    )
    assert limits["data"]["tenant"]["plan"] == {"name": "Growth"}
    growth_limit = await _emails_per_month(db, "growth")
    assert limits["data"]["tenant"]["usage"]["emailsLimit"] == growth_limit


async def _emails_per_month(db: Database, code: str) -> int:
    async with db.system_session() as s:
        return await s.scalar(select(Plan.emails_per_month).where(Plan.code == code))


async def test_a_plan_too_small_for_what_the_tenant_holds_is_refused_and_stripe_is_not_called(
    settings: Settings, db: Database, stripe_served
) -> None:
    api, fake = stripe_served
    account = await sign_up(api)
    tenant_id = parse_id(account.tenant)[1]
    small = await _plan_id(db, "starter", f"price_starter_{uuid.uuid4().hex[:6]}")
    await _subscribed(db, fake, tenant_id)
    async with db.system_session() as s:
        growth = await s.scalar(select(Plan).where(Plan.code == "growth"))
        starter = await s.scalar(select(Plan).where(Plan.code == "starter"))
        await s.execute(update(Subscription).where(Subscription.tenant_id == tenant_id)
                        .values(plan_id=growth.id))  # fmt: skip
        await s.execute(update(Tenant).where(Tenant.id == tenant_id).values(plan_id=growth.id))
        for _ in range(starter.max_domains + 1):
            await create_row(s, table("app.domains"), tenant_id)
    body = await api.gql(CHANGE, {"planId": small}, token=account.token)
    (error,) = body["data"]["changePlan"]["errors"]
    assert (error["code"], error["field"]) == ("PLAN_TOO_SMALL", "planId")
    assert (
        f"{starter.max_domains + 1} domains (it allows {starter.max_domains})" in error["message"]
    )
    assert fake.requests == []


async def test_changing_plan_from_the_sign_up_trial_needs_a_checkout_when_stripe_is_set_up(
    settings: Settings, db: Database, stripe_served
) -> None:
    api, fake = stripe_served
    growth = await _plan_id(db, "growth", f"price_growth_{uuid.uuid4().hex[:6]}")
    account = await sign_up(api)
    body = await api.gql(CHANGE, {"planId": growth}, token=account.token)
    assert body["data"]["changePlan"]["errors"][0]["code"] == "CHECKOUT_REQUIRED"
    assert fake.requests == []


# --- local mode --------------------------------------------------------------------------------


async def test_local_mode_checkout_activates_the_plan_after_the_confirmation_page(
    api: Api, db: Database, settings: Settings
) -> None:
    account = await sign_up(api)
    tenant_id = parse_id(account.tenant)[1]
    growth = await _plan_id(db, "growth", None)  # no Stripe price is needed without Stripe
    mode = await api.gql("{ billing { mode } }", token=account.token)
    assert mode["data"]["billing"]["mode"] == "LOCAL"
    body = await api.gql(CHECKOUT, {"planId": growth}, token=account.token)
    url = body["data"]["startCheckout"]["url"]
    assert url.startswith(f"{settings.public_url}/billing/local-checkout?token=")
    local = url.replace(settings.public_url, api.url)

    page = await api.http.get(local)
    assert page.status_code == 200
    assert "local mode" in page.text and "Growth" in page.text
    status = await api.gql(
        "{ billing { subscription { status plan { name } } } }", token=account.token
    )
    assert status["data"]["billing"]["subscription"] == {  # a GET changes nothing
        "status": "TRIALING", "plan": {"name": "Starter"},
    }  # fmt: skip

    confirmed = await api.http.post(local)
    assert confirmed.status_code == 200 and "Growth is active" in confirmed.text
    after = await api.gql(
        "{ billing { subscription { status plan { name } currentPeriodEnd } } tenant { plan { name } } }",
        token=account.token,
    )
    assert after["data"]["billing"]["subscription"]["status"] == "ACTIVE"
    assert after["data"]["billing"]["subscription"]["plan"] == {"name": "Growth"}
    assert after["data"]["billing"]["subscription"]["currentPeriodEnd"] is not None
    assert after["data"]["tenant"]["plan"] == {"name": "Growth"}
    async with db.system_session() as s:
        actions = list(
            await s.scalars(select(AuditLog.action).where(AuditLog.tenant_id == tenant_id))
        )
    assert "billing.active" in actions

    forged = await api.http.post(local[:-3] + "xyz")
    assert forged.status_code == 400 and "not valid" in forged.text


async def test_local_mode_has_no_portal(api: Api) -> None:
    account = await sign_up(api)
    body = await api.gql(PORTAL, token=account.token)
    assert body["data"]["openBillingPortal"]["errors"] == [{"code": "BILLING_LOCAL_MODE"}]
