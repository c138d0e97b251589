"""The roles the processes connect as cannot get around row-level security."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from models.sessions import Database
from penguinmails.settings import Settings
from tests.factories import create_tenant


async def test_the_app_role_is_no_superuser_cannot_bypass_rls_and_owns_nothing(
    db: Database, settings: Settings
) -> None:
    async with db.anonymous_session() as s:
        role = (
            await s.execute(
                text(
                    "SELECT rolname, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb "
                    "FROM pg_roles WHERE rolname = current_user"
                )
            )
        ).one()
        owned = await s.scalar(
            text(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE pg_get_userbyid(c.relowner) = current_user "
                "AND n.nspname IN ('app', 'content', 'queue', 'analytics')"
            )
        )
    assert tuple(role) == (settings.app_db_role, False, False, False, False)
    assert owned == 0


async def test_the_app_role_cannot_switch_rls_off(db: Database) -> None:
    with pytest.raises(DBAPIError, match="must be owner"):
        async with db.anonymous_session() as s:
            await s.execute(text("ALTER TABLE app.campaigns DISABLE ROW LEVEL SECURITY"))
    with pytest.raises(DBAPIError, match="row-level security"):
        async with db.anonymous_session() as s:
            await s.execute(text("SET LOCAL row_security = off"))
            await s.execute(text("SELECT count(*) FROM app.campaigns"))


@pytest.mark.parametrize(
    "table",
    ["analytics.billing_analytics", "analytics.queue_health", "analytics.pipeline_watermarks"],
)
async def test_platform_figures_are_read_by_the_system_role_never_the_app_role(
    db: Database, table: str
) -> None:
    async with db.system_session() as s:
        await s.execute(text(f"SELECT count(*) FROM {table}"))
    with pytest.raises(DBAPIError, match="permission denied"):
        async with db.anonymous_session() as s:
            await s.execute(text(f"SELECT count(*) FROM {table}"))


async def test_the_system_role_is_no_superuser_and_owns_nothing(db: Database) -> None:
    async with db.system_session() as s:
        role = (
            await s.execute(
                text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            )
        ).one()
        owned = await s.scalar(
            # Temporary tables (a pipeline's staging, on a connection it keeps) end with it.
            text(
                "SELECT count(*) FROM pg_class WHERE pg_get_userbyid(relowner) = current_user"
                " AND relpersistence <> 't'"
            )
        )
    assert tuple(role) == (False, True)
    assert owned == 0


async def test_staff_reads_across_tenants_only_with_an_audit_row(db: Database) -> None:
    import uuid

    from sqlalchemy import func, insert, select

    from models.tenancy import AuditLog, StaffMember, StaffRole, Tenant, User

    async with db.system_session() as s:
        user_id, outsider = uuid.uuid4(), uuid.uuid4()
        await s.execute(
            insert(User).values(
                [
                    {"id": user_id, "email": f"s{user_id.hex[:8]}@pm.test", "password_hash": "x"},
                    {"id": outsider, "email": f"o{outsider.hex[:8]}@pm.test", "password_hash": "x"},
                ]
            )
        )
        role_id = await s.scalar(
            insert(StaffRole).values(name=f"support-{user_id.hex[:6]}").returning(StaffRole.id)
        )
        await s.execute(insert(StaffMember).values(user_id=user_id, role_id=role_id))
        await create_tenant(s, "one")
        await create_tenant(s, "two")

    async with db.staff_session(user_id, "admin.tenants.list") as s:
        tenants = await s.scalar(select(func.count()).select_from(Tenant))
    async with db.system_session() as s:
        audited = await s.scalar(
            select(func.count())
            .select_from(AuditLog)
            .where(AuditLog.actor_user_id == user_id, AuditLog.action == "admin.tenants.list")
        )
    assert tenants >= 2 and audited == 1

    with pytest.raises(PermissionError):
        async with db.staff_session(outsider, "admin.tenants.list"):
            pass
