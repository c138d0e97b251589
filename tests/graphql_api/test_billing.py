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
from penguinmails.settings import Settings
from tests.factories import create_row, table
from tests.graphql_api.conftest import Api, serve, sign_up
from tests.stripe_server import FakeStripe, running_stripe


@pytest.fixture
async def stripe_api() -> AsyncIterator[tuple[str, FakeStripe]]:
    async with running_stripe() as served:
        yield served


CHECKOUT = (
    """mutation($planId: ID!) { startCheckout(planId: $planId) { url errors { code field } } }"""
)
CANCEL = "mutation { cancelSubscription { billing { subscription { status } } errors { code } } }"


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


async def test_start_checkout_asks_stripe_for_a_session_of_the_plans_price(
    settings: Settings, db: Database, stripe_api
) -> None:
    base, fake = stripe_api
    growth = await _plan_id(db, "growth", f"price_growth_{uuid.uuid4().hex[:6]}")
    configured = settings.model_copy(
        update={"stripe_api_key": SecretStr("sk_test_local"), "stripe_api_base": base}
    )
    async for api in serve(configured):
        account = await sign_up(api)
        body = await api.gql(CHECKOUT, {"planId": growth}, token=account.token)
        assert body["data"]["startCheckout"] == {
            "url": "https://checkout.stripe.test/pay/cs_test_1",
            "errors": [],
        }
        method, path, form, auth = fake.requests[-1]
        assert (method, path, auth) == ("POST", "/v1/checkout/sessions", "Bearer sk_test_local")
        assert form["mode"] == ["subscription"] and form["line_items[0][price]"][0].startswith(
            "price_growth"
        )
        assert form["client_reference_id"] == [str(parse_id(account.tenant)[1])]
        assert form["customer_email"] == [account.email]

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


async def test_start_checkout_without_stripe_configured_is_a_clear_user_error(
    api: Api, db: Database
) -> None:
    account = await sign_up(api)
    growth = await _plan_id(db, "growth", "price_growth")
    body = await api.gql(CHECKOUT, {"planId": growth}, token=account.token)
    assert body["data"]["startCheckout"]["errors"][0]["code"] == "BILLING_NOT_CONFIGURED"


async def test_cancel_subscription_cancels_at_stripe_then_here(
    settings: Settings, db: Database, stripe_api
) -> None:
    base, fake = stripe_api
    configured = settings.model_copy(
        update={"stripe_api_key": SecretStr("sk_test_local"), "stripe_api_base": base}
    )
    async for api in serve(configured):
        account = await sign_up(api)
        tenant_id = parse_id(account.tenant)[1]
        async with db.system_session() as s:
            await s.execute(update(Subscription).where(Subscription.tenant_id == tenant_id)
                            .values(stripe_subscription_id="sub_123"))  # fmt: skip
        body = await api.gql(CANCEL, token=account.token)
        assert body["data"]["cancelSubscription"] == {
            "billing": {"subscription": {"status": "CANCELED"}},
            "errors": [],
        }
        assert fake.requests[-1][:2] == ("DELETE", "/v1/subscriptions/sub_123")
        again = await api.gql(CANCEL, token=account.token)
        assert again["data"]["cancelSubscription"]["errors"] == [{"code": "NO_SUBSCRIPTION"}]
