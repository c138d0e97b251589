"""The demo seed: plans and a complete demo tenant, idempotent."""

from __future__ import annotations

from sqlalchemy import func, select

from models.billing import Plan
from models.campaigns import Campaign, CampaignSequenceStep, Lead
from models.infrastructure import Domain, EmailAccount
from models.sessions import Database
from models.tenancy import Role, TenantUser, User
from services.demo import DEMO_EMAIL, DEMO_PASSWORD, PLANS, seed_demo
from services.passwords import verify_password


async def _counts(db: Database, tenant_id) -> dict[str, int]:
    async with db.tenant_session(tenant_id) as s:
        return {
            model.__tablename__: await s.scalar(select(func.count()).select_from(model))
            for model in (TenantUser, Domain, EmailAccount, Campaign, CampaignSequenceStep, Lead)
        }


async def test_seed_demo_loads_plans_and_a_working_demo_tenant_and_is_idempotent(
    db: Database,
) -> None:
    async with db.system_session() as s:
        first = await seed_demo(s, db.settings)
    before = await _counts(db, first.tenant_id)
    async with db.system_session() as s:
        second = await seed_demo(s, db.settings)
    after = await _counts(db, second.tenant_id)

    assert second.tenant_id == first.tenant_id
    assert before == after
    assert after == {
        "tenant_users": 1, "domains": 1, "email_accounts": 1, "campaigns": 1,
        "campaign_sequence_steps": 2, "leads": 5,
    }  # fmt: skip
    async with db.anonymous_session() as s:
        codes = set(await s.scalars(select(Plan.code)))
    assert {code for code, *_ in PLANS} <= codes and len(PLANS) >= 3
    async with db.tenant_session(first.tenant_id) as s:
        member = (await s.execute(select(User, TenantUser.role).join(TenantUser))).one()
    assert member.User.email == DEMO_EMAIL and member.role == Role.OWNER
    assert verify_password(member.User.password_hash, DEMO_PASSWORD)
