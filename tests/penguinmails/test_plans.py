"""`penguinmails plans sync` and `migrate` as an operator runs them, on databases of their own:
the catalogue applied and what changed printed, a bad catalogue refused, a fresh install able to
sell."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from penguinmails.settings import Settings
from tests.cli import run_cli
from tests.conftest import create_database, drop_database
from tests.factories import SOLO_CATALOGUE, catalogue_file
from tests.graphql_api.conftest import serve, sign_up
from tests.graphql_api.flows import ADD_DOMAIN
from tests.stripe_server import running_stripe


async def _plans(settings: Settings) -> list[tuple]:
    url = make_url(settings.database_url).set(drivername="postgresql")
    conn = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        rows = await conn.fetch(
            "SELECT code, name, price_cents, active, stripe_price_id, updated_at FROM app.plans"
            " ORDER BY code"
        )
        return [tuple(row) for row in rows]
    finally:
        await conn.close()


async def test_plans_sync_applies_the_catalogue_and_says_what_changed(
    own_database: Settings, tmp_path: Path
) -> None:
    catalogue = catalogue_file(tmp_path, SOLO_CATALOGUE)
    code, out, err = await run_cli(
        own_database, "plans", "sync", PENGUINMAILS_PLAN_CATALOGUE=catalogue
    )
    assert (code, out) == (0, "plan solo: added\n"), err
    applied = await _plans(own_database)

    code, out, err = await run_cli(
        own_database, "plans", "sync", PENGUINMAILS_PLAN_CATALOGUE=catalogue
    )
    assert (code, out) == (0, "plan catalogue: nothing to change\n"), err
    assert await _plans(own_database) == applied


async def test_plans_sync_refuses_a_bad_catalogue_with_one_line_and_exit_code_2(
    own_database: Settings, tmp_path: Path
) -> None:
    await run_cli(
        own_database,
        "plans",
        "sync",
        PENGUINMAILS_PLAN_CATALOGUE=catalogue_file(tmp_path, SOLO_CATALOGUE),
    )
    before = await _plans(own_database)
    bad = catalogue_file(
        tmp_path, SOLO_CATALOGUE.replace("seats = 1", "seats = 0").replace("1_000", "2_000")
    )

    code, out, err = await run_cli(own_database, "plans", "sync", PENGUINMAILS_PLAN_CATALOGUE=bad)

    assert (code, out) == (2, "")
    assert err == (
        f"penguinmails: {bad}: plan 'solo': seats: Input should be greater than or equal to 1"
        " (got 0)\n"
    )
    assert await _plans(own_database) == before


async def test_plans_sync_with_a_stripe_key_makes_the_price_and_fails_whole(
    own_database: Settings, tmp_path: Path
) -> None:
    catalogue = catalogue_file(tmp_path, SOLO_CATALOGUE)
    unreachable = "http://127.0.0.1:9"  # discard: nothing listens
    code, _, err = await run_cli(
        own_database, "plans", "sync", PENGUINMAILS_PLAN_CATALOGUE=catalogue,
        PENGUINMAILS_STRIPE_API_KEY="sk_test_local", PENGUINMAILS_STRIPE_API_BASE=unreachable,
    )  # fmt: skip
    assert code == 1 and err.startswith("penguinmails: Stripe: ") and err.count("\n") == 1
    assert "the database is unchanged" in err and await _plans(own_database) == []

    async with running_stripe() as (base, stripe):
        code, out, err = await run_cli(
            own_database, "plans", "sync", PENGUINMAILS_PLAN_CATALOGUE=catalogue,
            PENGUINMAILS_STRIPE_API_KEY="sk_test_local", PENGUINMAILS_STRIPE_API_BASE=base,
        )  # fmt: skip
    [(_, _, _, _, price, _)] = await _plans(own_database)
    assert (code, out) == (0, f"plan solo: added\nplan solo: Stripe price {price} created\n"), err
    assert stripe.prices[price]["lookup_key"] == "solo"


@pytest.fixture
def fresh(settings: Settings) -> Iterator[Settings]:
    """An empty database, as a new install has."""
    url = create_database("pm_fresh")
    try:
        yield settings.model_copy(update={"database_url": url})
    finally:
        drop_database(url)


async def test_migrate_applies_the_catalogue_so_a_fresh_install_can_sign_up_and_add_a_domain(
    fresh: Settings,
) -> None:
    code, out, err = await run_cli(fresh, "migrate")
    assert code == 0, err
    assert out.splitlines() == ["plan starter: added", "plan growth: added", "plan scale: added"]

    async for api in serve(fresh):
        plans = await api.gql("{ plans { name } }")
        account = await sign_up(api)
        added = await api.gql(ADD_DOMAIN, {"name": "fresh-install.example"}, token=account.token)
    assert [p["name"] for p in plans["data"]["plans"]] == ["Starter", "Growth", "Scale"]
    assert added["data"]["addDomain"]["errors"] == []
