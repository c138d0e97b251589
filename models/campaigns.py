"""Templates, campaigns with ordered sequence steps and accounts, leads, and the suppression list
(OLTP)."""

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
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, TenantOwned, Timestamps, UUIDPrimaryKey, enum_column


class CampaignStatus(enum.StrEnum):
    DRAFT = "DRAFT"
    SCHEDULED = "SCHEDULED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"


class LeadStatus(enum.StrEnum):
    ACTIVE = "ACTIVE"
    CONTACTED = "CONTACTED"
    REPLIED = "REPLIED"
    BOUNCED = "BOUNCED"
    UNSUBSCRIBED = "UNSUBSCRIBED"
    COMPLAINED = "COMPLAINED"
    FINISHED = "FINISHED"


class SuppressionReason(enum.StrEnum):
    HARD_BOUNCE = "HARD_BOUNCE"
    COMPLAINT = "COMPLAINT"
    UNSUBSCRIBE = "UNSUBSCRIBE"
    MANUAL = "MANUAL"
    REPEATED_SOFT_BOUNCE = "REPEATED_SOFT_BOUNCE"  # services/bounces.py


class Template(UUIDPrimaryKey, TenantOwned, Timestamps, Base):
    __tablename__ = "templates"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name"),
        CheckConstraint("html IS NOT NULL OR text IS NOT NULL", name="has_body"),
        Index("ix_templates_tenant_id_created_at", "tenant_id", "created_at"),
        {"schema": "app"},
    )

    name: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    variables: Mapped[list[str]] = mapped_column(JSONB, default=list, server_default="[]")


class Campaign(UUIDPrimaryKey, TenantOwned, Timestamps, Base):
    __tablename__ = "campaigns"
    __table_args__ = (
        CheckConstraint(
            "start_hour BETWEEN 0 AND 23 AND end_hour BETWEEN 1 AND 24 AND start_hour < end_hour",
            name="window_hours",
        ),
        CheckConstraint(
            "cardinality(window_days) BETWEEN 1 AND 7 AND window_days <@ ARRAY[1,2,3,4,5,6,7]::smallint[]",
            name="window_days_iso",
        ),
        CheckConstraint("daily_limit IS NULL OR daily_limit > 0", name="daily_limit_positive"),
        Index("ix_campaigns_tenant_id_created_at", "tenant_id", "created_at"),
        Index("ix_campaigns_tenant_id_status", "tenant_id", "status"),
        {"schema": "app"},
    )

    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[CampaignStatus] = mapped_column(
        enum_column(CampaignStatus, "campaign_status"), default=CampaignStatus.DRAFT,
        server_default=CampaignStatus.DRAFT.value,
    )  # fmt: skip
    status_reason: Mapped[str | None] = mapped_column(Text)  # e.g. why sending stopped (plan limit)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")
    window_days: Mapped[list[int]] = mapped_column(
        ARRAY(SmallInteger), default=lambda: [1, 2, 3, 4, 5],
        server_default="{1,2,3,4,5}",
    )  # fmt: skip  # ISO weekdays, Monday = 1
    start_hour: Mapped[int] = mapped_column(SmallInteger, default=9, server_default="9")
    end_hour: Mapped[int] = mapped_column(SmallInteger, default=17, server_default="17")
    daily_limit: Mapped[int | None] = mapped_column()
    send_spacing_seconds: Mapped[int] = mapped_column(default=60, server_default="60")
    launched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class CampaignSequenceStep(UUIDPrimaryKey, TenantOwned, Timestamps, Base):
    __tablename__ = "campaign_sequence_steps"
    __table_args__ = (
        UniqueConstraint("campaign_id", "position"),
        CheckConstraint("position >= 1", name="position_from_one"),
        CheckConstraint("delay_days >= 0", name="delay_not_negative"),
        CheckConstraint(
            "template_id IS NOT NULL OR html IS NOT NULL OR text IS NOT NULL", name="has_body"
        ),
        Index("ix_campaign_sequence_steps_tenant_id_campaign_id", "tenant_id", "campaign_id"),
        {"schema": "app"},
    )

    campaign_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("app.campaigns.id", ondelete="CASCADE")
    )
    position: Mapped[int] = mapped_column(SmallInteger)
    delay_days: Mapped[int] = mapped_column(default=0, server_default="0")
    subject: Mapped[str] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    template_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("app.templates.id", ondelete="RESTRICT")
    )


class CampaignAccount(TenantOwned, Base):
    """An email account a campaign sends from (round robin between them)."""

    __tablename__ = "campaign_accounts"
    __table_args__ = (
        Index("ix_campaign_accounts_tenant_id_account_id", "tenant_id", "account_id"),
        {"schema": "app"},
    )

    campaign_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("app.campaigns.id", ondelete="CASCADE"), primary_key=True
    )
    account_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("app.email_accounts.id", ondelete="CASCADE"),
        primary_key=True,
    )  # fmt: skip
    position: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")


class Lead(UUIDPrimaryKey, TenantOwned, Timestamps, Base):
    __tablename__ = "leads"
    __table_args__ = (
        UniqueConstraint("campaign_id", "email"),
        CheckConstraint("email = lower(email)", name="email_lowercase"),
        CheckConstraint("current_step >= 0", name="step_not_negative"),
        Index(
            "ix_leads_tenant_id_campaign_id_status_id", "tenant_id", "campaign_id", "status", "id"
        ),
        Index("ix_leads_tenant_id_campaign_id_id", "tenant_id", "campaign_id", "id"),
        Index("ix_leads_tenant_id_email", "tenant_id", "email"),
        {"schema": "app"},
    )

    campaign_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("app.campaigns.id", ondelete="CASCADE")
    )
    email: Mapped[str] = mapped_column(String(320))
    first_name: Mapped[str | None] = mapped_column(String(200))
    last_name: Mapped[str | None] = mapped_column(String(200))
    company: Mapped[str | None] = mapped_column(String(200))
    fields: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    status: Mapped[LeadStatus] = mapped_column(
        enum_column(LeadStatus, "lead_status"), default=LeadStatus.ACTIVE,
        server_default=LeadStatus.ACTIVE.value,
    )  # fmt: skip
    current_step: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")
    last_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    first_message_id: Mapped[str | None] = mapped_column(String(255))  # threads follow-ups


class Suppression(UUIDPrimaryKey, TenantOwned, Timestamps, Base):
    """An address the tenant must not email again, and why."""

    __tablename__ = "suppressions"
    __table_args__ = (
        UniqueConstraint("tenant_id", "email"),
        CheckConstraint("email = lower(email)", name="email_lowercase"),
        {"schema": "app"},
    )

    email: Mapped[str] = mapped_column(String(320))
    reason: Mapped[SuppressionReason] = mapped_column(
        enum_column(SuppressionReason, "suppression_reason")
    )
    source: Mapped[str | None] = mapped_column(Text)  # e.g. the message or DSN that caused it
