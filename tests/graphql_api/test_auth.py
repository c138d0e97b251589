"""Sign-up, log-in, tokens, tenants and the X-Tenant-ID header, over HTTP."""

from __future__ import annotations

import uuid

from tests.graphql_api.conftest import SIGN_UP, Api, sign_up

LOG_IN = """
mutation($email: String!, $password: String!) {
  logIn(email: $email, password: $password) { token tenant { id } errors { field code message } }
}"""
ME = "{ me { id email } tenant { id name members { role user { email } } } }"


async def test_sign_up_creates_a_user_a_tenant_and_an_owner_membership(api: Api) -> None:
    account = await sign_up(api, "Penguin Co")
    body = await api.gql(ME, token=account.token)
    assert body["data"]["me"]["email"] == account.email
    tenant = body["data"]["tenant"]
    assert tenant["id"] == account.tenant and tenant["name"] == "Penguin Co"
    assert tenant["members"] == [{"role": "OWNER", "user": {"email": account.email}}]


async def test_sign_up_with_a_taken_email_or_bad_input_is_a_user_error(api: Api) -> None:
    account = await sign_up(api)
    cases = {
        "EMAIL_TAKEN": {"email": account.email, "password": "long enough pw", "tenantName": "X"},
        "EMAIL_INVALID": {"email": "not-an-email", "password": "long enough pw", "tenantName": "X"},
        "PASSWORD_TOO_SHORT": {"email": "a@b.example", "password": "short", "tenantName": "X"},
        "TENANT_NAME_INVALID": {
            "email": f"n{uuid.uuid4().hex[:6]}@b.example",
            "password": "long enough pw",
            "tenantName": " ",
        },
    }
    for code, variables in cases.items():
        payload = (await api.gql(SIGN_UP, variables))["data"]["signUp"]
        assert [e["code"] for e in payload["errors"]] == [code]
        assert payload["token"] is None
    bad = (await api.gql(SIGN_UP, cases["TENANT_NAME_INVALID"]))["data"]["signUp"]
    assert bad["errors"][0]["code"] == "TENANT_NAME_INVALID"
    # the half-created user of a refused sign-up was rolled back: the address is still free
    again = await api.gql(SIGN_UP, {**cases["TENANT_NAME_INVALID"], "tenantName": "Fine"})
    assert again["data"]["signUp"]["errors"] == []


async def test_log_in_returns_a_working_token_and_wrong_passwords_are_refused(api: Api) -> None:
    account = await sign_up(api)
    ok = (await api.gql(LOG_IN, {"email": account.email, "password": "correct horse battery"}))[
        "data"
    ]["logIn"]
    assert ok["errors"] == [] and ok["tenant"]["id"] == account.tenant
    me = await api.gql("{ me { email } }", token=ok["token"])
    assert me["data"]["me"]["email"] == account.email
    wrong = (await api.gql(LOG_IN, {"email": account.email, "password": "nope nope nope"}))["data"][
        "logIn"
    ]
    assert wrong["token"] is None and wrong["errors"][0]["code"] == "INVALID_CREDENTIALS"


async def test_log_in_attempts_are_rate_limited_per_email(api: Api) -> None:
    account = await sign_up(api)
    limit = api.app.state.settings.login_attempts_per_email
    for n in range(limit):
        body = await api.gql(
            LOG_IN, {"email": account.email, "password": "wrong password"}, ip=f"10.9.{n}.1"
        )
        assert body["data"]["logIn"]["errors"][0]["code"] == "INVALID_CREDENTIALS"
    blocked = await api.gql(
        LOG_IN, {"email": account.email, "password": "correct horse battery"}, ip="10.9.99.1"
    )
    assert blocked["data"]["logIn"]["errors"][0]["code"] == "RATE_LIMITED"


async def test_log_in_attempts_are_rate_limited_per_ip(api: Api) -> None:
    ip = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.7"
    limit = api.app.state.settings.login_attempts_per_ip
    for n in range(limit):
        await api.gql(LOG_IN, {"email": f"nobody{n}@example.com", "password": "x" * 12}, ip=ip)
    account = await sign_up(api)
    blocked = await api.gql(
        LOG_IN, {"email": account.email, "password": "correct horse battery"}, ip=ip
    )
    assert blocked["data"]["logIn"]["errors"][0]["code"] == "RATE_LIMITED"
    elsewhere = await api.gql(
        LOG_IN, {"email": account.email, "password": "correct horse battery"}, ip="10.250.0.1"
    )
    assert elsewhere["data"]["logIn"]["errors"] == []


async def test_a_tampered_or_missing_token_sees_no_tenant_data(api: Api) -> None:
    account = await sign_up(api)
    for token in (None, account.token[:-2] + "xx", "pm_fake_key"):
        body = await api.gql("{ me { id } domains { edges { node { id } } } }", token=token)
        assert body["data"] is None or body["data"].get("domains") is None
        assert body["errors"]


async def test_x_tenant_id_selects_among_the_users_tenants_and_refuses_others(api: Api) -> None:
    account, stranger = await sign_up(api, "First"), await sign_up(api, "Stranger")
    created = await api.gql(
        'mutation { createTenant(name: "Second") { tenant { id name } errors { code } } }',
        token=account.token,
    )
    second = created["data"]["createTenant"]["tenant"]["id"]
    # two tenants now: the header picks one, by global id or raw UUID
    picked = await api.gql("{ tenant { name } }", token=account.token, tenant=second)
    assert picked["data"]["tenant"]["name"] == "Second"
    names = await api.gql("{ tenants { name } }", token=account.token)
    assert sorted(t["name"] for t in names["data"]["tenants"]) == ["First", "Second"]
    unpicked = await api.gql("{ tenant { name } }", token=account.token)
    assert unpicked["data"]["tenant"] is None and unpicked["errors"]
    foreign = await api.gql("{ tenant { name } }", token=account.token, tenant=stranger.tenant)
    assert foreign["data"]["tenant"] is None and "workspace" in foreign["errors"][0]["message"]
