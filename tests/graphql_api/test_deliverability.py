"""What the guards and scores (services/guards.py) show over HTTP: a domain's and an IP's
reputation score, guard and its reason, an account's score (also as its warm-up reputation),
and the guard's alert in `deliverability`."""

from __future__ import annotations

from sqlalchemy import text

from graphql_api.ids import parse_id
from models.sessions import Database
from penguinmails.settings import Settings
from services import guards
from tests.factories import sending_ip
from tests.graphql_api.conftest import Api
from tests.graphql_api.flows import sending_account

STATE = """{
  domains { edges { node { name reputationScore guard guardReason blacklistedOn } } }
  sendingIps { address reputationScore guard guardReason }
  emailAccounts { edges { node { reputationScore warmup { reputation } } } }
  deliverability { alerts { kind message } }
}"""


async def test_a_throttled_domain_and_ip_show_their_guard_scores_and_alerts(
    api: Api, db: Database, settings: Settings
) -> None:
    owner, _, account_id = await sending_account(api, db, "Guarded")
    tenant, account = parse_id(owner.tenant)[1], parse_id(account_id)[1]
    await sending_ip(db, tenant)
    async with db.tenant_session(tenant, tier="content") as s:  # 1 complaint in 1,000 sends
        await s.execute(
            text(
                "INSERT INTO content.email_events (tenant_id, kind, account_id, occurred_at) "
                "SELECT :t, CASE WHEN n = 1 THEN 'COMPLAINT' ELSE 'SENT' END, :a, now() "
                "FROM generate_series(0, 1000) AS n"
            ),
            {"t": tenant, "a": account},
        )
    await guards.evaluate(db, settings, tenant)

    body = await api.gql(STATE, token=owner.token, tenant=owner.tenant)
    assert "errors" not in body, body
    data = body["data"]

    [domain] = [e["node"] for e in data["domains"]["edges"]]
    assert (domain["reputationScore"], domain["guard"], domain["blacklistedOn"]) == (
        87, "THROTTLED", [],
    )  # fmt: skip
    assert "complaints 0.10%" in domain["guardReason"]
    [ip] = data["sendingIps"]
    assert (ip["reputationScore"], ip["guard"]) == (87, "THROTTLED")
    [node] = [e["node"] for e in data["emailAccounts"]["edges"]]
    assert node == {"reputationScore": 87, "warmup": {"reputation": 87}}
    alerts = data["deliverability"]["alerts"]
    assert sorted(a["kind"] for a in alerts) == ["sending_guard", "sending_guard"]
    assert any("half rate" in a["message"] for a in alerts)
