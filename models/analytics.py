"""The OLAP tier: rollups the dashboards read, written only by the pipelines (pipelines/). The
tables are created by sql/analytics_tables.sql; these models mirror them for reading."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Computed,
    Date,
    DateTime,
    Double,
    Integer,
    SmallInteger,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base

# daily_analytics.campaign_id of the tenant-wide row.
ALL_CAMPAIGNS = uuid.UUID(int=0)
# billing_analytics.plan_id of the payments that belong to no subscription.
NO_PLAN = uuid.UUID(int=0)


def _count() -> Mapped[int]:
    return mapped_column(BigInteger, default=0, server_default="0")


def _rate(numerator: str, denominator: str) -> Mapped[float]:
    return mapped_column(
        Double,
        Computed(
            f"CASE WHEN {denominator} > 0 THEN {numerator}::float8 / {denominator} ELSE 0 END",
            persisted=True,
        ),
    )


class EventCounts:
    """The counts of daily_analytics and campaign_analytics (definitions in docs/analytics.md).
    `bounced` is hard bounces; soft bounces are counted apart."""

    sent: Mapped[int] = _count()
    delivered: Mapped[int] = _count()
    opened: Mapped[int] = _count()
    opens_total: Mapped[int] = _count()
    clicked: Mapped[int] = _count()
    clicks_total: Mapped[int] = _count()
    machine_opens: Mapped[int] = _count()
    machine_clicks: Mapped[int] = _count()
    replied: Mapped[int] = _count()
    bounced: Mapped[int] = _count()
    soft_bounced: Mapped[int] = _count()
    complained: Mapped[int] = _count()
    unsubscribed: Mapped[int] = _count()
    first_opened: Mapped[int] = _count()  # on the day of its first human open only
    first_clicked: Mapped[int] = _count()


class DailyAnalytics(EventCounts, Base):
    __tablename__ = "daily_analytics"
    __table_args__ = {"schema": "analytics"}

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    campaign_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class CampaignAnalytics(EventCounts, Base):
    __tablename__ = "campaign_analytics"
    __table_args__ = {"schema": "analytics"}

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    campaign_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    step: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    open_rate: Mapped[float] = _rate("opened", "delivered")
    click_rate: Mapped[float] = _rate("clicked", "delivered")
    reply_rate: Mapped[float] = _rate("replied", "delivered")
    bounce_rate: Mapped[float] = _rate("bounced", "sent")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class CampaignTotals(Base):
    """Each campaign's lifetime counts (sql/campaign_totals.sql): the sums of its
    campaign_analytics rows, `opened` and `clicked` those of first_opened and first_clicked."""

    __tablename__ = "campaign_totals"
    __table_args__ = {"schema": "analytics"}

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    campaign_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    sent: Mapped[int] = _count()
    delivered: Mapped[int] = _count()
    opened: Mapped[int] = _count()
    clicked: Mapped[int] = _count()
    replied: Mapped[int] = _count()
    bounced: Mapped[int] = _count()
    complained: Mapped[int] = _count()
    unsubscribed: Mapped[int] = _count()
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class DeliverabilityDaily(Base):
    """Per sending IP, sending domain or recipient provider and day: volume, bounces,
    complaints."""

    __tablename__ = "deliverability_daily"
    __table_args__ = (
        CheckConstraint("subject_kind IN ('ip', 'domain', 'provider')", name="subject_kind_known"),
        {"schema": "analytics"},
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    subject_kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    subject: Mapped[str] = mapped_column(String(253), primary_key=True)
    sent: Mapped[int] = _count()
    bounced: Mapped[int] = _count()
    complained: Mapped[int] = _count()
    bounce_rate: Mapped[float] = _rate("bounced", "sent")
    complaint_rate: Mapped[float] = _rate("complained", "sent")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class BillingAnalytics(Base):
    """Platform figures per UTC day and plan; no tenant's row, staff only."""

    __tablename__ = "billing_analytics"
    __table_args__ = {"schema": "analytics"}

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    plan_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    active_subscriptions: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    mrr_cents: Mapped[int] = _count()
    new_subscriptions: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    churned_subscriptions: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    revenue_cents: Mapped[int] = _count()
    failed_payments: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class InfrastructureCosts(Base):
    """Per tenant and UTC day: its sending infrastructure (VPS instances in use, IPs held) and
    what it costs a month, against what its subscription brings in a month (MRR). Written by
    the billing_analytics pipeline for the current day; a tenant reads its own rows (RLS)."""

    __tablename__ = "infrastructure_costs"
    __table_args__ = {"schema": "analytics"}

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    plan_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    vps_instances: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    sending_ips: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    infra_cost_cents: Mapped[int] = _count()
    mrr_cents: Mapped[int] = _count()
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class QueueHealth(Base):
    """Platform figures per UTC hour and priority tier."""

    __tablename__ = "queue_health"
    __table_args__ = {"schema": "analytics"}

    hour: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    tier: Mapped[str] = mapped_column(String(16), primary_key=True)
    finished: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    failed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    dead: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    wait_p50_ms: Mapped[float | None] = mapped_column(Double)
    wait_p95_ms: Mapped[float | None] = mapped_column(Double)
    run_p50_ms: Mapped[float | None] = mapped_column(Double)
    run_p95_ms: Mapped[float | None] = mapped_column(Double)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PipelineWatermark(Base):
    """How far each pipeline has read its source (platform-wide, not tenant data); see
    sql/analytics_tables.sql."""

    __tablename__ = "pipeline_watermarks"
    __table_args__ = {"schema": "analytics"}

    pipeline: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_seq: Mapped[int] = _count()
    max_seq: Mapped[int] = _count()
    holes: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    last_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_ok_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    rows_read: Mapped[int] = _count()
    rows_written: Mapped[int] = _count()
    rows_skipped: Mapped[int] = _count()
    seconds: Mapped[float | None] = mapped_column(Double)
