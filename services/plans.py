"""A tenant's plan and the limits it puts on domains, email accounts, sending IPs and seats.

A tenant without a plan may not add any of them (NO_PLAN): limits are what the tenant pays for,
so there is nothing to fall back on; a free or trial tier is a plan like any other.
"""

from __future__ import annotations

import uuid
from typing import Literal

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from models.billing import Plan
from models.tenancy import Tenant
from services.errors import DomainError

Resource = Literal["domains", "accounts", "ips", "seats"]

# resource -> (the plan's column, error code, what the message calls it)
_LIMITS: dict[Resource, tuple[str, str, str]] = {
    "domains": ("max_domains", "PLAN_LIMIT_DOMAINS", "domains"),
    "accounts": ("max_email_accounts", "PLAN_LIMIT_ACCOUNTS", "email accounts"),
    "ips": ("max_ips", "PLAN_LIMIT_IPS", "sending IPs"),
    "seats": ("max_seats", "PLAN_LIMIT_SEATS", "members"),
}

_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


async def tenant_plan(session: AsyncSession, tenant_id: uuid.UUID) -> Plan | None:
    """The tenant's plan, retired (inactive) plans included: a tenant keeps the plan it is on."""
    return await session.scalar(
        select(Plan).join(Tenant, Tenant.plan_id == Plan.id).where(Tenant.id == tenant_id)
    )


async def lock_usage(session: AsyncSession, tenant_id: uuid.UUID, resource: Resource) -> None:
    """Serialise adding `resource` within the tenant until the transaction ends, so two requests
    cannot both count one below the limit (nor both find a name free) and both add."""
    await session.execute(_LOCK, {"key": f"plan_usage:{resource}:{tenant_id}"})


async def check_limit(
    session: AsyncSession, tenant_id: uuid.UUID, resource: Resource, current_count: int
) -> None:
    """Refuse one more `resource` when the tenant already has `current_count` of them. Count
    after `lock_usage`, in the same transaction."""
    column, code, noun = _LIMITS[resource]
    plan = await tenant_plan(session, tenant_id)
    if plan is None:
        raise DomainError("NO_PLAN", f"Choose a plan before adding {noun}.")
    limit: int = getattr(plan, column)
    if current_count >= limit:
        allowance = f"allows {limit}" if limit else "includes no"
        raise DomainError(
            code, f"The {plan.name} plan {allowance} {noun}; upgrade the plan to add more."
        )
