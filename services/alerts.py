"""Alerts a tenant sees in `deliverability { alerts }`: raised when a condition starts (a domain
stops verifying, an IP is listed), resolved when it ends."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from models.operations import Alert, AlertSeverity


def raise_alert(
    session: AsyncSession,
    tenant_id: uuid.UUID,
    kind: str,
    subject: str,
    message: str,
    details: dict[str, Any] | None = None,
    severity: AlertSeverity = AlertSeverity.CRITICAL,
) -> None:
    session.add(
        Alert(
            tenant_id=tenant_id, kind=kind, severity=severity, subject=subject, message=message,
            details=details or {},
        )
    )  # fmt: skip


async def resolve_alerts(
    session: AsyncSession, tenant_id: uuid.UUID, kind: str, subject: str, now: datetime
) -> None:
    """Every open alert of this kind about this subject is resolved."""
    await session.execute(
        update(Alert)
        .where(
            Alert.tenant_id == tenant_id,
            Alert.kind == kind,
            Alert.subject == subject,
            Alert.resolved_at.is_(None),
        )
        .values(resolved_at=now)
    )
