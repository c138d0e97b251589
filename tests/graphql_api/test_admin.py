"""The admin panel's entry point: staff list tenants across the platform, each read audited."""

from __future__ import annotations

from sqlalchemy import func, insert, select

from graphql_api.ids import parse_id
from models.sessions import Database
from models.tenancy import AuditLog, StaffMember, StaffRole
from tests.graphql_api.conftest import Api, sign_up

TENANTS = """query($after: String) { admin { tenants(first: 2, after: $after) {
  edges { node { id name members } } pageInfo { hasNextPage endCursor } } } }"""


async def test_staff_page_through_all_tenants_and_every_read_is_audited(
    api: Api, db: Database
) -> None:
    staff, customer = await sign_up(api, "Staff"), await sign_up(api, "Customer")
    staff_user = parse_id(staff.user)[1]
    async with db.system_session() as s:
        role = await s.scalar(
            insert(StaffRole).values(name=f"support-{staff_user.hex[:8]}").returning(StaffRole.id)
        )
        await s.execute(insert(StaffMember).values(user_id=staff_user, role_id=role))
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
