"""Alerts raised for a tenant's operators (deliverability, billing, infrastructure) and for the
platform's (tenant_id NULL: no tenant ever sees one) (OLTP)."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Index, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, Timestamps, UUIDPrimaryKey, enum_column


class AlertSeverity(enum.StrEnum):
    INFO = "INFO"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"


class Alert(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_tenant_id_created_at", "tenant_id", "created_at"),
        Index("ix_alerts_tenant_id_kind_subject", "tenant_id", "kind", "subject"),
        # One open platform alert per condition, however many schedulers evaluate it.
        Index(
            "uq_alerts_platform_open",
            "kind",
            "subject",
            unique=True,
            postgresql_where=text("tenant_id IS NULL AND resolved_at IS NULL"),
        ),
        {"schema": "app"},
    )

    # NULL: a platform alert (RLS compares tenant_id to the bound tenant: NULL never matches).
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("app.tenants.id", ondelete="CASCADE")
    )

    kind: Mapped[str] = mapped_column(String(64))  # bounce_rate, ip_blacklisted, payment_failed, …
    severity: Mapped[AlertSeverity] = mapped_column(enum_column(AlertSeverity, "alert_severity"))
    subject: Mapped[str | None] = mapped_column(String(200))  # the domain, IP, campaign concerned
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
