"""updateTenant: a workspace's name and IANA time zone, changed by its owners and admins only."""

from __future__ import annotations

from tests.graphql_api.conftest import Account, Api, sign_up
from tests.graphql_api.flows import join

UPDATE = """mutation($name: String, $timezone: String) {
  updateTenant(name: $name, timezone: $timezone) {
    tenant { id name slug timezone } errors { code field message } } }"""
READ = "{ tenant { id name slug timezone } }"


async def _update(api: Api, account: Account, **variables) -> dict:
    body = await api.gql(UPDATE, variables, token=account.token, tenant=account.tenant)
    assert "errors" not in body, body
    return body["data"]["updateTenant"]


async def _read(api: Api, account: Account) -> dict:
    body = await api.gql(READ, token=account.token, tenant=account.tenant)
    assert "errors" not in body, body
    return body["data"]["tenant"]


async def test_an_owner_sets_the_time_zone_and_reads_it_back(api: Api) -> None:
    owner = await sign_up(api, "Zoned")
    before = await _read(api, owner)
    assert before["timezone"] == "UTC"

    updated = await _update(api, owner, timezone="America/New_York")

    assert updated == {"tenant": {**before, "timezone": "America/New_York"}, "errors": []}
    assert await _read(api, owner) == {**before, "timezone": "America/New_York"}


async def test_an_admin_may_rename_the_workspace_and_set_its_zone(api: Api) -> None:
    owner, admin = await sign_up(api, "Owned"), await sign_up(api, "Admin")
    await join(api, owner, admin, "ADMIN")
    as_admin = Account(admin.token, owner.tenant, admin.user, admin.email)

    updated = await _update(api, as_admin, name="  Renamed  ", timezone="Asia/Tokyo")

    assert updated["errors"] == []
    tenant = await _read(api, owner)
    assert (tenant["name"], tenant["timezone"]) == ("Renamed", "Asia/Tokyo")
    assert tenant["slug"].startswith("owned-")  # the slug stays what it was


async def test_a_member_and_an_api_key_may_not_update_the_workspace(api: Api) -> None:
    owner, member = await sign_up(api, "Guarded"), await sign_up(api, "Member")
    await join(api, owner, member, "MEMBER")
    key = await api.gql(
        'mutation { createApiKey(name: "ci") { apiKey { key } } }', token=owner.token
    )
    before = await _read(api, owner)

    for token in (member.token, key["data"]["createApiKey"]["apiKey"]["key"]):
        refused = await _update(
            api, Account(token, owner.tenant, member.user, member.email), timezone="Europe/Paris"
        )
        assert refused["tenant"] is None
        assert [e["code"] for e in refused["errors"]] == ["FORBIDDEN"]
    assert await _read(api, owner) == before


async def test_an_unknown_time_zone_is_a_user_error_and_changes_nothing(api: Api) -> None:
    owner = await sign_up(api, "Mars")
    before = await _read(api, owner)

    for zone in ("Mars/Olympus", "localtime", "europe/london", ""):
        refused = await _update(api, owner, name="Renamed", timezone=zone)

        assert refused["tenant"] is None
        [error] = refused["errors"]
        assert (error["code"], error["field"]) == ("INVALID_TIMEZONE", "timezone")
        assert error["message"] == f"'{zone}' is not an IANA time zone (like Europe/London)."
    assert await _read(api, owner) == before  # not renamed either


async def test_an_empty_name_is_refused_as_at_creation(api: Api) -> None:
    owner = await sign_up(api, "Named")
    before = await _read(api, owner)

    refused = await _update(api, owner, name="   ", timezone="Europe/Berlin")

    assert refused["tenant"] is None
    assert [(e["code"], e["field"]) for e in refused["errors"]] == [("TENANT_NAME_INVALID", "name")]
    assert await _read(api, owner) == before


async def test_no_arguments_return_the_workspace_as_it_is(api: Api) -> None:
    owner = await sign_up(api, "Same")
    await _update(api, owner, timezone="Australia/Sydney")
    before = await _read(api, owner)

    unchanged = await _update(api, owner)

    assert unchanged == {"tenant": before, "errors": []}
    assert await _read(api, owner) == before


async def test_another_workspace_keeps_its_own_zone(api: Api) -> None:
    owner, stranger = await sign_up(api, "First"), await sign_up(api, "Stranger")
    created = await api.gql(
        'mutation { createTenant(name: "Second") { tenant { id } errors { code } } }',
        token=owner.token,
    )
    second = Account(
        owner.token, created["data"]["createTenant"]["tenant"]["id"], owner.user, owner.email
    )

    await _update(api, owner, timezone="Pacific/Auckland")

    assert (await _read(api, owner))["timezone"] == "Pacific/Auckland"
    assert (await _read(api, second))["timezone"] == "UTC"  # the owner's other workspace
    assert (await _read(api, stranger))["timezone"] == "UTC"
    listed = await api.gql("{ tenants { id timezone } }", token=owner.token)
    assert {t["id"]: t["timezone"] for t in listed["data"]["tenants"]} == {
        owner.tenant: "Pacific/Auckland",
        second.tenant: "UTC",
    }
