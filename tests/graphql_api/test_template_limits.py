"""Template bombs sent to createTemplate and createCampaign over HTTP: each refused within the
render time limit with a UserError naming the part, and nothing written."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from models.sessions import Database
from tests.graphql_api.conftest import Account, Api, sign_up
from tests.graphql_api.flows import (
    ADD_DOMAIN,
    CREATE_ACCOUNT,
    CREATE_CAMPAIGN,
    CREATE_TEMPLATE,
    call,
    put_on_plan,
)
from tests.template_bombs import BOMBS, SLOW

# The bodies the API takes at all: it refuses those over 512 KB before the template checks.
API_BOMBS = [bomb for bomb in BOMBS if len(bomb.values[0].encode()) <= 512 * 1024]


@pytest.fixture(scope="module")
async def sender(api: Api, db: Database) -> tuple[Account, str]:
    """A tenant with an email account to create campaigns for; (account, email account id)."""
    account = await sign_up(api, "Bombs")
    await put_on_plan(db, account, "growth")
    name = f"bombs-{uuid.uuid4().hex[:8]}.example"
    domain = (await call(api, account, ADD_DOMAIN, {"name": name}, "addDomain"))["domain"]
    created = await call(
        api,
        account,
        CREATE_ACCOUNT,
        {"domainId": domain["id"], "localPart": "hello", "smtpPassword": "s3cret-smtp"},
        "createEmailAccount",
    )
    return account, created["emailAccount"]["id"]


@pytest.mark.parametrize(("source", "code"), API_BOMBS)
async def test_a_template_bomb_is_refused_by_create_template_and_create_campaign(
    api: Api, sender: tuple[Account, str], source: str, code: str
) -> None:
    account, email_account = sender
    started = time.monotonic()
    template = await call(
        api,
        account,
        CREATE_TEMPLATE,
        {"name": "bomb", "subject": "Hi {{ first_name }}", "html": source},
        "createTemplate",
    )
    template_seconds, started = time.monotonic() - started, time.monotonic()
    steps = [
        {"delayDays": 0, "subject": "Hi {{ first_name }}", "text": "Hello {{ company }}"},
        {"delayDays": 3, "subject": "Re: hi", "html": source},
    ]
    campaign = await call(
        api,
        account,
        CREATE_CAMPAIGN,
        {"input": {"name": "bomb", "accountIds": [email_account], "steps": steps}},
        "createCampaign",
    )
    campaign_seconds = time.monotonic() - started

    assert template["template"] is None
    assert [(e["code"], e["field"]) for e in template["errors"]] == [(code, "html")]
    assert campaign["campaign"] is None
    assert [(e["code"], e["field"]) for e in campaign["errors"]] == [(code, "input.steps.1.html")]
    for error in (template["errors"][0], campaign["errors"][0]):
        assert "Error(" not in error["message"] and "Traceback" not in error["message"]
    assert template_seconds < 2 and campaign_seconds < 2


async def test_refused_bombs_leave_no_template_or_campaign_behind(
    api: Api, sender: tuple[Account, str]
) -> None:
    account, _ = sender
    for source, _code in (bomb.values for bomb in BOMBS[:3]):
        await call(
            api,
            account,
            CREATE_TEMPLATE,
            {"name": "bomb", "subject": "Hi", "text": source},
            "createTemplate",
        )
    listing = await api.gql(
        "{ campaigns { edges { node { name } } } templates { edges { node { name } } } }",
        token=account.token,
        tenant=account.tenant,
    )
    assert listing["data"] == {"campaigns": {"edges": []}, "templates": {"edges": []}}


async def test_a_campaign_of_slow_steps_is_refused_within_one_time_limit_and_health_meanwhile(
    api: Api, sender: tuple[Account, str]
) -> None:
    account, email_account = sender
    steps = [{"delayDays": n, "subject": "Hi", "text": SLOW} for n in range(10)]
    started = time.monotonic()
    saving = asyncio.ensure_future(
        call(
            api,
            account,
            CREATE_CAMPAIGN,
            {"input": {"name": "slow", "accountIds": [email_account], "steps": steps}},
            "createCampaign",
        )
    )
    await asyncio.sleep(0.2)  # the first step is rendering on its thread by now
    asked = time.monotonic()
    health = await api.http.get(f"{api.url}/health")
    health_seconds = time.monotonic() - asked
    campaign = await saving
    seconds = time.monotonic() - started

    assert health.status_code == 200 and health_seconds < 0.5
    assert [e["code"] for e in campaign["errors"]] == ["TEMPLATE_RENDER"]
    # One deadline for the whole save, not one per step (10 steps would be 10 s).
    assert seconds < 3
