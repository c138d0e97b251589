"""Invitations by consent: inviting makes nobody a member and tells nothing about the address;
the invited user sees the invitation and accepts or declines it; admins list and revoke them."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from graphql_api.ids import parse_id
from models.sessions import Database
from tests.factories import mark_verified
from tests.graphql_api.conftest import SIGN_UP, Account, Api, sign_up
from tests.graphql_api.flows import ACCEPT, INVITE, invite, join, put_on_plan

INVITATION = "id email role tenantName expiresAt"
MY_INVITATIONS = f"{{ me {{ invitations {{ {INVITATION} }} }} }}"
TENANT_INVITATIONS = f"{{ tenant {{ invitations {{ {INVITATION} }} }} }}"
DECLINE = (
    """mutation($id: ID!) { declineInvitation(id: $id) { ok errors { code field message } } }"""
)
REVOKE = """mutation($id: ID!) { revokeInvitation(id: $id) {
  invitation { id email role } errors { code field message } } }"""
INVITE_ALL = """mutation($email: String!, $role: Role!) { inviteMember(email: $email, role: $role) {
  member { role joinedAt user { id email createdAt } }
  invitation { __typename id email role tenantName expiresAt }
  errors { code field message } } }"""
MEMBERS = "{ tenant { members { role user { email } } } }"


async def _mine(api: Api, account: Account) -> list[dict]:
    body = await api.gql(MY_INVITATIONS, token=account.token)
    return body["data"]["me"]["invitations"]


async def _listed(api: Api, account: Account) -> list[dict]:
    body = await api.gql(TENANT_INVITATIONS, token=account.token, tenant=account.tenant)
    assert "errors" not in body, body
    return body["data"]["tenant"]["invitations"]


async def _tenants(api: Api, account: Account) -> set[str]:
    body = await api.gql("{ tenants { id } }", token=account.token)
    return {t["id"] for t in body["data"]["tenants"]}


async def _answer(api: Api, account: Account, mutation: str, invitation_id: str) -> dict:
    query, name = (
        (ACCEPT, "acceptInvitation") if mutation == "accept" else (DECLINE, "declineInvitation")
    )
    body = await api.gql(query, {"id": invitation_id}, token=account.token)
    return body["data"][name]


async def _revoke(api: Api, account: Account, invitation_id: str) -> dict:
    body = await api.gql(REVOKE, {"id": invitation_id}, token=account.token, tenant=account.tenant)
    return body["data"]["revokeInvitation"]


async def _expire(db: Database, invitation_id: str) -> None:
    async with db.system_session() as s:
        await s.execute(
            text(
                "UPDATE app.invitations SET expires_at = now() - interval '1 hour' WHERE id = :id"
            ),
            {"id": parse_id(invitation_id)[1]},
        )


def _codes(payload: dict) -> list[str]:
    return [e["code"] for e in payload["errors"]]


async def test_an_invitation_makes_no_member_until_the_invited_user_accepts(api: Api) -> None:
    owner, invitee = await sign_up(api, "Inviting Co"), await sign_up(api, "Invitee")
    invitation = await invite(api, owner, invitee.email.upper(), "ADMIN")
    assert (invitation["email"], invitation["role"], invitation["tenantName"]) == (
        invitee.email, "ADMIN", "Inviting Co",
    )  # fmt: skip
    lasts = datetime.fromisoformat(invitation["expiresAt"]) - datetime.now(UTC)
    assert timedelta(days=6, hours=23) < lasts <= timedelta(days=7)

    # Nothing changed for the invitee: one workspace, the inviting one refuses them.
    assert await _tenants(api, invitee) == {invitee.tenant}
    refused = await api.gql("{ tenant { id } }", token=invitee.token, tenant=owner.tenant)
    assert refused["data"]["tenant"] is None and refused["errors"]
    members = await api.gql(MEMBERS, token=owner.token)
    assert [m["user"]["email"] for m in members["data"]["tenant"]["members"]] == [owner.email]
    # Their header-less requests are served as before.
    own = await api.gql("{ tenant { id } }", token=invitee.token)
    assert own["data"]["tenant"]["id"] == invitee.tenant

    assert await _mine(api, invitee) == [invitation]
    assert await _listed(api, owner) == [invitation]

    accepted = await _answer(api, invitee, "accept", invitation["id"])
    assert accepted == {"tenant": {"id": owner.tenant, "name": "Inviting Co"}, "errors": []}
    assert await _tenants(api, invitee) == {invitee.tenant, owner.tenant}
    joined = await api.gql(MEMBERS, token=invitee.token, tenant=owner.tenant)
    roles = {m["user"]["email"]: m["role"] for m in joined["data"]["tenant"]["members"]}
    assert roles == {owner.email: "OWNER", invitee.email: "ADMIN"}
    assert await _mine(api, invitee) == []
    assert await _listed(api, owner) == []


async def test_inviting_answers_the_same_for_an_account_an_unknown_address_and_a_member(
    api: Api, db: Database
) -> None:
    owner, known, member = await sign_up(api), await sign_up(api, "Known"), await sign_up(api)
    await put_on_plan(db, owner, "growth")
    await join(api, owner, member)
    unknown = f"nobody-{uuid.uuid4().hex[:10]}@example.com"
    answers = []
    for email in (known.email, unknown, member.email):
        body = await api.gql(INVITE_ALL, {"email": email, "role": "MEMBER"}, token=owner.token)
        assert "errors" not in body, body
        answers.append(body["data"]["inviteMember"])

    def shape(answer: dict) -> dict:
        invitation = answer["invitation"]
        return {**answer, "invitation": {**invitation, "id": "…", "email": "…", "expiresAt": "…"}}

    assert shape(answers[0]) == shape(answers[1]) == shape(answers[2])
    assert answers[0]["member"] is None and answers[0]["errors"] == []
    assert set(answers[0]["invitation"]) == {
        "__typename", "id", "email", "role", "tenantName", "expiresAt",
    }  # fmt: skip
    said = json.dumps(answers)
    assert known.user not in said and member.user not in said and "createdAt" not in said
    # The member stays a member, with their role; the account holder is not one.
    assert await _tenants(api, known) == {known.tenant}
    members = await api.gql(MEMBERS, token=owner.token)
    assert sorted(m["role"] for m in members["data"]["tenant"]["members"]) == ["MEMBER", "OWNER"]


async def test_a_member_accepting_an_invitation_keeps_their_role_and_gets_the_tenant(
    api: Api, db: Database
) -> None:
    owner, member = await sign_up(api, "Kept"), await sign_up(api)
    await put_on_plan(db, owner, "growth")
    await join(api, owner, member, "MEMBER")
    invitation = await invite(api, owner, member.email, "ADMIN")
    accepted = await _answer(api, member, "accept", invitation["id"])
    assert accepted == {"tenant": {"id": owner.tenant, "name": "Kept"}, "errors": []}
    members = await api.gql(MEMBERS, token=owner.token)
    roles = {m["user"]["email"]: m["role"] for m in members["data"]["tenant"]["members"]}
    assert roles == {owner.email: "OWNER", member.email: "MEMBER"}
    assert await _listed(api, owner) == []


async def test_inviting_again_refreshes_the_role_and_expiry_of_the_pending_invitation(
    api: Api, db: Database
) -> None:
    owner = await sign_up(api)
    email = f"again-{uuid.uuid4().hex[:10]}@example.com"
    first = await invite(api, owner, email, "MEMBER")
    await _expire(db, first["id"])
    again = await invite(api, owner, email, "ADMIN")
    assert (again["id"], again["role"]) == (first["id"], "ADMIN")
    assert datetime.fromisoformat(again["expiresAt"]) > datetime.now(UTC) + timedelta(days=6)
    assert await _listed(api, owner) == [again]


async def test_an_address_without_an_account_finds_its_invitation_after_signing_up(
    api: Api,
) -> None:
    owner = await sign_up(api, "Early")
    email = f"later-{uuid.uuid4().hex[:10]}@example.com"
    invitation = await invite(api, owner, email)
    body = await api.gql(
        SIGN_UP, {"email": email, "password": "correct horse battery", "tenantName": "Later"}
    )
    signed_up = body["data"]["signUp"]
    newcomer = Account(
        signed_up["token"], signed_up["tenant"]["id"], signed_up["user"]["id"], email
    )
    assert await _mine(api, newcomer) == [invitation]
    await mark_verified(api.app.state.db, email)  # followed the link of its sign-up mail
    accepted = await _answer(api, newcomer, "accept", invitation["id"])
    assert accepted["tenant"]["id"] == owner.tenant
    assert await _tenants(api, newcomer) == {newcomer.tenant, owner.tenant}


async def test_a_declined_invitation_makes_no_member_and_cannot_be_answered_again(
    api: Api,
) -> None:
    owner, invitee = await sign_up(api), await sign_up(api)
    invitation = await invite(api, owner, invitee.email)
    assert await _answer(api, invitee, "decline", invitation["id"]) == {"ok": True, "errors": []}
    assert await _mine(api, invitee) == [] and await _listed(api, owner) == []
    for mutation in ("accept", "decline"):
        late = await _answer(api, invitee, mutation, invitation["id"])
        assert _codes(late) == ["INVITATION_NOT_PENDING"], late
        assert late["errors"][0]["message"] == "this invitation was already declined"
    assert await _tenants(api, invitee) == {invitee.tenant}


async def test_an_expired_invitation_is_not_listed_and_cannot_be_answered_or_revoked(
    api: Api, db: Database
) -> None:
    owner, invitee = await sign_up(api), await sign_up(api)
    invitation = await invite(api, owner, invitee.email)
    await _expire(db, invitation["id"])
    assert await _mine(api, invitee) == [] and await _listed(api, owner) == []
    for mutation in ("accept", "decline"):
        late = await _answer(api, invitee, mutation, invitation["id"])
        assert _codes(late) == ["INVITATION_EXPIRED"], late
    assert _codes(await _revoke(api, owner, invitation["id"])) == ["INVITATION_EXPIRED"]
    assert await _tenants(api, invitee) == {invitee.tenant}


async def test_a_revoked_invitation_cannot_be_accepted(api: Api) -> None:
    owner, invitee = await sign_up(api), await sign_up(api)
    invitation = await invite(api, owner, invitee.email, "ADMIN")
    revoked = await _revoke(api, owner, invitation["id"])
    assert revoked == {
        "invitation": {"id": invitation["id"], "email": invitee.email, "role": "ADMIN"},
        "errors": [],
    }
    assert _codes(await _revoke(api, owner, invitation["id"])) == ["INVITATION_NOT_PENDING"]
    refused = await _answer(api, invitee, "accept", invitation["id"])
    assert refused["tenant"] is None and _codes(refused) == ["INVITATION_NOT_PENDING"]
    assert refused["errors"][0]["message"] == "this invitation was already revoked"
    assert await _mine(api, invitee) == [] and await _listed(api, owner) == []
    assert await _tenants(api, invitee) == {invitee.tenant}


async def test_someone_elses_invitation_is_answered_as_if_it_did_not_exist(api: Api) -> None:
    owner, invitee, stranger = await sign_up(api), await sign_up(api), await sign_up(api)
    invitation = await invite(api, owner, invitee.email)
    for mutation in ("accept", "decline"):
        theirs = await _answer(api, stranger, mutation, invitation["id"])
        nonexistent = await _answer(api, stranger, mutation, owner.tenant)  # not an invitation id
        assert theirs == nonexistent
        assert _codes(theirs) == ["NOT_FOUND"], theirs
    assert await _mine(api, stranger) == []
    assert await _tenants(api, stranger) == {stranger.tenant}
    # still the invitee's to answer
    assert (await _answer(api, invitee, "accept", invitation["id"]))["errors"] == []


async def test_only_owners_and_admins_invite_revoke_and_list_invitations(
    api: Api, db: Database
) -> None:
    owner, admin, member = await sign_up(api), await sign_up(api), await sign_up(api)
    await put_on_plan(db, owner, "growth")
    await join(api, owner, admin, "ADMIN")
    await join(api, owner, member, "MEMBER")
    pending = await invite(api, owner, f"p-{uuid.uuid4().hex[:10]}@example.com", "MEMBER")
    as_member = {"token": member.token, "tenant": owner.tenant}
    invited = await api.gql(INVITE, {"email": "x@example.com", "role": "MEMBER"}, **as_member)
    assert _codes(invited["data"]["inviteMember"]) == ["FORBIDDEN"]
    revoked = await api.gql(REVOKE, {"id": pending["id"]}, **as_member)
    assert _codes(revoked["data"]["revokeInvitation"]) == ["FORBIDDEN"]
    listed = await api.gql(TENANT_INVITATIONS, **as_member)
    assert listed["data"]["tenant"] is None
    assert listed["errors"][0]["message"] == "only an owner or admin of this workspace may see this"
    members = await api.gql(MEMBERS, **as_member)  # the members list stays theirs to read
    assert len(members["data"]["tenant"]["members"]) == 3

    # An admin manages invitations, but not an owner's.
    as_admin = {"token": admin.token, "tenant": owner.tenant}
    owner_email = f"o-{uuid.uuid4().hex[:10]}@example.com"
    made_owner = await api.gql(INVITE, {"email": owner_email, "role": "OWNER"}, **as_admin)
    assert _codes(made_owner["data"]["inviteMember"]) == ["FORBIDDEN"]
    offer = await invite(api, owner, owner_email, "OWNER")
    for query, variables, name in [
        (REVOKE, {"id": offer["id"]}, "revokeInvitation"),
        (INVITE, {"email": owner_email, "role": "MEMBER"}, "inviteMember"),
    ]:
        body = await api.gql(query, variables, **as_admin)
        assert _codes(body["data"][name]) == ["FORBIDDEN"], name
    seen = await api.gql(TENANT_INVITATIONS, **as_admin)
    assert [i["id"] for i in seen["data"]["tenant"]["invitations"]] == [pending["id"], offer["id"]]
    assert (await api.gql(REVOKE, {"id": pending["id"]}, **as_admin))["data"]["revokeInvitation"][
        "errors"
    ] == []
    assert [i["role"] for i in await _listed(api, owner)] == ["OWNER"]


async def test_an_admin_lists_the_invitations_of_each_workspace_they_manage(
    api: Api, db: Database
) -> None:
    owner, admin = await sign_up(api, "Theirs"), await sign_up(api, "Mine")
    await put_on_plan(db, owner, "growth")
    await join(api, owner, admin, "ADMIN")
    theirs = await invite(api, owner, f"t-{uuid.uuid4().hex[:10]}@example.com")
    mine = await invite(api, admin, f"m-{uuid.uuid4().hex[:10]}@example.com")
    body = await api.gql(
        "{ tenants { name invitations { id tenantName } } }", token=admin.token, tenant=admin.tenant
    )
    assert "errors" not in body, body
    assert {t["name"]: t["invitations"] for t in body["data"]["tenants"]} == {
        "Theirs": [{"id": theirs["id"], "tenantName": "Theirs"}],
        "Mine": [{"id": mine["id"], "tenantName": "Mine"}],
    }


async def test_an_api_key_cannot_answer_invitations_or_list_them(api: Api) -> None:
    owner = await sign_up(api)
    invitation = await invite(api, owner, f"k-{uuid.uuid4().hex[:10]}@example.com")
    created = await api.gql(
        'mutation { createApiKey(name: "ci") { apiKey { key } } }', token=owner.token
    )
    key = created["data"]["createApiKey"]["apiKey"]["key"]
    for query, name in [(ACCEPT, "acceptInvitation"), (DECLINE, "declineInvitation")]:
        body = await api.gql(query, {"id": invitation["id"]}, token=key)
        assert _codes(body["data"][name]) == ["FORBIDDEN"], name
    assert (await api.gql(MY_INVITATIONS, token=key))["data"]["me"] is None
    assert (await api.gql(TENANT_INVITATIONS, token=key))["data"]["tenant"] is None
    assert [i["id"] for i in await _listed(api, owner)] == [invitation["id"]]


async def test_a_user_who_accepted_names_a_workspace_with_the_header(api: Api) -> None:
    owner, invitee = await sign_up(api, "First"), await sign_up(api, "Second")
    await join(api, owner, invitee)
    for tenant in (owner.tenant, invitee.tenant):
        named = await api.gql("{ tenant { id } }", token=invitee.token, tenant=tenant)
        assert named["data"]["tenant"]["id"] == tenant
    unnamed = await api.gql("{ tenant { id } }", token=invitee.token)
    assert unnamed["data"]["tenant"] is None
    assert "X-Tenant-ID" in unnamed["errors"][0]["message"]


async def test_another_tenants_admin_cannot_see_or_revoke_its_invitations(
    api: Api, db: Database
) -> None:
    a, b = await sign_up(api, "Alpha"), await sign_up(api, "Bravo")
    await put_on_plan(db, a, "growth")
    a_invitation = await invite(api, a, f"a-{uuid.uuid4().hex[:10]}@example.com")
    to_b = await invite(api, a, b.email)  # b's owner is invited to A: it is theirs to answer only
    for invitation in (a_invitation, to_b):
        assert _codes(await _revoke(api, b, invitation["id"])) == ["NOT_FOUND"]
    assert await _listed(api, b) == []
    assert await _mine(api, b) == [to_b]
    assert await _listed(api, a) == [a_invitation, to_b]
    node = await api.gql(
        "query($id: ID!) { node(id: $id) { id } }", {"id": to_b["id"]}, token=b.token
    )
    assert node["data"]["node"] is None


async def test_a_users_invitations_are_shown_to_that_user_only(api: Api) -> None:
    owner, member, elsewhere = await sign_up(api), await sign_up(api), await sign_up(api, "Else")
    await join(api, owner, member)
    pending = await invite(api, elsewhere, member.email)
    query = "{ tenant { members { user { email invitations { id } } } } }"
    seen = {}
    for viewer in (owner, member):
        body = await api.gql(query, token=viewer.token, tenant=owner.tenant)
        seen[viewer.email] = {
            m["user"]["email"]: m["user"]["invitations"] for m in body["data"]["tenant"]["members"]
        }
    assert seen[owner.email] == {owner.email: [], member.email: []}
    assert seen[member.email] == {owner.email: [], member.email: [{"id": pending["id"]}]}


async def test_a_pending_invitation_holds_a_seat_until_it_is_revoked(api: Api) -> None:
    owner = await sign_up(api)  # the entry plan: two seats
    first, second = (f"{n}-{uuid.uuid4().hex[:10]}@example.com" for n in ("first", "second"))
    held = await invite(api, owner, first)
    full = await api.gql(INVITE, {"email": second, "role": "MEMBER"}, token=owner.token)
    assert _codes(full["data"]["inviteMember"]) == ["PLAN_LIMIT_SEATS"]
    await invite(api, owner, first, "ADMIN")  # refreshing takes no other seat
    assert (await _revoke(api, owner, held["id"]))["errors"] == []
    await invite(api, owner, second)
