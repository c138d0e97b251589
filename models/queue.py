"""The queue tier: the durable record of every background job and each attempt's log."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Identity,
    Index,
    SmallInteger,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, Timestamps, UUIDPrimaryKey, enum_column


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # will run again at run_at
    DEAD = "dead"  # max_attempts reached
    CANCELLED = "cancelled"


class Job(UUIDPrimaryKey, Timestamps, Base):
    """A job: tenant_id is NULL for platform jobs (lease recovery, pipelines)."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint("priority BETWEEN 0 AND 1000", name="priority_range"),
        CheckConstraint("attempts >= 0 AND max_attempts >= 1", name="attempts_sane"),
        Index(
            "uq_jobs_tenant_id_idempotency_key",
            "tenant_id",
            "idempotency_key",
            unique=True,
            postgresql_nulls_not_distinct=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        # The claim: ready jobs by priority then age.
        Index(
            "ix_jobs_ready",
            "priority",
            "run_at",
            postgresql_where=text("status IN ('queued', 'failed')"),
        ),
        Index(
            "ix_jobs_lease_until",
            "lease_until",
            postgresql_where=text("status IN ('dispatched', 'running')"),
        ),
        Index("ix_jobs_tenant_id_status", "tenant_id", "status"),
        Index(
            "ix_jobs_tenant_id_campaign_id",
            "tenant_id",
            "campaign_id",
            postgresql_where=text("status IN ('queued', 'failed', 'dispatched')"),
        ),
        # Cancelling one lead's pending sends (unsubscribe, bounce, complaint, reply).
        Index(
            "ix_jobs_tenant_id_lead_sends",
            "tenant_id",
            text("(payload->>'lead_id')"),
            postgresql_where=text(
                "kind = 'send_step' AND status IN ('queued', 'failed', 'dispatched')"
            ),
        ),
        {"schema": "queue"},
    )

    tenant_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    status: Mapped[JobStatus] = mapped_column(
        enum_column(JobStatus, "job_status"),
        default=JobStatus.QUEUED,
        server_default=JobStatus.QUEUED.value,
    )
    priority: Mapped[int] = mapped_column(SmallInteger, default=100, server_default="100")
    run_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    max_attempts: Mapped[int] = mapped_column(default=5, server_default="5")
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    campaign_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class JobLog(Base):
    __tablename__ = "job_logs"
    __table_args__ = (
        Index("ix_job_logs_tenant_id_job_id", "tenant_id", "job_id"),
        Index("ix_job_logs_at", "at"),
        # The live queue status: a tenant's failures of the last hour (migration 0022).
        Index(
            "ix_job_logs_tenant_id_at_failures",
            "tenant_id",
            "at",
            postgresql_where=text("status IN ('failed', 'dead')"),
        ),
        {"schema": "queue"},
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    job_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    attempt: Mapped[int] = mapped_column()
    status: Mapped[JobStatus] = mapped_column(enum_column(JobStatus, "job_log_status"))
    message: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int | None] = mapped_column()
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
