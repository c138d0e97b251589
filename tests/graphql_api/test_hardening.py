"""Query limits, masking, body size, introspection, CORS and the exported schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from graphql_api.schema import build_schema
from penguinmails.settings import PROJECT_ROOT, Settings
from tests.graphql_api.conftest import Api, serve, sign_up


async def test_a_query_deeper_than_the_limit_is_refused(api: Api) -> None:
    account = await sign_up(api)
    depth = api.app.state.settings.graphql_max_depth
    nested = "tenant { plan { id } }"
    for _ in range(depth):
        nested = f'node(id: "x") {{ ... on Tenant {{ {nested} }} }}'
    body = await api.gql(f"{{ {nested} }}", token=account.token)
    assert body["data"] is None
    assert "exceeds maximum operation depth" in body["errors"][0]["message"]


async def test_too_many_aliases_are_refused(api: Api) -> None:
    limit = api.app.state.settings.graphql_max_aliases
    aliases = " ".join(f"a{n}: plans {{ name }}" for n in range(limit + 1))
    body = await api.gql(f"{{ {aliases} }}")
    assert body["data"] is None and "aliases" in body["errors"][0]["message"]


async def test_too_many_tokens_are_refused(api: Api) -> None:
    limit = api.app.state.settings.graphql_max_tokens
    fields = " ".join(["name"] * limit)
    body = await api.gql(f"{{ plans {{ {fields} }} }}")
    assert body["data"] is None and "token" in body["errors"][0]["message"].lower()


async def test_a_malformed_query_says_what_is_wrong_without_a_traceback(api: Api) -> None:
    body = await api.gql("{ plans { nosuchfield } }")
    error = body["errors"][0]
    assert "nosuchfield" in error["message"]
    assert "traceback" not in str(body).lower() and "extensions" not in error


async def test_a_body_over_the_limit_is_refused_with_413(settings: Settings) -> None:
    async for small in serve(settings.model_copy(update={"max_request_bytes": 1000})):
        response = await small.http.post(
            f"{small.url}/graphql", json={"query": "{ plans { name } }", "x": "y" * 2000}
        )
        assert response.status_code == 413
        ok = await small.http.post(f"{small.url}/graphql", json={"query": "{ plans { name } }"})
        assert ok.status_code == 200 and ok.headers["x-request-id"]


async def test_introspection_and_graphiql_are_off_outside_development(api: Api) -> None:
    assert api.app.state.settings.environment == "test"
    body = await api.gql("{ __schema { types { name } } }")
    assert body["data"] is None and "introspection" in body["errors"][0]["message"].lower()
    page = await api.http.get(f"{api.url}/graphql", headers={"Accept": "text/html"})
    assert "GraphiQL" not in page.text


async def test_graphiql_and_introspection_are_on_in_development(settings: Settings) -> None:
    async for dev in serve(settings.model_copy(update={"environment": "development"})):
        body = await dev.gql("{ __schema { queryType { name } } }")
        assert body["data"]["__schema"]["queryType"]["name"] == "Query"
        page = await dev.http.get(f"{dev.url}/graphql", headers={"Accept": "text/html"})
        assert "GraphiQL" in page.text


async def test_cors_allows_the_configured_frontend_origin_only(api: Api) -> None:
    allowed = api.app.state.settings.cors_origins[0]
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-tenant-id",
    }
    ok = await api.http.options(f"{api.url}/graphql", headers={"Origin": allowed, **preflight})
    assert ok.headers.get("access-control-allow-origin") == allowed
    evil = await api.http.options(
        f"{api.url}/graphql", headers={"Origin": "https://evil.example", **preflight}
    )
    assert "access-control-allow-origin" not in evil.headers


def test_the_committed_schema_file_is_the_served_schema(settings: Settings) -> None:
    committed = (PROJECT_ROOT / "graphql_api" / "schema.graphql").read_text()
    served = build_schema(settings).as_str()
    assert committed.strip() == served.strip(), (
        "graphql_api/schema.graphql is stale: run `penguinmails schema > graphql_api/schema.graphql`"
    )
    exported = subprocess.run(
        [sys.executable, "-m", "penguinmails", "schema"], capture_output=True, text=True, check=True
    ).stdout
    assert exported.strip() == served.strip()


def test_the_schema_contains_every_contract_operation() -> None:
    contract = Path(PROJECT_ROOT).parent / "shared" / "API.md"
    sdl = (PROJECT_ROOT / "graphql_api" / "schema.graphql").read_text()
    names = ["signUp", "logIn", "createTenant", "inviteMember", "updateMemberRole", "removeMember",
             "createApiKey", "addDomain", "verifyDomain", "requestVps", "acquireIp",
             "createEmailAccount", "setWarmup", "createTemplate", "createCampaign", "importLeads",
             "launchCampaign", "pauseCampaign", "resumeCampaign", "startCheckout",
             "cancelSubscription", "node", "me", "tenants", "domains", "vpsInstances",
             "sendingIps", "emailAccounts", "templates", "campaigns", "plans", "billing",
             "dailyStats", "queueStatus", "deliverability", "campaignProgress",
             "deliverabilityEvents", "acceptInvitation", "declineInvitation",
             "revokeInvitation"]  # fmt: skip
    if contract.exists():  # beside the repository in development and CI
        text = contract.read_text()
        assert all(f"{n}(" in text or f"{n}:" in text for n in names)
    assert all(f"  {n}" in sdl for n in names)
