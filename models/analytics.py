"""The OLAP tier: daily rollups the dashboards read, written only by the pipelines."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import BigInteger, CheckConstraint, Date, DateTime, String, func
from sqlalchemy.dialects.postgresql import INET, UUID
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class EventCounts:
    sent: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    delivered: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    opened: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    clicked: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    replied: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    bounced: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    complained: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    unsubscribed: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class DailyAnalytics(EventCounts, Base):
    __tablename__ = "daily_analytics"
    __table_args__ = {"schema": "analytics"}

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)


class CampaignAnalytics(EventCounts, Base):
    __tablename__ = "campaign_analytics"
    __table_args__ = {"schema": "analytics"}

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    campaign_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)


class DeliverabilityDaily(Base):
    """Per sending IP or domain and day: volume, bounces, complaints, blacklist hits."""

    __tablename__ = "deliverability_daily"
    __table_args__ = (
        CheckConstraint("subject_kind IN ('ip', 'domain')", name="subject_kind_known"),
        {"schema": "analytics"},
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    subject_kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    subject: Mapped[str] = mapped_column(String(253), primary_key=True)  # IP address or domain
    ip: Mapped[str | None] = mapped_column(INET)
    sent: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    bounced: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    complained: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    blacklist_hits: Mapped[int] = mapped_column(default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class BillingAnalytics(Base):
    __tablename__ = "billing_analytics"
    __table_args__ = {"schema": "analytics"}

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    month: Mapped[date] = mapped_column(Date, primary_key=True)  # first day of the month
    emails_sent: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    emails_limit: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    amount_paid_cents: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    failed_payments: Mapped[int] = mapped_column(default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PipelineWatermark(Base):
    """How far each pipeline has read its source (platform-wide, not tenant data)."""

    __tablename__ = "pipeline_watermarks"
    __table_args__ = {"schema": "analytics"}

    pipeline: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    last_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
