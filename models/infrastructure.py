"""Sending infrastructure a tenant owns: VPS instances, sending IPs, domains, email accounts and
their warm-up state (OLTP)."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import INET, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, TenantOwned, Timestamps, UUIDPrimaryKey, enum_column


class VpsStatus(enum.StrEnum):
    REQUESTED = "REQUESTED"
    PROVISIONING = "PROVISIONING"
    CONFIGURING_SMTP = "CONFIGURING_SMTP"
    CONFIGURING_DNS = "CONFIGURING_DNS"
    WARMING_UP = "WARMING_UP"
    ACTIVE = "ACTIVE"
    FAILED = "FAILED"
    SUSPENDED = "SUSPENDED"
    DECOMMISSIONED = "DECOMMISSIONED"


class IpStatus(enum.StrEnum):
    PENDING = "PENDING"
    WARMING_UP = "WARMING_UP"
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    BLACKLISTED = "BLACKLISTED"
    RELEASED = "RELEASED"


class DomainStatus(enum.StrEnum):
    PENDING = "PENDING"
    VERIFIED = "VERIFIED"
    FAILED = "FAILED"


class AccountStatus(enum.StrEnum):
    ACTIVE = "ACTIVE"
    WARMING_UP = "WARMING_UP"
    PAUSED = "PAUSED"
    DISABLED = "DISABLED"


class Guard(enum.StrEnum):
    """What a domain's or sending IP's complaint and hard-bounce rates put it under
    (services/reputation.py): sends at the usual rate, at half of it, or none."""

    NONE = "NONE"
    THROTTLED = "THROTTLED"
    PAUSED = "PAUSED"


class Guarded:
    """The guard columns of a domain and of a sending IP: the guard, since when and why, and
    when platform staff last lifted one by hand (rates count only what happened after)."""

    guard: Mapped[Guard] = mapped_column(
        String(9), default=Guard.NONE, server_default=Guard.NONE.value
    )
    guard_reason: Mapped[str | None] = mapped_column(Text)
    guard_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    guard_lifted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class VpsInstance(UUIDPrimaryKey, TenantOwned, Timestamps, Base):
    __tablename__ = "vps_instances"
    __table_args__ = (
        Index("ix_vps_instances_tenant_id_status", "tenant_id", "status"),
        UniqueConstraint("provider", "provider_id"),
        {"schema": "app"},
    )

    provider: Mapped[str] = mapped_column(String(32))  # hostwinds, local
    provider_id: Mapped[str | None] = mapped_column(String(64))
    region: Mapped[str | None] = mapped_column(String(64))
    hostname: Mapped[str | None] = mapped_column(String(253))
    status: Mapped[VpsStatus] = mapped_column(
        enum_column(VpsStatus, "vps_status"), default=VpsStatus.REQUESTED,
        server_default=VpsStatus.REQUESTED.value,
    )  # fmt: skip
    status_reason: Mapped[str | None] = mapped_column(Text)
    primary_ip: Mapped[str | None] = mapped_column(INET)
    smtp_host: Mapped[str | None] = mapped_column(String(253))
    smtp_port: Mapped[int | None] = mapped_column()
    config: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    # The provisioning state machine (services/provisioning.py): the step that failed and why,
    # when the current step began, how many times it was resumed by hand, what it costs.
    failed_step: Mapped[str | None] = mapped_column(String(32))
    failure_reason: Mapped[str | None] = mapped_column(Text)
    step_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    retries: Mapped[int] = mapped_column(default=0, server_default="0")
    monthly_cost_cents: Mapped[int | None] = mapped_column()


class SmtpIpAddress(UUIDPrimaryKey, TenantOwned, Timestamps, Guarded, Base):
    __tablename__ = "smtp_ip_addresses"
    __table_args__ = (
        CheckConstraint("reputation_score BETWEEN 0 AND 100", name="reputation_range"),
        CheckConstraint("guard IN ('NONE', 'THROTTLED', 'PAUSED')", name="guard_known"),
        Index("ix_smtp_ip_addresses_tenant_id_status", "tenant_id", "status"),
        Index("ix_smtp_ip_addresses_tenant_id_vps_id", "tenant_id", "vps_id"),
        # An address is held by one tenant at a time; a released one may be bought again.
        Index(
            "uq_smtp_ip_addresses_address_held",
            "address",
            unique=True,
            postgresql_where=text("status <> 'RELEASED'"),
        ),
        {"schema": "app"},
    )

    vps_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("app.vps_instances.id", ondelete="SET NULL")
    )
    address: Mapped[str] = mapped_column(INET)
    ptr_hostname: Mapped[str | None] = mapped_column(String(253))  # its server's HELO name
    # Reverse DNS at the last check (services/reputation.py): the PTR name seen, and whether it
    # resolves back to the address and is the HELO name (PENDING/VERIFIED/MISMATCH/MISSING).
    ptr: Mapped[str | None] = mapped_column(String(253))
    ptr_status: Mapped[str] = mapped_column(String(8), default="PENDING", server_default="PENDING")
    status: Mapped[IpStatus] = mapped_column(
        enum_column(IpStatus, "ip_status"), default=IpStatus.PENDING,
        server_default=IpStatus.PENDING.value,
    )  # fmt: skip
    reputation_score: Mapped[int] = mapped_column(default=100, server_default="100")
    blacklisted_on: Mapped[list[str]] = mapped_column(JSONB, default=list, server_default="[]")
    last_checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    monthly_cost_cents: Mapped[int | None] = mapped_column()


class Domain(UUIDPrimaryKey, TenantOwned, Timestamps, Guarded, Base):
    __tablename__ = "domains"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name"),
        CheckConstraint("name = lower(name)", name="name_lowercase"),
        CheckConstraint("reputation_score BETWEEN 0 AND 100", name="reputation_range"),
        CheckConstraint("guard IN ('NONE', 'THROTTLED', 'PAUSED')", name="guard_known"),
        Index("ix_domains_tenant_id_created_at", "tenant_id", "created_at"),
        {"schema": "app"},
    )

    name: Mapped[str] = mapped_column(String(253))  # IDNA (punycode) form
    status: Mapped[DomainStatus] = mapped_column(
        enum_column(DomainStatus, "domain_status"), default=DomainStatus.PENDING,
        server_default=DomainStatus.PENDING.value,
    )  # fmt: skip
    dkim_selector: Mapped[str] = mapped_column(String(63), default="pm", server_default="pm")
    dkim_algorithm: Mapped[str] = mapped_column(String(16), default="rsa", server_default="rsa")
    dkim_public_key: Mapped[str | None] = mapped_column(Text)
    dkim_private_key_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    encryption_key_id: Mapped[str | None] = mapped_column(String(32))
    # The records to publish and what DNS answered for each at the last check.
    dns_records: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, default=list, server_default="[]"
    )
    last_checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Rotation (services/dns.py): the next key waits under its selector until its record
    # verifies; the replaced key stays published until dkim_retire_at.
    dkim_next_selector: Mapped[str | None] = mapped_column(String(63))
    dkim_next_public_key: Mapped[str | None] = mapped_column(Text)
    dkim_next_private_key_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    dkim_next_encryption_key_id: Mapped[str | None] = mapped_column(String(32))
    dkim_retiring_selector: Mapped[str | None] = mapped_column(String(63))
    dkim_retiring_public_key: Mapped[str | None] = mapped_column(Text)
    dkim_retire_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    blacklisted_on: Mapped[list[str]] = mapped_column(JSONB, default=list, server_default="[]")
    reputation_score: Mapped[int] = mapped_column(default=100, server_default="100")
    # Once its accounts send from a VPS of the tenant's: the MX it publishes (the VPS's name;
    # None: the platform's inbound host) and the addresses its SPF names.
    mx_host: Mapped[str | None] = mapped_column(String(253))
    spf_ips: Mapped[list[str]] = mapped_column(JSONB, default=list, server_default="[]")


class EmailAccount(UUIDPrimaryKey, TenantOwned, Timestamps, Base):
    __tablename__ = "email_accounts"
    __table_args__ = (
        UniqueConstraint("tenant_id", "address"),
        CheckConstraint("daily_limit >= 0", name="daily_limit_not_negative"),
        CheckConstraint("reputation_score BETWEEN 0 AND 100", name="reputation_range"),
        CheckConstraint("address = lower(address)", name="address_lowercase"),
        Index("ix_email_accounts_tenant_id_status", "tenant_id", "status"),
        Index("ix_email_accounts_tenant_id_domain_id", "tenant_id", "domain_id"),
        {"schema": "app"},
    )

    domain_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("app.domains.id", ondelete="CASCADE")
    )
    ip_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("app.smtp_ip_addresses.id", ondelete="SET NULL")
    )
    address: Mapped[str] = mapped_column(String(320))
    display_name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[AccountStatus] = mapped_column(
        enum_column(AccountStatus, "account_status"), default=AccountStatus.ACTIVE,
        server_default=AccountStatus.ACTIVE.value,
    )  # fmt: skip
    status_reason: Mapped[str | None] = mapped_column(Text)
    daily_limit: Mapped[int] = mapped_column(default=50, server_default="50")
    smtp_host: Mapped[str | None] = mapped_column(String(253))  # None: the VPS or platform relay
    smtp_port: Mapped[int | None] = mapped_column()
    smtp_username: Mapped[str | None] = mapped_column(String(320))
    smtp_password_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    encryption_key_id: Mapped[str | None] = mapped_column(String(32))
    imap_host: Mapped[str | None] = mapped_column(String(253))
    imap_port: Mapped[int | None] = mapped_column()
    imap_last_uid: Mapped[int | None] = mapped_column()
    # The inbox's UIDVALIDITY when imap_last_uid was read: a new one means its UIDs were reset.
    imap_uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    reputation_score: Mapped[int] = mapped_column(default=100, server_default="100")


class WarmupState(TenantOwned, Timestamps, Base):
    """Warm-up ramp of one email account (services/warmup.py): its shape (start, daily_increase,
    max, reply_rate), the day of the ramp and today's target, and how many more days a ramp
    stepped back by a bounce or complaint holds before it grows again."""

    __tablename__ = "warmup_states"
    __table_args__ = (
        CheckConstraint("day >= 0 AND today_target >= 0", name="counters_not_negative"),
        CheckConstraint("start >= 1", name="start_positive"),
        CheckConstraint("daily_increase >= 0", name="increase_not_negative"),
        CheckConstraint("max >= start", name="max_not_below_start"),
        CheckConstraint("reply_rate BETWEEN 0 AND 1", name="reply_rate_range"),
        CheckConstraint("hold_days >= 0", name="hold_not_negative"),
        Index("ix_warmup_states_tenant_id_enabled", "tenant_id", "enabled"),
        {"schema": "app"},
    )

    account_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("app.email_accounts.id", ondelete="CASCADE"),
        primary_key=True,
    )  # fmt: skip
    enabled: Mapped[bool] = mapped_column(default=False, server_default="false")
    day: Mapped[int] = mapped_column(default=0, server_default="0")
    today_target: Mapped[int] = mapped_column(default=0, server_default="0")
    started_on: Mapped[date | None] = mapped_column(Date)
    last_tick_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    start: Mapped[int] = mapped_column(default=10, server_default="10")
    daily_increase: Mapped[int] = mapped_column(default=2, server_default="2")
    max: Mapped[int] = mapped_column(default=40, server_default="40")
    reply_rate: Mapped[float] = mapped_column(Double, default=0.3, server_default="0.3")
    hold_days: Mapped[int] = mapped_column(default=0, server_default="0")


class WarmupMessageStatus(enum.StrEnum):
    PLANNED = "PLANNED"  # its warmup_send job is queued
    SENDING = "SENDING"  # committed just before the SMTP transaction: never sent twice
    SENT = "SENT"
    BOUNCED = "BOUNCED"  # refused for good during the transaction
    CANCELLED = "CANCELLED"  # its sender could not send it when its time came


class WarmupMessage(UUIDPrimaryKey, TenantOwned, Timestamps, Base):
    """One warm-up message between two accounts of a tenant, or a reply to one (reply_to_id).
    The receiving mailbox recognises it by its token (the X-PenguinMails-Warmup header)."""

    __tablename__ = "warmup_messages"
    __table_args__ = (
        CheckConstraint("from_account_id <> to_account_id", name="not_to_itself"),
        Index("ix_warmup_messages_tenant_id_day", "tenant_id", "day"),
        Index(
            "ix_warmup_messages_tenant_id_from_account_id_sent_at",
            "tenant_id",
            "from_account_id",
            "sent_at",
        ),
        Index(
            "ix_warmup_messages_tenant_id_to_account_id_received_at",
            "tenant_id",
            "to_account_id",
            "received_at",
        ),
        {"schema": "app"},
    )

    from_account_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("app.email_accounts.id", ondelete="CASCADE")
    )
    to_account_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("app.email_accounts.id", ondelete="CASCADE")
    )
    # A reply names the message it answers; a message has one reply at most.
    reply_to_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("app.warmup_messages.id", ondelete="CASCADE"), unique=True
    )
    day: Mapped[date] = mapped_column(Date)  # the sender's local day it was planned for
    token: Mapped[str] = mapped_column(String(32), unique=True)
    message_id_header: Mapped[str] = mapped_column(String(255), unique=True)
    subject: Mapped[str] = mapped_column(Text)
    status: Mapped[WarmupMessageStatus] = mapped_column(
        enum_column(WarmupMessageStatus, "warmup_message_status"),
        default=WarmupMessageStatus.PLANNED, server_default=WarmupMessageStatus.PLANNED.value,
    )  # fmt: skip
    send_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # When its SMTP transaction ended (sent or refused), and the server's reply.
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    smtp_response: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    replied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # reply planned
