"""Alerts raised for a tenant's operators (deliverability, billing, infrastructure) (OLTP)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Index, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, TenantOwned, Timestamps, UUIDPrimaryKey, enum_column


class AlertSeverity(enum.StrEnum):
    INFO = "INFO"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"


class Alert(UUIDPrimaryKey, TenantOwned, Timestamps, Base):
    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_tenant_id_created_at", "tenant_id", "created_at"),
        Index("ix_alerts_tenant_id_kind_subject", "tenant_id", "kind", "subject"),
        {"schema": "app"},
    )

    kind: Mapped[str] = mapped_column(String(64))  # bounce_rate, ip_blacklisted, payment_failed, …
    severity: Mapped[AlertSeverity] = mapped_column(enum_column(AlertSeverity, "alert_severity"))
    subject: Mapped[str | None] = mapped_column(String(200))  # the domain, IP, campaign concerned
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
