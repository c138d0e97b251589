"""setWarmup over HTTP: the ramp it sets, the state EmailAccount.warmup shows, and a ramp out of
range refused field by field."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from graphql_api.ids import parse_id
from models.infrastructure import EmailAccount
from models.sessions import Database
from tests.graphql_api.conftest import Api
from tests.graphql_api.flows import call, sending_account

SET_WARMUP = """mutation($id: ID!, $enabled: Boolean!, $ramp: WarmupRampInput) {
  setWarmup(accountId: $id, enabled: $enabled, ramp: $ramp) {
    emailAccount { status warmup {
      enabled day todayTarget reputation start dailyIncrease max replyRate } }
    errors { field message code } } }"""
RAMP = {"start": 15, "dailyIncrease": 3, "max": 45, "replyRate": 0.5}


async def _account(api: Api, db: Database, prefix: str):
    owner, _, account_id = await sending_account(api, db, prefix)
    return owner, account_id


async def test_set_warmup_with_a_ramp_starts_it_at_its_start_and_shows_the_accounts_reputation(
    api: Api, db: Database
) -> None:
    owner, account_id = await _account(api, db, "Ramped")
    async with db.system_session() as s:  # the reputation services/reputation.py keeps
        await s.execute(
            update(EmailAccount)
            .where(EmailAccount.id == parse_id(account_id)[1])
            .values(reputation_score=73)
        )

    on = await call(
        api, owner, SET_WARMUP, {"id": account_id, "enabled": True, "ramp": RAMP}, "setWarmup"
    )
    kept = await call(api, owner, SET_WARMUP, {"id": account_id, "enabled": True}, "setWarmup")

    assert on["errors"] == []
    assert on["emailAccount"] == {
        "status": "WARMING_UP",
        "warmup": {
            "enabled": True, "day": 1, "todayTarget": 15, "reputation": 73,
            "start": 15, "dailyIncrease": 3, "max": 45, "replyRate": 0.5,
        },
    }  # fmt: skip
    assert kept["emailAccount"] == on["emailAccount"]  # no ramp given: the ramp stays


async def test_an_account_shows_the_default_ramp_before_warmup_is_switched_on(
    api: Api, db: Database
) -> None:
    owner, account_id = await _account(api, db, "Cold")

    off = await call(api, owner, SET_WARMUP, {"id": account_id, "enabled": False}, "setWarmup")

    assert off["emailAccount"]["warmup"] == {
        "enabled": False, "day": 0, "todayTarget": 0, "reputation": 100,
        "start": 10, "dailyIncrease": 2, "max": 40, "replyRate": 0.3,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"start": 0}, "ramp.start"),
        ({"dailyIncrease": -1}, "ramp.dailyIncrease"),
        ({"max": 14}, "ramp.max"),  # below the start
        ({"max": 501}, "ramp.max"),
        ({"replyRate": 1.01}, "ramp.replyRate"),
        ({"replyRate": -0.1}, "ramp.replyRate"),
    ],
)
async def test_a_ramp_out_of_range_is_refused_naming_its_field_and_changes_nothing(
    api: Api, db: Database, change: dict, field: str
) -> None:
    owner, account_id = await _account(api, db, "Refused")

    refused = await call(
        api, owner, SET_WARMUP, {"id": account_id, "enabled": True, "ramp": {**RAMP, **change}},
        "setWarmup",
    )  # fmt: skip
    state = await call(api, owner, SET_WARMUP, {"id": account_id, "enabled": False}, "setWarmup")

    [error] = refused["errors"]
    assert (error["code"], error["field"]) == ("WARMUP_RAMP_INVALID", field)
    assert refused["emailAccount"] is None
    assert state["emailAccount"]["warmup"]["start"] == 10
    assert state["emailAccount"]["status"] == "ACTIVE"
