"""The content tier: rendered messages (compressed), every delivery outcome as an event, and
inbound mail (DSNs, complaints, replies). No foreign keys into the OLTP tier, which may live on
another server; rows carry the ids they refer to."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Identity,
    Index,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, TenantTagged, Timestamps, UUIDPrimaryKey, enum_column


class MessageStatus(enum.StrEnum):
    PENDING = "PENDING"  # written before the SMTP transaction
    SENDING = "SENDING"  # committed just before the transaction: a retry never resends it
    SENT = "SENT"  # 250 from the server
    BOUNCED = "BOUNCED"
    FAILED = "FAILED"


class EventKind(enum.StrEnum):
    SENT = "SENT"
    DELIVERED = "DELIVERED"
    OPEN = "OPEN"
    CLICK = "CLICK"
    REPLY = "REPLY"
    BOUNCE = "BOUNCE"
    COMPLAINT = "COMPLAINT"
    UNSUBSCRIBE = "UNSUBSCRIBE"


class InboundKind(enum.StrEnum):
    DSN = "DSN"
    ARF = "ARF"
    REPLY = "REPLY"
    UNSUBSCRIBE = "UNSUBSCRIBE"  # mail to a message's mailto: unsubscribe address
    UNKNOWN = "UNKNOWN"


class EmailMessage(UUIDPrimaryKey, TenantTagged, Timestamps, Base):
    __tablename__ = "email_messages"
    __table_args__ = (
        Index(
            "uq_email_messages_tenant_id_idempotency_key",
            "tenant_id",
            "idempotency_key",
            unique=True,
        ),
        Index(
            "ix_email_messages_tenant_id_campaign_id_created_at",
            "tenant_id",
            "campaign_id",
            "created_at",
        ),
        Index("ix_email_messages_tenant_id_lead_id", "tenant_id", "lead_id"),
        Index(
            "ix_email_messages_tenant_id_account_id_sent_at", "tenant_id", "account_id", "sent_at"
        ),
        # The live queue status: a tenant's sends of the last minute (migration 0022).
        Index(
            "ix_email_messages_tenant_id_sent_at_sent",
            "tenant_id",
            "sent_at",
            postgresql_where=text("status = 'SENT'"),
        ),
        # Content retention: the oldest messages that still have a body (services/retention.py).
        Index(
            "ix_email_messages_created_at_with_body",
            "created_at",
            postgresql_where=text("body_compressed IS NOT NULL"),
        ),
        {"schema": "content"},
    )

    campaign_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    lead_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    account_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    step_position: Mapped[int | None] = mapped_column(SmallInteger)
    # campaign:lead:step — a retried send job finds its message and never sends twice.
    idempotency_key: Mapped[str] = mapped_column(String(200))
    message_id_header: Mapped[str] = mapped_column(String(255), unique=True)
    verp_token: Mapped[str] = mapped_column(String(64), unique=True)
    from_address: Mapped[str] = mapped_column(String(320))
    to_address: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text)
    # zlib of the MIME bytes; NULL once older than the content retention (services/retention.py).
    body_compressed: Mapped[bytes | None] = mapped_column(LargeBinary)
    status: Mapped[MessageStatus] = mapped_column(
        enum_column(MessageStatus, "message_status"),
        default=MessageStatus.PENDING,
        server_default=MessageStatus.PENDING.value,
    )
    smtp_response: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class EmailEvent(UUIDPrimaryKey, TenantTagged, Base):
    """One outcome of one message. `seq` orders events for the incremental pipelines."""

    __tablename__ = "email_events"
    __table_args__ = (
        Index("ix_email_events_tenant_id_occurred_at", "tenant_id", "occurred_at"),
        Index(
            "ix_email_events_tenant_id_campaign_id_occurred_at",
            "tenant_id",
            "campaign_id",
            "occurred_at",
        ),
        Index("ix_email_events_tenant_id_message_id", "tenant_id", "message_id"),
        # A recipient's recent bounces (three soft ones in seven days suppress the address:
        # services/inbound.py), without reading the tenant's other events.
        Index(
            "ix_email_events_tenant_id_occurred_at_bounces",
            "tenant_id",
            "occurred_at",
            postgresql_where=text("kind = 'BOUNCE'"),
        ),
        {"schema": "content"},
    )

    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), unique=True)
    kind: Mapped[EventKind] = mapped_column(enum_column(EventKind, "event_kind"))
    message_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    campaign_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    lead_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    account_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    step_position: Mapped[int | None] = mapped_column(SmallInteger)
    machine: Mapped[bool] = mapped_column(default=False, server_default="false")  # proxy prefetch
    url: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    occurred_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class InboundMessage(UUIDPrimaryKey, Timestamps, Base):
    """Mail received by the inbound server. tenant_id stays NULL until it is matched."""

    __tablename__ = "inbound_messages"
    __table_args__ = (
        Index("ix_inbound_messages_tenant_id_created_at", "tenant_id", "created_at"),
        {"schema": "content"},
    )

    tenant_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    kind: Mapped[InboundKind] = mapped_column(enum_column(InboundKind, "inbound_kind"))
    mail_from: Mapped[str | None] = mapped_column(String(320))
    rcpt_to: Mapped[str] = mapped_column(String(320))
    matched_message_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    raw_compressed: Mapped[bytes] = mapped_column(LargeBinary)
    error: Mapped[str | None] = mapped_column(Text)  # why it could not be parsed or matched
