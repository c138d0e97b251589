"""Reconciliation after a webhook outage: the events Stripe lists (tests/stripe_server.py, over
HTTP with the real client) that are not stored are applied, once, in the order they happened;
each test on a database of its own, so the newest stored event is the test's."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import stripe
from pydantic import SecretStr
from sqlalchemy import select, update

from models.billing import Payment, PaymentStatus, Plan, StripeEvent, Subscription
from models.sessions import Database
from models.tenancy import Tenant
from penguinmails.settings import Settings
from services import billing, plan_catalogue, stripe_events
from tests.cli import run_cli
from tests.factories import catalogue_file, create_tenant
from tests.stripe_server import FakeStripe, event, invoice, running_stripe, subscription

HOUR_AGO = int(time.time()) - 3600


async def _customer_with_plan(db: Database, tmp_path: Path) -> tuple[str, str]:
    """A tenant that is a Stripe customer, and the price of the plan it subscribes to."""
    customer, price = f"cus_{uuid.uuid4().hex[:12]}", f"price_{uuid.uuid4().hex[:12]}"
    async with db.system_session() as s:
        await plan_catalogue.sync(s, plan_catalogue.load(catalogue_file(tmp_path)), None)
        await s.execute(update(Plan).values(stripe_price_id=price))
        tenant_id = await create_tenant(s)
        await s.execute(
            update(Tenant).where(Tenant.id == tenant_id).values(stripe_customer_id=customer)
        )
    return customer, price


def _outage(customer: str, price: str) -> list[dict[str, Any]]:
    """Five events, a minute apart: the first two delivered, the last three lost."""

    def sub(status: str) -> dict[str, Any]:
        return subscription("sub_outage", customer, price, status)

    def inv() -> dict[str, Any]:
        return invoice("in_outage", customer, 1_000, 1_000, subscription="sub_outage")

    return [
        event("customer.subscription.created", sub("trialing"), HOUR_AGO),
        event("invoice.finalized", inv(), HOUR_AGO + 60),
        event("invoice.payment_failed", inv(), HOUR_AGO + 120),
        event("customer.subscription.updated", sub("past_due"), HOUR_AGO + 180),
        event("customer.subscription.updated", sub("active"), HOUR_AGO + 240),
    ]


@pytest.fixture
async def own_db(own_database: Settings) -> AsyncIterator[Database]:
    db = Database(own_database)
    yield db
    await db.dispose()


@pytest.fixture
async def outage(own_db: Database, tmp_path: Path) -> list[dict[str, Any]]:
    """The outage's five events, about a tenant that is a Stripe customer with a priced plan."""
    return _outage(*await _customer_with_plan(own_db, tmp_path))


def _client(settings: Settings, base: str) -> stripe.StripeClient:
    return billing.stripe_client(
        settings.model_copy(
            update={"stripe_api_key": SecretStr("sk_test_local"), "stripe_api_base": base}
        )
    )


def _events_asked(fake: FakeStripe) -> list[dict[str, list[str]]]:
    return [r.form for r in fake.requests if r.method == "GET" and r.path == "/v1/events"]


async def test_reconcile_applies_exactly_the_events_an_outage_lost_in_the_order_they_happened(
    own_database: Settings, own_db: Database, outage: list[dict[str, Any]]
) -> None:
    for delivered in outage[:2]:
        async with own_db.system_session() as s:
            assert await stripe_events.apply_event(s, delivered, grace_days=7)

    async with running_stripe() as (base, fake):
        fake.events = outage
        client = _client(own_database, base)
        assert await stripe_events.reconcile(own_db, client, grace_days=7) == 3
        assert await stripe_events.reconcile(own_db, client, grace_days=7) == 0

    [first, second] = _events_asked(fake)
    # From the newest stored event minus 5 minutes: the delivered second, then the last.
    assert first == {"created[gt]": [str(HOUR_AGO + 60 - 300)], "limit": ["100"]}
    assert second == {"created[gt]": [str(HOUR_AGO + 240 - 300)], "limit": ["100"]}
    async with own_db.system_session() as s:
        subscription = await s.scalar(select(Subscription))
        payment = await s.scalar(select(Payment))
        stored = (await s.scalars(select(StripeEvent).order_by(StripeEvent.processed_at))).all()
    assert subscription.status.name == "ACTIVE"
    assert payment.status == PaymentStatus.FAILED
    assert [e.id for e in stored] == [e["id"] for e in outage]


async def test_reconcile_pages_through_the_list_with_nothing_stored_from_30_days_ago(
    own_database: Settings, own_db: Database, outage: list[dict[str, Any]]
) -> None:
    async with running_stripe() as (base, fake):
        fake.events = outage
        before = int(time.time())
        assert (
            await stripe_events.reconcile(
                own_db, _client(own_database, base), grace_days=7, page_size=2
            )
            == 5
        )
        after = int(time.time())  # the run reads the clock between the two

    asked = _events_asked(fake)
    assert [a.get("starting_after") for a in asked] == [
        None, [outage[3]["id"]], [outage[1]["id"]],
    ]  # fmt: skip
    since = int(asked[0]["created[gt]"][0])
    assert before - 30 * 86_400 - 5 <= since <= after - 30 * 86_400
    async with own_db.system_session() as s:
        assert (await s.scalar(select(Subscription))).status.name == "ACTIVE"


async def test_billing_reconcile_prints_how_many_were_applied_and_fails_in_one_line(
    own_database: Settings, outage: list[dict[str, Any]]
) -> None:
    key = {"PENGUINMAILS_STRIPE_API_KEY": "sk_test_local"}
    code, _, err = await run_cli(
        own_database, "billing", "reconcile", PENGUINMAILS_STRIPE_API_BASE="http://127.0.0.1:9",
        **key,
    )  # fmt: skip
    assert code == 1 and err.startswith("penguinmails: Stripe: ") and err.count("\n") == 1

    async with running_stripe() as (base, fake):
        fake.events = outage
        code, out, err = await run_cli(
            own_database, "billing", "reconcile", PENGUINMAILS_STRIPE_API_BASE=base, **key
        )
    assert (code, out) == (0, "stripe events: 5 applied\n"), err

    code, _, err = await run_cli(own_database, "billing", "reconcile")
    assert code == 2 and "no Stripe key" in err
