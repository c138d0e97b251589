"""Members, roles and API keys: who may manage whom, enforced by permission classes."""

from __future__ import annotations

from tests.graphql_api.conftest import Api, sign_up
from tests.graphql_api.flows import INVITE, join

UPDATE_ROLE = """mutation($userId: ID!, $role: Role!) {
  updateMemberRole(userId: $userId, role: $role) { member { role } errors { code } }
}"""
REMOVE = """mutation($userId: ID!) { removeMember(userId: $userId) { member { role } errors { code } } }"""
CREATE_KEY = """mutation($name: String!) {
  createApiKey(name: $name) { apiKey { id name prefix key } errors { code field } }
}"""
LOG_IN = """mutation($email: String!, $password: String!) { logIn(email: $email, password: $password) { token } }"""


async def _member_token(api: Api, owner, role: str) -> tuple[str, str]:
    """A fresh user who joined owner's workspace with `role` (they signed up for their own
    first; the invited workspace is then picked by X-Tenant-ID): their token and user id."""
    member = await sign_up(api, "Member")
    await join(api, owner, member, role)
    return member.token, member.user


async def test_an_owner_invites_changes_and_removes_members(api: Api) -> None:
    owner = await sign_up(api)
    token, user_id = await _member_token(api, owner, "MEMBER")
    promoted = await api.gql(UPDATE_ROLE, {"userId": user_id, "role": "ADMIN"}, token=owner.token)
    assert promoted["data"]["updateMemberRole"] == {"member": {"role": "ADMIN"}, "errors": []}
    members = await api.gql("{ tenant { members { role } } }", token=owner.token)
    assert sorted(m["role"] for m in members["data"]["tenant"]["members"]) == ["ADMIN", "OWNER"]
    removed = await api.gql(REMOVE, {"userId": user_id}, token=owner.token)
    assert removed["data"]["removeMember"]["errors"] == []
    after = await api.gql("{ tenant { members { role } } }", token=owner.token)
    assert [m["role"] for m in after["data"]["tenant"]["members"]] == ["OWNER"]
    # the removed member no longer reaches the workspace
    gone = await api.gql("{ tenant { name } }", token=token, tenant=owner.tenant)
    assert gone["data"]["tenant"] is None


async def test_members_cannot_manage_members_billing_or_api_keys(api: Api) -> None:
    owner = await sign_up(api)
    token, user_id = await _member_token(api, owner, "MEMBER")
    as_member = {"token": token, "tenant": owner.tenant}
    for query, variables, field in [
        (INVITE, {"email": "x@example.com", "role": "MEMBER"}, "inviteMember"),
        (UPDATE_ROLE, {"userId": user_id, "role": "ADMIN"}, "updateMemberRole"),
        (REMOVE, {"userId": user_id}, "removeMember"),
        (CREATE_KEY, {"name": "ci"}, "createApiKey"),
        ("mutation { cancelSubscription { errors { code } } }", {}, "cancelSubscription"),
        ("mutation { openBillingPortal { errors { code } } }", {}, "openBillingPortal"),
        (
            "mutation($p: ID!) { changePlan(planId: $p) { errors { code } } }",
            {"p": "x"},
            "changePlan",
        ),
    ]:
        body = await api.gql(query, variables, **as_member)
        assert body["data"][field]["errors"][0]["code"] == "FORBIDDEN", field
    billing = await api.gql("{ billing { subscription { status } } }", **as_member)
    assert billing["data"] is None and billing["errors"]
    # but a member works with the tenant's data
    domains = await api.gql("{ domains { edges { node { id } } } }", **as_member)
    assert domains["data"]["domains"]["edges"] == []


async def test_an_admin_cannot_touch_owners_and_the_last_owner_stays(api: Api) -> None:
    owner = await sign_up(api)
    admin_token, admin_id = await _member_token(api, owner, "ADMIN")
    as_admin = {"token": admin_token, "tenant": owner.tenant}
    me = await api.gql("{ me { id } }", token=owner.token)
    owner_id = me["data"]["me"]["id"]
    demote = await api.gql(UPDATE_ROLE, {"userId": owner_id, "role": "MEMBER"}, **as_admin)
    assert demote["data"]["updateMemberRole"]["errors"][0]["code"] == "FORBIDDEN"
    make_owner = await api.gql(UPDATE_ROLE, {"userId": admin_id, "role": "OWNER"}, **as_admin)
    assert make_owner["data"]["updateMemberRole"]["errors"][0]["code"] == "FORBIDDEN"
    last = await api.gql(UPDATE_ROLE, {"userId": owner_id, "role": "ADMIN"}, token=owner.token)
    assert last["data"]["updateMemberRole"]["errors"][0]["code"] == "LAST_OWNER"
    leave = await api.gql(REMOVE, {"userId": owner_id}, token=owner.token)
    assert leave["data"]["removeMember"]["errors"][0]["code"] == "LAST_OWNER"


async def test_inviting_a_bad_address_is_a_user_error(api: Api) -> None:
    owner = await sign_up(api)
    bad = await api.gql(INVITE, {"email": "nope", "role": "MEMBER"}, token=owner.token)
    error = bad["data"]["inviteMember"]["errors"][0]
    assert (error["code"], error["field"]) == ("EMAIL_INVALID", "email")


async def test_an_api_key_is_shown_once_and_acts_for_its_tenant_only(api: Api) -> None:
    owner, other = await sign_up(api), await sign_up(api, "Other")
    created = await api.gql(CREATE_KEY, {"name": "zapier"}, token=owner.token)
    key = created["data"]["createApiKey"]["apiKey"]
    assert key["key"].startswith("pm_") and key["prefix"] in key["key"]
    tenant = await api.gql("{ tenant { id } tenants { id } }", token=key["key"])
    assert tenant["data"]["tenant"]["id"] == owner.tenant
    assert [t["id"] for t in tenant["data"]["tenants"]] == [owner.tenant]
    # the header cannot move a key to another tenant
    moved = await api.gql("{ tenant { id } }", token=key["key"], tenant=other.tenant)
    assert moved["data"]["tenant"]["id"] == owner.tenant
    # keys act as members: no key management with a key
    nested = await api.gql(CREATE_KEY, {"name": "again"}, token=key["key"])
    assert nested["data"]["createApiKey"]["errors"][0]["code"] == "FORBIDDEN"
    # a wrong secret with the right prefix is refused
    forged = key["key"][:-4] + "AAAA"
    assert (await api.gql("{ tenant { id } }", token=forged))["data"]["tenant"] is None
    empty = await api.gql(CREATE_KEY, {"name": "  "}, token=owner.token)
    assert empty["data"]["createApiKey"]["errors"][0] == {
        "code": "API_KEY_NAME_REQUIRED",
        "field": "name",
    }


async def test_the_last_owner_stays_though_they_own_another_workspace(api: Api) -> None:
    # A tenant session with a user bound also shows that user's memberships elsewhere: their
    # ownership of another workspace must not count as this one's second owner.
    owner = await sign_up(api)
    created = await api.gql(
        'mutation { createTenant(name: "Second") { tenant { id } errors { code } } }',
        token=owner.token,
    )
    assert created["data"]["createTenant"]["errors"] == []
    me = await api.gql("{ me { id } }", token=owner.token)
    owner_id = me["data"]["me"]["id"]
    as_owner = {"token": owner.token, "tenant": owner.tenant}
    demote = await api.gql(UPDATE_ROLE, {"userId": owner_id, "role": "ADMIN"}, **as_owner)
    assert demote["data"]["updateMemberRole"]["errors"][0]["code"] == "LAST_OWNER"
    leave = await api.gql(REMOVE, {"userId": owner_id}, **as_owner)
    assert leave["data"]["removeMember"]["errors"][0]["code"] == "LAST_OWNER"
