"""Reconciliation after a webhook outage: the events Stripe lists (tests/stripe_server.py, over
HTTP with the real client) that are not stored are applied, once, in the order they happened;
each test on a database of its own, so the newest stored event is the test's."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import stripe
from pydantic import SecretStr
from sqlalchemy import select, update

from models.billing import Payment, PaymentStatus, Plan, StripeEvent, Subscription
from models.sessions import Database
from models.tenancy import Tenant
from penguinmails.settings import Settings
from services import billing, plan_catalogue, stripe_events
from tests.factories import catalogue_file, create_tenant
from tests.penguinmails.test_plans import _cli
from tests.stripe_server import FakeStripe, running_stripe

HOUR_AGO = int(time.time()) - 3600


def _event(type_: str, obj: dict[str, Any], created: int) -> dict[str, Any]:
    return {
        "id": f"evt_{uuid.uuid4().hex}", "object": "event", "api_version": stripe.api_version,
        "type": type_, "created": created, "data": {"object": obj},
    }  # fmt: skip


def _subscription(customer: str, price: str, status: str) -> dict[str, Any]:
    return {
        "id": "sub_outage", "object": "subscription", "customer": customer, "status": status,
        "cancel_at_period_end": False, "items": {"object": "list", "data": [{"price": {"id": price}}]},
    }  # fmt: skip


def _invoice(customer: str) -> dict[str, Any]:
    return {"id": "in_outage", "object": "invoice", "customer": customer, "currency": "usd",
            "amount_due": 1_000, "amount_paid": 1_000, "subscription": "sub_outage"}  # fmt: skip


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
    return [
        _event("customer.subscription.created", _subscription(customer, price, "trialing"),
               HOUR_AGO),
        _event("invoice.finalized", _invoice(customer), HOUR_AGO + 60),
        _event("invoice.payment_failed", _invoice(customer), HOUR_AGO + 120),
        _event("customer.subscription.updated", _subscription(customer, price, "past_due"),
               HOUR_AGO + 180),
        _event("customer.subscription.updated", _subscription(customer, price, "active"),
               HOUR_AGO + 240),
    ]  # fmt: skip


def _client(settings: Settings, base: str) -> stripe.StripeClient:
    return billing.stripe_client(
        settings.model_copy(
            update={"stripe_api_key": SecretStr("sk_test_local"), "stripe_api_base": base}
        )
    )


def _events_asked(fake: FakeStripe) -> list[dict[str, list[str]]]:
    return [r.form for r in fake.requests if r.method == "GET" and r.path == "/v1/events"]


async def test_reconcile_applies_exactly_the_events_an_outage_lost_in_the_order_they_happened(
    own_database: Settings, tmp_path: Path
) -> None:
    db = Database(own_database)
    try:
        customer, price = await _customer_with_plan(db, tmp_path)
        events = _outage(customer, price)
        for delivered in events[:2]:
            async with db.system_session() as s:
                assert await stripe_events.apply_event(s, delivered)

        async with running_stripe() as (base, fake):
            fake.events = events
            client = _client(own_database, base)
            assert await stripe_events.reconcile(db, client) == 3
            assert await stripe_events.reconcile(db, client) == 0

        [first, second] = _events_asked(fake)
        # From the newest stored event minus 5 minutes: the delivered second, then the last.
        assert first == {"created[gt]": [str(HOUR_AGO + 60 - 300)], "limit": ["100"]}
        assert second == {"created[gt]": [str(HOUR_AGO + 240 - 300)], "limit": ["100"]}
        async with db.system_session() as s:
            subscription = await s.scalar(select(Subscription))
            payment = await s.scalar(select(Payment))
            stored = (await s.scalars(select(StripeEvent).order_by(StripeEvent.processed_at))).all()
        assert subscription.status.name == "ACTIVE"
        assert payment.status == PaymentStatus.FAILED
        assert [e.id for e in stored] == [e["id"] for e in events]
    finally:
        await db.dispose()


async def test_reconcile_pages_through_the_list_with_nothing_stored_from_30_days_ago(
    own_database: Settings, tmp_path: Path
) -> None:
    db = Database(own_database)
    try:
        customer, price = await _customer_with_plan(db, tmp_path)
        events = _outage(customer, price)
        async with running_stripe() as (base, fake):
            fake.events = events
            before = int(time.time())
            assert await stripe_events.reconcile(db, _client(own_database, base), page_size=2) == 5

        asked = _events_asked(fake)
        assert [a.get("starting_after") for a in asked] == [
            None, [events[3]["id"]], [events[1]["id"]],
        ]  # fmt: skip
        since = int(asked[0]["created[gt]"][0])
        assert before - 30 * 86_400 - 5 <= since <= before - 30 * 86_400
        async with db.system_session() as s:
            assert (await s.scalar(select(Subscription))).status.name == "ACTIVE"
    finally:
        await db.dispose()


async def test_billing_reconcile_prints_how_many_were_applied_and_fails_in_one_line(
    own_database: Settings, tmp_path: Path
) -> None:
    db = Database(own_database)
    try:
        customer, price = await _customer_with_plan(db, tmp_path)
    finally:
        await db.dispose()
    key = {"PENGUINMAILS_STRIPE_API_KEY": "sk_test_local"}
    code, _, err = await _cli(
        own_database, "billing", "reconcile", PENGUINMAILS_STRIPE_API_BASE="http://127.0.0.1:9",
        **key,
    )  # fmt: skip
    assert code == 1 and err.startswith("penguinmails: Stripe: ") and err.count("\n") == 1

    async with running_stripe() as (base, fake):
        fake.events = _outage(customer, price)
        code, out, err = await _cli(
            own_database, "billing", "reconcile", PENGUINMAILS_STRIPE_API_BASE=base, **key
        )
    assert (code, out) == (0, "stripe events: 5 applied\n"), err

    code, _, err = await _cli(own_database, "billing", "reconcile")
    assert code == 2 and "no Stripe key" in err
