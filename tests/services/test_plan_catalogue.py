"""The plan catalogue: the file read and checked, and applied to app.plans and to Stripe (the
real stripe client against tests/stripe_server.py), each test on a database of its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select, update

from models.billing import Plan
from models.sessions import Database
from penguinmails.settings import Settings
from services import billing, plan_catalogue
from services.plan_catalogue import CatalogueError, Change
from tests.factories import SOLO_CATALOGUE, catalogue_file
from tests.stripe_server import running_stripe

TEAM = """
[plans.team]
name = "Team"
price_cents = 5_000
currency = "usd"
interval = "year"
emails_per_month = 50_000
domains = 5
ips = 1
email_accounts = 10
seats = 5
public = false
"""


async def _sync(settings: Settings, path: Path, stripe_base: str | None = None) -> list[Change]:
    client = None
    if stripe_base is not None:
        configured = settings.model_copy(
            update={"stripe_api_key": SecretStr("sk_test_local"), "stripe_api_base": stripe_base}
        )
        client = billing.stripe_client(configured)
    db = Database(settings)
    try:
        async with db.system_session() as session:
            return await plan_catalogue.sync(session, plan_catalogue.load(path), client)
    finally:
        await db.dispose()


async def _plans(settings: Settings) -> dict[str, dict[str, Any]]:
    db = Database(settings)
    try:
        async with db.system_session() as session:
            rows = await session.scalars(select(Plan))
            return {
                row.code: {c.key: getattr(row, c.key) for c in Plan.__table__.columns}
                for row in rows
            }
    finally:
        await db.dispose()


def _said(changes: list[Change], code: str) -> list[str]:
    return [change.what for change in changes if change.plan == code]


def test_the_packaged_catalogue_sells_three_public_monthly_plans(settings: Settings) -> None:
    catalogue = plan_catalogue.load(settings.plan_catalogue)
    assert [p.code for p in catalogue] == ["starter", "growth", "scale"]
    assert all(p.public and p.interval == "month" and p.currency == "usd" for p in catalogue)
    starter = catalogue[0]
    assert (starter.price_cents, starter.emails_per_month, starter.seats) == (4_900, 10_000, 2)


async def test_syncing_twice_changes_nothing_the_second_time(
    own_database: Settings, tmp_path: Path
) -> None:
    path = catalogue_file(tmp_path, SOLO_CATALOGUE + TEAM)
    async with running_stripe() as (base, stripe):
        first = await _sync(own_database, path, base)
        plans = await _plans(own_database)
        writes = len(stripe.writes())
        second = await _sync(own_database, path, base)
        assert await _plans(own_database) == plans  # updated_at included: no UPDATE was issued
        assert stripe.writes()[writes:] == []

    assert second == []
    solo, team = plans["solo"], plans["team"]
    assert _said(first, "solo") == ["added", f"Stripe price {solo['stripe_price_id']} created"]
    assert (solo["currency"], solo["public"], team["public"], team["interval"]) == (
        "usd", True, False, "year",
    )  # fmt: skip
    price = stripe.prices[team["stripe_price_id"]]
    assert (price["unit_amount"], price["currency"], price["recurring"]["interval"]) == (
        5_000, "usd", "year",
    )  # fmt: skip
    assert price["lookup_key"] == "team" and price["product"] == team["stripe_product_id"]
    assert stripe.products[team["stripe_product_id"]]["name"] == "Team"
    assert stripe.products[team["stripe_product_id"]]["metadata"] == {"plan_code": "team"}


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("price_cents = 1_000", "price_cents = 1_500"),
        ('currency = "USD"', 'currency = "eur"'),
        ('interval = "month"', 'interval = "year"'),
    ],
)
async def test_a_new_price_makes_a_new_stripe_price_and_archives_the_old(
    own_database: Settings, tmp_path: Path, before: str, after: str
) -> None:
    async with running_stripe() as (base, stripe):
        await _sync(own_database, catalogue_file(tmp_path, SOLO_CATALOGUE + TEAM), base)
        old = await _plans(own_database)
        changes = await _sync(
            own_database,
            catalogue_file(tmp_path, SOLO_CATALOGUE.replace(before, after) + TEAM),
            base,
        )
        new = await _plans(own_database)

    old_price, new_price = old["solo"]["stripe_price_id"], new["solo"]["stripe_price_id"]
    assert new_price != old_price
    assert _said(changes, "solo")[1:] == [
        f"Stripe price {new_price} created",
        f"Stripe price {old_price} archived",
    ]
    assert _said(changes, "team") == [] and new["team"] == old["team"]
    assert stripe.prices[old_price]["active"] is False
    assert stripe.prices[new_price]["lookup_key"] == "solo"  # moved from the old price
    assert stripe.prices[old_price]["lookup_key"] is None
    assert stripe.prices[new_price]["product"] == old["solo"]["stripe_product_id"]
    assert new["solo"]["updated_at"] > old["solo"]["updated_at"]


async def test_a_new_name_renames_the_stripe_product_and_keeps_the_price(
    own_database: Settings, tmp_path: Path
) -> None:
    async with running_stripe() as (base, stripe):
        await _sync(own_database, catalogue_file(tmp_path, SOLO_CATALOGUE), base)
        old = await _plans(own_database)
        changes = await _sync(
            own_database,
            catalogue_file(tmp_path, SOLO_CATALOGUE.replace('"Solo"', '"Solo+"')),
            base,
        )
        new = await _plans(own_database)

    product = old["solo"]["stripe_product_id"]
    assert _said(changes, "solo") == [
        "updated name 'Solo' → 'Solo+'",
        f"Stripe product {product} named 'Solo+'",
    ]
    assert stripe.products[product]["name"] == "Solo+"
    assert new["solo"]["stripe_price_id"] == old["solo"]["stripe_price_id"]


async def test_a_plan_left_out_is_retired_and_its_price_archived_and_can_come_back(
    own_database: Settings, tmp_path: Path
) -> None:
    async with running_stripe() as (base, stripe):
        await _sync(own_database, catalogue_file(tmp_path, SOLO_CATALOGUE + TEAM), base)
        price = (await _plans(own_database))["team"]["stripe_price_id"]
        retired = await _sync(own_database, catalogue_file(tmp_path, SOLO_CATALOGUE), base)
        plans = await _plans(own_database)
        again = await _sync(own_database, catalogue_file(tmp_path, SOLO_CATALOGUE), base)
        back = await _sync(own_database, catalogue_file(tmp_path, SOLO_CATALOGUE + TEAM), base)

    assert retired == [
        Change("team", "retired (no longer in the catalogue)"),
        Change("team", f"Stripe price {price} archived (plan retired)"),
    ]
    assert plans["team"]["active"] is False  # kept: tenants and subscriptions refer to it
    assert again == []
    assert back == [
        Change("team", "updated active False → True"),
        Change("team", f"Stripe price {price} active again"),
    ]
    assert stripe.prices[price]["active"] is True


async def test_a_price_stripe_already_has_for_the_plan_is_adopted_not_made_again(
    own_database: Settings, tmp_path: Path
) -> None:
    """As after a run that created the price in Stripe, then failed before it committed."""
    path = catalogue_file(tmp_path, SOLO_CATALOGUE)
    async with running_stripe() as (base, stripe):
        await _sync(own_database, path, base)
        made = await _plans(own_database)
        db = Database(own_database)
        async with db.system_session() as session:
            await session.execute(update(Plan).values(stripe_price_id=None, stripe_product_id=None))
        await db.dispose()
        writes = len(stripe.writes())
        assert await _sync(own_database, path, base) == []
        assert stripe.writes()[writes:] == []

    adopted = (await _plans(own_database))["solo"]
    assert adopted["stripe_price_id"] == made["solo"]["stripe_price_id"]
    assert adopted["stripe_product_id"] == made["solo"]["stripe_product_id"]


async def test_without_stripe_only_the_database_changes(
    own_database: Settings, tmp_path: Path
) -> None:
    changes = await _sync(own_database, catalogue_file(tmp_path, SOLO_CATALOGUE + TEAM))
    assert changes == [Change("solo", "added"), Change("team", "added")]
    assert {p["stripe_price_id"] for p in (await _plans(own_database)).values()} == {None}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (SOLO_CATALOGUE.replace("1_000\ncurrency", "-1\ncurrency"), "plan 'solo': price_cents: Input should be greater than or equal to 0 (got -1)"),
        (SOLO_CATALOGUE.replace('"USD"', '"dollars"'), "plan 'solo': currency: String should match pattern"),
        (SOLO_CATALOGUE.replace('"month"', '"week"'), "plan 'solo': interval: Input should be 'month' or 'year' (got 'week')"),
        (SOLO_CATALOGUE.replace("seats = 1", "seats = 0"), "plan 'solo': seats: Input should be greater than or equal to 1"),
        (SOLO_CATALOGUE.replace("1_000\ncurrency", '"1000"\ncurrency'), "plan 'solo': price_cents: Input should be a valid integer"),
        (SOLO_CATALOGUE.replace("seats = 1", "seat = 1"), "plan 'solo': seat: Extra inputs are not permitted (got 1) (and 1 more problem)"),
        (SOLO_CATALOGUE.replace("seats = 1\n", ""), "plan 'solo': seats: Field required"),
        (SOLO_CATALOGUE.replace("[plans.solo]", '[plans."Solo Plan"]'), "plan 'Solo Plan': code: String should match pattern"),
        (SOLO_CATALOGUE.replace("seats = 1", "seats = "), "not a TOML file: Invalid value (at line 11, column 9)"),
        (SOLO_CATALOGUE.replace("[plans.solo]", "[plan.solo]"), "unknown key 'plan'; plans are [plans.CODE] tables"),
        ("", "no plans; write each one as a [plans.CODE] table"),
    ],
)  # fmt: skip
def test_a_bad_catalogue_is_one_line_naming_the_file_the_plan_and_the_field(
    tmp_path: Path, text: str, says: str
) -> None:
    path = catalogue_file(tmp_path, text)
    with pytest.raises(CatalogueError) as refused:
        plan_catalogue.load(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: ") and says in message and "\n" not in message


def test_a_missing_catalogue_says_which_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match=r"nowhere\.toml: cannot read the plan catalogue"):
        plan_catalogue.load(tmp_path / "nowhere.toml")
