"""Tenants, users, their memberships and invitations, platform staff, API keys and the audit log
(OLTP tier)."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import INET, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, TenantOwned, Timestamps, UUIDPrimaryKey, enum_column


class TenantStatus(enum.StrEnum):
    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"  # sending stopped (billing); data kept
    CLOSED = "CLOSED"


class Role(enum.StrEnum):
    OWNER = "OWNER"
    ADMIN = "ADMIN"
    MEMBER = "MEMBER"


class Tenant(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "tenants"
    __table_args__ = (
        CheckConstraint("slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'", name="slug_format"),
        {"schema": "app"},
    )

    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    status: Mapped[TenantStatus] = mapped_column(
        enum_column(TenantStatus, "tenant_status"), default=TenantStatus.ACTIVE,
        server_default=TenantStatus.ACTIVE.value,
    )  # fmt: skip
    plan_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("app.plans.id", ondelete="SET NULL")
    )
    stripe_customer_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    sending_suspended_reason: Mapped[str | None] = mapped_column(Text)
    # IANA zone; the tenant's analytics days are this zone's days.
    timezone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")


class User(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("email = lower(email)", name="email_lowercase"),
        {"schema": "app"},
    )

    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    full_name: Mapped[str | None] = mapped_column(String(200))
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When the user followed the link of a verification mail (services/account_mail.py).
    email_verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TokenPurpose(enum.StrEnum):
    VERIFY_EMAIL = "VERIFY_EMAIL"
    RESET_PASSWORD = "RESET_PASSWORD"


class UserToken(UUIDPrimaryKey, Base):
    """A single-use secret mailed to a user (verify the address, reset the password): only its
    SHA-256 is stored. Users are global, so are their tokens: no tenant, and no access for the
    application role (the system role reads and spends them, sql/grants.sql)."""

    __tablename__ = "user_tokens"
    __table_args__ = (
        Index("ix_user_tokens_user_id_purpose", "user_id", "purpose"),
        {"schema": "app"},
    )

    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("app.users.id", ondelete="CASCADE")
    )
    purpose: Mapped[TokenPurpose] = mapped_column(enum_column(TokenPurpose, "token_purpose"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class TenantUser(TenantOwned, Timestamps, Base):
    """A user's membership of a tenant, with a role."""

    __tablename__ = "tenant_users"
    __table_args__ = (
        Index("ix_tenant_users_user_id", "user_id"),
        {"schema": "app"},
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("app.tenants.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("app.users.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[Role] = mapped_column(enum_column(Role, "role"))


class InvitationStatus(enum.StrEnum):
    PENDING = "PENDING"
    ACCEPTED = "ACCEPTED"
    DECLINED = "DECLINED"
    REVOKED = "REVOKED"


class Invitation(UUIDPrimaryKey, TenantOwned, Timestamps, Base):
    """A role in the tenant offered to an email address: a membership only once the user with
    that address accepts it. Besides its tenant, the addressee reads it (sql/invitations.sql)."""

    __tablename__ = "invitations"
    __table_args__ = (
        CheckConstraint("email = lower(email)", name="email_lowercase"),
        # One pending invitation per tenant and address: inviting again refreshes it.
        Index(
            "uq_invitations_tenant_id_email_pending",
            "tenant_id",
            "email",
            unique=True,
            postgresql_where=text("status = 'PENDING'"),
        ),
        Index("ix_invitations_email", "email"),  # the addressee's policy and list
        {"schema": "app"},
    )

    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[Role] = mapped_column(enum_column(Role, "role"))
    status: Mapped[InvitationStatus] = mapped_column(
        enum_column(InvitationStatus, "invitation_status"), default=InvitationStatus.PENDING,
        server_default=InvitationStatus.PENDING.value,
    )  # fmt: skip
    # Who sent it, for the record (not shown); the answer's time is updated_at: a row is not
    # written again once it leaves PENDING.
    invited_by: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("app.users.id", ondelete="SET NULL")
    )
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StaffRole(UUIDPrimaryKey, Timestamps, Base):
    """A platform staff role (support, billing, superadmin) and what it may do."""

    __tablename__ = "staff_roles"
    __table_args__ = {"schema": "app"}

    name: Mapped[str] = mapped_column(String(64), unique=True)
    permissions: Mapped[list[str]] = mapped_column(JSONB, default=list, server_default="[]")


class StaffMember(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "staff_members"
    __table_args__ = {"schema": "app"}

    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("app.users.id", ondelete="CASCADE"), unique=True
    )
    role_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("app.staff_roles.id", ondelete="RESTRICT")
    )
    active: Mapped[bool] = mapped_column(default=True, server_default="true")


class ApiKey(UUIDPrimaryKey, TenantOwned, Timestamps, Base):
    """A tenant-scoped bearer key (`pm_…`), stored as a hash; the key itself is shown once."""

    __tablename__ = "api_keys"
    __table_args__ = (
        Index("ix_api_keys_tenant_id_created_at", "tenant_id", "created_at"),
        {"schema": "app"},
    )

    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)  # looked up before the hash check
    key_hash: Mapped[str] = mapped_column(Text)
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("app.users.id", ondelete="SET NULL")
    )
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuditLog(UUIDPrimaryKey, Base):
    """Who did what, on whose data. Cross-tenant staff reads have tenant_id NULL or the tenant read."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_tenant_id_at", "tenant_id", "at"),
        Index("ix_audit_log_actor_user_id_at", "actor_user_id", "at"),
        {"schema": "app"},
    )

    tenant_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("app.tenants.id", ondelete="CASCADE")
    )
    actor_user_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("app.users.id", ondelete="SET NULL")
    )
    actor_kind: Mapped[str] = mapped_column(String(16), default="user")  # user, staff, system
    action: Mapped[str] = mapped_column(String(100))
    subject: Mapped[str | None] = mapped_column(String(200))
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    ip: Mapped[str | None] = mapped_column(INET)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
