"""Accounts and access: sign-up, log-in, access tokens, API keys, tenants and their members.

Sign-up and tenant creation run through RLS like everything else (the new ids are bound before
the rows are written). Two look-ups must precede any binding and use the system path, named as
such: finding a user by email at log-in, and finding an API key by its prefix. Invitations, the
way into someone else's workspace, are services/invitations.py.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from email_validator import EmailNotValidError, validate_email
from redis.asyncio import Redis
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from models.billing import Plan, Subscription, SubscriptionStatus
from models.sessions import Database
from models.tenancy import ApiKey, Role, Tenant, TenantUser, User
from penguinmails.settings import Settings
from services import account_mail, ratelimit
from services.errors import DomainError
from services.passwords import hash_password, verify_password
from services.timezones import check_timezone

MIN_PASSWORD_LENGTH = 10
API_KEY_PREFIX = "pm_"
# Who may grant what: an ADMIN manages MEMBERs and ADMINs, only an OWNER makes or unmakes OWNERs.
MANAGERS = {Role.OWNER, Role.ADMIN}


@dataclass
class Principal:
    """Who is calling: a user (by access token) or an API key (tenant-scoped, acts as MEMBER)."""

    user_id: uuid.UUID | None
    api_key_tenant_id: uuid.UUID | None = None


# --- tokens ----------------------------------------------------------------------------------


def issue_access_token(settings: Settings, user_id: uuid.UUID) -> str:
    now = datetime.now(UTC)
    claims = {
        "sub": str(user_id),
        "typ": "access",
        "iat": now,
        "exp": now + timedelta(seconds=settings.access_token_ttl_seconds),
    }
    return jwt.encode(claims, settings.secret_key.get_secret_value(), algorithm="HS256")


def read_access_token(settings: Settings, token: str) -> uuid.UUID | None:
    try:
        claims = jwt.decode(
            token, settings.secret_key.get_secret_value(), algorithms=["HS256"],
            options={"require": ["exp", "sub"]},
        )  # fmt: skip
        if claims.get("typ") != "access":
            return None
        return uuid.UUID(claims["sub"])
    except (jwt.InvalidTokenError, ValueError):
        return None


def _sha256(value: str) -> str:
    # For API keys (32 random bytes: a fast hash is enough, nothing to brute-force) and for
    # Redis keys that must not embed what a client sent.
    return hashlib.sha256(value.encode()).hexdigest()


async def principal_for_api_key(db: Database, key: str) -> Principal | None:
    """System path: an API key is found by its public prefix before any tenant is known."""
    parts = key.split("_")
    if len(parts) != 3 or not key.startswith(API_KEY_PREFIX):
        return None
    async with db.system_session() as session:
        row = await session.scalar(
            select(ApiKey).where(ApiKey.prefix == parts[1], ApiKey.revoked_at.is_(None))
        )
        if row is None or not hmac.compare_digest(row.key_hash, _sha256(key)):
            return None
        await session.execute(
            update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=func.now())
        )
        return Principal(user_id=None, api_key_tenant_id=row.tenant_id)


async def create_api_key(
    session: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID | None, name: str
) -> tuple[ApiKey, str]:
    """Returns the stored row and the key itself, which is shown once and never stored."""
    name = name.strip()
    if not name:
        raise DomainError("API_KEY_NAME_REQUIRED", "give the key a name", "name")
    prefix = secrets.token_hex(6)
    key = f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32).replace('_', '-')}"
    row = ApiKey(
        tenant_id=tenant_id, name=name, prefix=prefix, key_hash=_sha256(key),
        created_by=user_id,
    )  # fmt: skip
    session.add(row)
    await session.flush()
    return row, key


# --- sign-up and log-in ----------------------------------------------------------------------


def normalize_email(email: str, field: str = "email") -> str:
    try:
        valid = validate_email(email.strip(), check_deliverability=False)
    except EmailNotValidError as e:
        raise DomainError("EMAIL_INVALID", f"enter a valid email address ({e})", field) from e
    return valid.normalized.lower()


def check_password(password: str) -> None:
    """The password rules (sign-up, password reset)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise DomainError(
            "PASSWORD_TOO_SHORT",
            f"use at least {MIN_PASSWORD_LENGTH} characters",
            "password",
        )


async def sign_up(db: Database, email: str, password: str, tenant_name: str) -> tuple[User, Tenant]:
    """A user, their first tenant (on the entry plan, trialing) and the OWNER membership; the
    mail that verifies their address is queued with them."""
    email = normalize_email(email)
    check_password(password)
    user_id, tenant_id = uuid.uuid4(), uuid.uuid4()
    password_hash = hash_password(password)
    try:
        async with db.tenant_session(tenant_id, user_id=user_id) as session:
            user = User(id=user_id, email=email, password_hash=password_hash)
            session.add(user)
            await session.flush()
            tenant = await _create_tenant(session, tenant_id, user_id, tenant_name)
            await account_mail.queue_verification(session, user_id)
    except IntegrityError as e:
        if "users_email" in str(e.orig):
            raise DomainError("EMAIL_TAKEN", "an account with this email exists", "email") from e
        raise
    return user, tenant


async def create_tenant(db: Database, user_id: uuid.UUID, name: str) -> Tenant:
    tenant_id = uuid.uuid4()
    async with db.tenant_session(tenant_id, user_id=user_id) as session:
        return await _create_tenant(session, tenant_id, user_id, name)


async def _create_tenant(
    session: AsyncSession, tenant_id: uuid.UUID, owner_id: uuid.UUID, name: str
) -> Tenant:
    name = _checked_tenant_name(name)
    entry_plan = await session.scalar(
        select(Plan).where(Plan.active, Plan.public).order_by(Plan.price_cents).limit(1)
    )
    tenant = Tenant(
        id=tenant_id, name=name, slug=_slug(name, tenant_id),
        plan_id=entry_plan.id if entry_plan else None,
    )  # fmt: skip
    session.add(tenant)
    await session.flush()
    session.add(TenantUser(tenant_id=tenant_id, user_id=owner_id, role=Role.OWNER))
    if entry_plan:
        session.add(
            Subscription(
                tenant_id=tenant_id, plan_id=entry_plan.id, status=SubscriptionStatus.TRIALING
            )
        )
    await session.flush()
    return tenant


async def update_tenant(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    *,
    name: str | None = None,
    timezone: str | None = None,
) -> Tenant:
    """Renames the workspace (its slug stays) and/or sets its IANA time zone, whose days are
    its analytics days. What is not given stays; nothing is written unless all of it is valid."""
    if name is not None:
        name = _checked_tenant_name(name)
    if timezone is not None:
        timezone = check_timezone(timezone, "timezone")
    tenant = await session.get(Tenant, tenant_id)
    if tenant is None:
        raise DomainError("NOT_FOUND", "no such workspace")
    if name is not None:
        tenant.name = name
    if timezone is not None:
        tenant.timezone = timezone
    await session.flush()
    return tenant


def _checked_tenant_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 200:
        raise DomainError("TENANT_NAME_INVALID", "name the workspace (1–200 characters)", "name")
    return name


def _slug(name: str, tenant_id: uuid.UUID) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "workspace"
    return f"{base}-{tenant_id.hex[:8]}"


async def log_in(
    db: Database, redis: Redis, settings: Settings, email: str, password: str, ip: str
) -> tuple[User, Tenant | None]:
    """Checks the password, counting failures per email and per IP in Redis."""
    email = email.strip().lower()
    # Keys name a digest, never the raw input: an address is as long as the client makes it.
    email_key, ip_key = f"login:fail:email:{_sha256(email)}", f"login:fail:ip:{_sha256(ip)}"
    if (
        await ratelimit.hits(redis, email_key) >= settings.login_attempts_per_email
        or await ratelimit.hits(redis, ip_key) >= settings.login_attempts_per_ip
    ):
        raise DomainError("RATE_LIMITED", "too many failed log-ins; try again later")
    async with db.system_session() as session:  # by email, before any user is bound
        user = await session.scalar(select(User).where(User.email == email))
    if user is None or not verify_password(user.password_hash, password):
        await ratelimit.record_hit(redis, email_key, settings.login_window_seconds)
        await ratelimit.record_hit(redis, ip_key, settings.login_window_seconds)
        raise DomainError("INVALID_CREDENTIALS", "wrong email or password")
    async with db.user_session(user.id) as session:
        await session.execute(
            update(User).where(User.id == user.id).values(last_login_at=func.now())
        )
        tenant = await first_tenant(session, user.id)
    return user, tenant


async def first_tenant(session: AsyncSession, user_id: uuid.UUID) -> Tenant | None:
    """The tenant a user joined first: where logging in (or a password reset) lands them."""
    return await session.scalar(
        select(Tenant)
        .join(TenantUser, TenantUser.tenant_id == Tenant.id)
        .where(TenantUser.user_id == user_id)
        .order_by(TenantUser.created_at)
        .limit(1)
    )


async def membership_role(db: Database, user_id: uuid.UUID, tenant_id: uuid.UUID) -> Role | None:
    async with db.user_session(user_id) as session:
        return await session.scalar(
            select(TenantUser.role).where(
                TenantUser.user_id == user_id, TenantUser.tenant_id == tenant_id
            )
        )


async def only_tenant(db: Database, user_id: uuid.UUID) -> uuid.UUID | None:
    """The user's tenant when they have exactly one (the X-Tenant-ID header may be omitted)."""
    async with db.user_session(user_id) as session:
        ids = list(
            await session.scalars(
                select(TenantUser.tenant_id).where(TenantUser.user_id == user_id).limit(2)
            )
        )
    return ids[0] if len(ids) == 1 else None


# --- members ---------------------------------------------------------------------------------


async def update_member_role(
    session: AsyncSession, tenant_id: uuid.UUID, actor_role: Role, user_id: uuid.UUID, role: Role
) -> TenantUser:
    member = await _member(session, tenant_id, user_id)
    check_grant(actor_role, role)
    check_grant(actor_role, member.role)
    if member.role == Role.OWNER and role != Role.OWNER:
        await _keep_an_owner(session, tenant_id)
    member.role = role
    await session.flush()
    return member


async def remove_member(
    session: AsyncSession, tenant_id: uuid.UUID, actor_role: Role, user_id: uuid.UUID
) -> TenantUser:
    member = await _member(session, tenant_id, user_id)
    check_grant(actor_role, member.role)
    if member.role == Role.OWNER:
        await _keep_an_owner(session, tenant_id)
    await session.delete(member)
    await session.flush()
    return member


async def _member(session: AsyncSession, tenant_id: uuid.UUID, user_id: uuid.UUID) -> TenantUser:
    member = await session.get(TenantUser, (tenant_id, user_id))
    if member is None:
        raise DomainError("NOT_FOUND", "no such member", "userId")
    return member


def check_grant(actor_role: Role, role: Role) -> None:
    if actor_role not in MANAGERS or (role == Role.OWNER and actor_role != Role.OWNER):
        raise DomainError("FORBIDDEN", f"a {actor_role.value} cannot manage {role.value}s")


async def _keep_an_owner(session: AsyncSession, tenant_id: uuid.UUID) -> None:
    # Lock the owners so two concurrent demotions cannot both pass the check.
    owners = (
        await session.execute(
            text("SELECT user_id FROM app.tenant_users WHERE role = 'OWNER' FOR UPDATE")
        )
    ).all()
    if len(owners) <= 1:
        raise DomainError("LAST_OWNER", "a workspace needs at least one owner", "userId")
