"""The contract of API.md end to end: what a client written only from it can do, and the clear
UserError each operation gives for bad input, with nothing half-written."""

from __future__ import annotations

from datetime import date, timedelta

from models.sessions import Database
from tests.graphql_api.conftest import Api, sign_up
from tests.graphql_api.flows import (
    ACQUIRE_IP,
    ADD_DOMAIN,
    CREATE_ACCOUNT,
    CREATE_CAMPAIGN,
    CREATE_TEMPLATE,
    IMPORT,
    REQUEST_VPS,
    TRANSITION,
    build_estate,
    call,
    leads_csv,
    put_on_plan,
)

READ_BACK = """query($from: Date!, $to: Date!, $after: String) {
  tenant { name plan { name } usage { emailsSent emailsLimit domains emailAccounts ips seats } }
  domains(first: 10) { edges { node { name records { kind } } } }
  emailAccounts { edges { node { address warmup { enabled } sentToday } } }
  templates { edges { node { name variables } } }
  vpsInstances { status ips { address } }
  sendingIps { status vps { region } }
  campaigns(status: RUNNING) { edges { cursor node { id name status
      steps { position delayDays template { name } } accounts { address }
      stats { sent openRate bounceRate }
      leads(first: 100, after: $after) { edges { node { email firstName company fields status currentStep } }
                                          pageInfo { hasNextPage endCursor } } } } }
  queueStatus { queued scheduled tiers { name ready inFlight } }
  dailyStats(from: $from, to: $to) { day sent }
  deliverability { bounceRate complaintRate domains { name } ips { address } alerts { kind } }
}"""


async def test_a_client_can_set_up_import_launch_pause_and_read_everything_back(
    api: Api, db: Database
) -> None:
    account = await sign_up(api, "Flow")
    estate = await build_estate(api, db, account, "flow")
    kinds = {r["kind"] for r in estate.domain["records"]}
    assert kinds == {"spf", "dkim", "dmarc", "mx", "return_path", "tracking"}
    dkim = next(r for r in estate.domain["records"] if r["kind"] == "dkim")
    assert dkim["type"] == "TXT" and "p=" in dkim["value"] and dkim["status"] == "PENDING"
    assert estate.template["variables"] == ["company", "first_name"]
    assert [s["position"] for s in estate.campaign["steps"]] == [1, 2]

    big = await call(
        api,
        account,
        IMPORT,
        {"campaignId": estate.campaign["id"], "csv": leads_csv(10_000)},
        "importLeads",
    )
    assert (big["imported"], big["duplicates"], big["invalid"], big["errors"]) == (
        10_000,
        0,
        [],
        [],
    )

    for action, status in [
        ("launchCampaign", "RUNNING"),
        ("pauseCampaign", "PAUSED"),
        ("resumeCampaign", "RUNNING"),
    ]:
        moved = await call(api, account, TRANSITION % action, {"id": estate.campaign["id"]}, action)
        assert moved["errors"] == [] and moved["campaign"]["status"] == status

    today = date.today()
    variables = {"from": str(today - timedelta(days=6)), "to": str(today)}
    body = await api.gql(READ_BACK, variables, token=account.token)
    assert "errors" not in body, body
    data = body["data"]
    assert data["tenant"]["plan"]["name"] == "Growth"
    assert data["tenant"]["usage"] | {"emailsLimit": None} == {
        "emailsSent": 0,
        "emailsLimit": None,
        "domains": 1,
        "emailAccounts": 1,
        "ips": 2,  # the VPS's own address and the one bought for it
        "seats": 2,  # the owner and the estate's pending invitation, which holds a seat
    }
    assert data["emailAccounts"]["edges"][0]["node"] == {
        "address": "hello@flow-mail.example",
        "warmup": {"enabled": False},
        "sentToday": 0,
    }
    assert data["sendingIps"][0]["vps"]["region"] == "local"  # the provider's default
    campaign = data["campaigns"]["edges"][0]["node"]
    assert campaign["steps"][0]["template"]["name"] == "flow intro"
    assert campaign["accounts"] == [{"address": "hello@flow-mail.example"}]
    assert campaign["stats"] == {"sent": 0, "openRate": 0.0, "bounceRate": 0.0}
    assert len(data["dailyStats"]) == 7 and all(d["sent"] == 0 for d in data["dailyStats"])
    assert data["queueStatus"]["queued"] >= 1  # the planning job of the launch and the resume

    # every lead can be paged through with the cursors, each exactly once
    seen, after = [], None
    while True:
        page = await api.gql(READ_BACK, {**variables, "after": after}, token=account.token)
        leads = page["data"]["campaigns"]["edges"][0]["node"]["leads"]
        seen += [e["node"]["email"] for e in leads["edges"]]
        if not leads["pageInfo"]["hasNextPage"]:
            break
        after = leads["pageInfo"]["endCursor"]
    assert len(seen) == len(set(seen)) == 10_020
    first = next(e for e in page["data"]["campaigns"]["edges"][0]["node"]["leads"]["edges"])["node"]
    assert first["fields"] == {"Industry": "Retail"} and first["status"] == "ACTIVE"

    node = await api.gql(
        "query($id: ID!) { node(id: $id) { id ... on Campaign { name } } }",
        {"id": estate.campaign["id"]},
        token=account.token,
    )
    assert node["data"]["node"] == {"id": estate.campaign["id"], "name": "flow outreach"}


async def test_each_operation_answers_bad_input_with_a_user_error(api: Api, db: Database) -> None:
    account = await sign_up(api, "Bad")
    estate = await build_estate(api, db, account, "bad")
    campaign_id = estate.campaign["id"]
    cases = [
        ("addDomain", ADD_DOMAIN, {"name": "not a domain"}, "DOMAIN_INVALID", "name"),
        ("addDomain", ADD_DOMAIN, {"name": "bad-mail.example"}, "DOMAIN_EXISTS", "name"),
        (
            "verifyDomain",
            "mutation($id: ID!) { verifyDomain(id: $id) { errors { code field message } } }",
            {"id": "garbage"},
            "NOT_FOUND",
            "id",
        ),
        ("acquireIp", ACQUIRE_IP, {"vpsId": estate.domain["id"]}, "NOT_FOUND", "vpsId"),
        (
            "createEmailAccount",
            CREATE_ACCOUNT,
            {"domainId": estate.domain["id"], "localPart": "a b@"},
            "ADDRESS_INVALID",
            "localPart",
        ),
        (
            "setWarmup",
            "mutation($id: ID!) { setWarmup(accountId: $id, enabled: true) { errors { code field message } } }",
            {"id": campaign_id},
            "NOT_FOUND",
            "accountId",
        ),
        (
            "createTemplate",
            CREATE_TEMPLATE,
            {"name": "broken", "subject": "Hi", "html": "<p>\n{% if %}</p>"},
            "TEMPLATE_SYNTAX",
            "html",
        ),
        (
            "createTemplate",
            CREATE_TEMPLATE,
            {"name": "unknown", "subject": "Hi {{ nickname }}", "text": "x"},
            "TEMPLATE_UNDEFINED_VARIABLE",
            "subject",
        ),
        (
            "createCampaign",
            CREATE_CAMPAIGN,
            {
                "input": {
                    "name": "tz",
                    "accountIds": [estate.email_account["id"]],
                    "steps": [{"delayDays": 0, "subject": "s", "text": "t"}],
                    "window": {
                        "timezone": "Mars/Olympus",
                        "days": [1],
                        "startHour": 9,
                        "endHour": 17,
                    },
                }
            },
            "INVALID_TIMEZONE",
            "input.window.timezone",
        ),
        (
            "importLeads",
            IMPORT,
            {"campaignId": campaign_id, "csv": "name,company\nAda,Engines\n"},
            "CSV_NO_EMAIL_COLUMN",
            "csv",
        ),
        (
            "pauseCampaign",
            TRANSITION % "pauseCampaign",
            {"id": campaign_id},
            "CAMPAIGN_INVALID_TRANSITION",
            "id",
        ),
        (
            "resumeCampaign",
            TRANSITION % "resumeCampaign",
            {"id": campaign_id},
            "CAMPAIGN_INVALID_TRANSITION",
            "id",
        ),
        (
            "createTenant",
            "mutation($n: String!) { createTenant(name: $n) { errors { code field message } } }",
            {"n": ""},
            "TENANT_NAME_INVALID",
            "name",
        ),
        (
            "updateTenant",
            "mutation($z: String) { updateTenant(timezone: $z) { errors { code field message } } }",
            {"z": "Mars/Olympus"},
            "INVALID_TIMEZONE",
            "timezone",
        ),
    ]
    for field_name, query, variables, code, field in cases:
        payload = await call(api, account, query, variables, field_name)
        assert [(e["code"], e["field"]) for e in payload["errors"]] == [(code, field)], (
            field_name,
            payload,
        )
        assert payload["errors"][0]["message"]
    # launching with no active leads
    empty = await call(
        api,
        account,
        CREATE_CAMPAIGN,
        {
            "input": {
                "name": "empty",
                "accountIds": [estate.email_account["id"]],
                "steps": [{"delayDays": 0, "subject": "s", "text": "t"}],
            }
        },
        "createCampaign",
    )
    launch = await call(
        api,
        account,
        TRANSITION % "launchCampaign",
        {"id": empty["campaign"]["id"]},
        "launchCampaign",
    )
    assert launch["errors"][0]["code"] == "CAMPAIGN_NO_LEADS"
    # the refused campaign and template were not half-written
    listing = await api.gql(
        "{ campaigns { edges { node { name } } } templates { edges { node { name } } } }",
        token=account.token,
    )
    assert sorted(e["node"]["name"] for e in listing["data"]["campaigns"]["edges"]) == [
        "bad outreach",
        "empty",
    ]
    assert [e["node"]["name"] for e in listing["data"]["templates"]["edges"]] == ["bad intro"]


async def test_plan_limits_come_back_as_user_errors(api: Api, db: Database) -> None:
    account = await sign_up(api, "Limits")
    await put_on_plan(db, account, "starter")  # no sending IPs, 3 domains
    vps = await call(api, account, REQUEST_VPS, {"region": None}, "requestVps")
    assert [(e["code"], e["field"]) for e in vps["errors"]] == [("PLAN_LIMIT_IPS", None)]
    assert "Starter" in vps["errors"][0]["message"]
    for n in range(3):
        added = await call(api, account, ADD_DOMAIN, {"name": f"d{n}.limits.example"}, "addDomain")
        assert added["errors"] == []
    fourth = await call(api, account, ADD_DOMAIN, {"name": "d3.limits.example"}, "addDomain")
    assert fourth["errors"][0]["code"] == "PLAN_LIMIT_DOMAINS"


async def test_set_warmup_and_verify_domain_report_their_new_state(api: Api, db: Database) -> None:
    account = await sign_up(api, "Warm")
    estate = await build_estate(api, db, account, "warm")
    warm = await call(
        api,
        account,
        """mutation($id: ID!) { setWarmup(accountId: $id, enabled: true) {
        emailAccount { status warmup { enabled day } } errors { code } } }""",
        {"id": estate.email_account["id"]},
        "setWarmup",
    )
    assert warm["emailAccount"] == {"status": "WARMING_UP", "warmup": {"enabled": True, "day": 1}}
    verify = await call(
        api,
        account,
        "mutation($id: ID!) { verifyDomain(id: $id) { domain { status } errors { code } } }",
        {"id": estate.domain["id"]},
        "verifyDomain",
    )
    assert verify == {"domain": {"status": "PENDING"}, "errors": []}
    status = await api.gql("{ queueStatus { queued tiers { name ready } } }", token=account.token)
    # The verification job, the VPS's next step and the configuration of the IP bought for it.
    assert {"name": "high", "ready": 3} in status["data"]["queueStatus"]["tiers"]


async def test_queries_refuse_bad_ranges_pages_and_cursors_with_a_clear_message(api: Api) -> None:
    account = await sign_up(api, "Queries")
    cases = [
        ('{ dailyStats(from: "2026-02-01", to: "2026-01-01") { day } }', "`to` must follow `from`"),
        ('{ dailyStats(from: "2024-01-01", to: "2026-01-01") { day } }', "within 366 days"),
        ("{ campaigns(first: -1) { edges { cursor } } }", "must not be negative"),
        ('{ campaigns(after: "not-a-cursor") { edges { cursor } } }', "cursor is not valid"),
    ]
    for query, message in cases:
        body = await api.gql(query, token=account.token)
        assert body["data"] is None and message in body["errors"][0]["message"], body
    capped = await api.gql(
        "{ plans { name } campaigns(first: 100000) { edges { cursor } } }", token=account.token
    )
    assert capped["data"]["campaigns"]["edges"] == []
