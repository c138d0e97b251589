"""The admin panel's entry point: staff list tenants across the platform, each read audited."""

from __future__ import annotations

import uuid

from sqlalchemy import func, insert, select

from graphql_api.ids import encode_id, parse_id
from models.infrastructure import Domain, Guard
from models.sessions import Database
from models.tenancy import AuditLog, StaffMember, StaffRole
from tests.graphql_api.conftest import Account, Api, sign_up

TENANTS = """query($after: String) { admin { tenants(first: 2, after: $after) {
  edges { node { id name members } } pageInfo { hasNextPage endCursor } } } }"""


async def staff_member(api: Api, db: Database) -> Account:
    """A signed-up user made platform staff."""
    staff = await sign_up(api, "Staff")
    staff_user = parse_id(staff.user)[1]
    async with db.system_session() as s:
        role = await s.scalar(
            insert(StaffRole).values(name=f"support-{staff_user.hex[:8]}").returning(StaffRole.id)
        )
        await s.execute(insert(StaffMember).values(user_id=staff_user, role_id=role))
    return staff


async def test_staff_page_through_all_tenants_and_every_read_is_audited(
    api: Api, db: Database
) -> None:
    staff, customer = await staff_member(api, db), await sign_up(api, "Customer")
    staff_user = parse_id(staff.user)[1]
    seen, after, reads = set(), None, 0
    while True:
        body = await api.gql(TENANTS, {"after": after}, token=staff.token)
        page = body["data"]["admin"]["tenants"]
        seen |= {e["node"]["id"] for e in page["edges"]}
        reads += 1
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert {staff.tenant, customer.tenant} <= seen  # across tenants, not only the staff's own
    async with db.system_session() as s:
        audited = await s.scalar(
            select(func.count())
            .select_from(AuditLog)
            .where(AuditLog.actor_user_id == staff_user, AuditLog.action == "admin.tenants.list")
        )
    assert audited == reads


async def test_a_customer_cannot_use_the_admin_entry_point(api: Api) -> None:
    customer = await sign_up(api, "Customer")
    body = await api.gql(TENANTS, token=customer.token)
    assert body["data"] is None and "staff" in body["errors"][0]["message"]


LIFT = "mutation($id: ID!) { liftSendingGuard(id: $id) { ok errors { field code } } }"


async def test_staff_lift_a_paused_domains_guard_and_the_lift_is_audited(
    api: Api, db: Database
) -> None:
    """services/guards.py: the domain sends again (what its window counts after a lift: see
    tests/services/test_guards.py)."""
    from tests.factories import create_row, table

    staff, customer = await staff_member(api, db), await sign_up(api, "Customer")
    tenant = parse_id(customer.tenant)[1]
    async with db.system_session() as s:
        row = await create_row(s, table("app.domains"), tenant)
        await s.execute(
            Domain.__table__.update()
            .where(Domain.id == row["id"])
            .values(guard=Guard.PAUSED, guard_reason="complaints 0.40%")
        )
    domain_id = encode_id("Domain", row["id"])

    refused = await api.gql(LIFT, {"id": domain_id}, token=customer.token)
    lifted = await api.gql(LIFT, {"id": domain_id}, token=staff.token)
    unknown = await api.gql(LIFT, {"id": encode_id("Domain", uuid.uuid4())}, token=staff.token)

    assert refused["data"] is None and "staff" in refused["errors"][0]["message"]
    assert lifted["data"]["liftSendingGuard"] == {"ok": True, "errors": []}
    assert unknown["data"]["liftSendingGuard"]["errors"] == [{"field": "id", "code": "NOT_FOUND"}]
    async with db.system_session() as s:
        domain = await s.get(Domain, row["id"])
        audited = await s.scalar(
            select(func.count())
            .select_from(AuditLog)
            .where(AuditLog.action == "guard.lift", AuditLog.details["subject"].astext == domain_id)
        )
    assert (domain.guard, domain.guard_reason, audited) == (Guard.NONE, None, 1)
    assert domain.guard_lifted_at is not None
