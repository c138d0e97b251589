"""initial schema: four tiers, roles, grants, row-level security

Revision ID: 0001
Revises:
Create Date: 2026-11-25 17:20:52.384936
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from penguinmails.migrations import run_sql_file

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


SCHEMAS = ("app", "content", "queue", "analytics")


def upgrade() -> None:
    for schema in SCHEMAS:
        op.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    op.create_table(
        "billing_analytics",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("emails_sent", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("emails_limit", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("amount_paid_cents", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("failed_payments", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("tenant_id", "month", name=op.f("pk_billing_analytics")),
        schema="analytics",
    )
    op.create_table(
        "campaign_analytics",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("campaign_id", sa.UUID(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("sent", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("delivered", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("opened", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("clicked", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("replied", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("bounced", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("complained", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("unsubscribed", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id", "campaign_id", "day", name=op.f("pk_campaign_analytics")
        ),
        schema="analytics",
    )
    op.create_table(
        "daily_analytics",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("sent", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("delivered", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("opened", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("clicked", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("replied", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("bounced", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("complained", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("unsubscribed", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("tenant_id", "day", name=op.f("pk_daily_analytics")),
        schema="analytics",
    )
    op.create_table(
        "deliverability_daily",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("subject_kind", sa.String(length=8), nullable=False),
        sa.Column("subject", sa.String(length=253), nullable=False),
        sa.Column("ip", postgresql.INET(), nullable=True),
        sa.Column("sent", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("bounced", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("complained", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("blacklist_hits", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "subject_kind IN ('ip', 'domain')",
            name=op.f("ck_deliverability_daily_subject_kind_known"),
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id", "day", "subject_kind", "subject", name=op.f("pk_deliverability_daily")
        ),
        schema="analytics",
    )
    op.create_table(
        "pipeline_watermarks",
        sa.Column("pipeline", sa.String(length=64), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("pipeline", name=op.f("pk_pipeline_watermarks")),
        schema="analytics",
    )
    op.create_table(
        "plans",
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("price_cents", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), server_default="usd", nullable=False),
        sa.Column("interval", sa.String(length=8), server_default="month", nullable=False),
        sa.Column("stripe_price_id", sa.String(length=64), nullable=True),
        sa.Column("emails_per_month", sa.BigInteger(), nullable=False),
        sa.Column("max_domains", sa.Integer(), nullable=False),
        sa.Column("max_ips", sa.Integer(), nullable=False),
        sa.Column("max_email_accounts", sa.Integer(), nullable=False),
        sa.Column("max_seats", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), server_default="true", nullable=False),
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("interval IN ('month', 'year')", name=op.f("ck_plans_interval_known")),
        sa.CheckConstraint(
            "emails_per_month >= 0 AND max_domains >= 0 AND max_ips >= 0 AND max_email_accounts >= 0 AND max_seats >= 1",
            name=op.f("ck_plans_limits_sane"),
        ),
        sa.CheckConstraint("price_cents >= 0", name=op.f("ck_plans_price_not_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plans")),
        sa.UniqueConstraint("code", name=op.f("uq_plans_code")),
        sa.UniqueConstraint("stripe_price_id", name=op.f("uq_plans_stripe_price_id")),
        schema="app",
    )
    op.create_table(
        "staff_roles",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column(
            "permissions",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="[]",
            nullable=False,
        ),
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_roles")),
        sa.UniqueConstraint("name", name=op.f("uq_staff_roles_name")),
        schema="app",
    )
    op.create_table(
        "users",
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("full_name", sa.String(length=200), nullable=True),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("email = lower(email)", name=op.f("ck_users_email_lowercase")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
        schema="app",
    )
    op.create_table(
        "email_events",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "SENT",
                "DELIVERED",
                "OPEN",
                "CLICK",
                "REPLY",
                "BOUNCE",
                "COMPLAINT",
                "UNSUBSCRIBE",
                name="event_kind",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("message_id", sa.UUID(), nullable=True),
        sa.Column("campaign_id", sa.UUID(), nullable=True),
        sa.Column("lead_id", sa.UUID(), nullable=True),
        sa.Column("account_id", sa.UUID(), nullable=True),
        sa.Column("step_position", sa.SmallInteger(), nullable=True),
        sa.Column("machine", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column(
            "details", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column(
            "occurred_at", sa.DateTime(timezone=True), server_default="now()", nullable=False
        ),
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_events")),
        sa.UniqueConstraint("seq", name=op.f("uq_email_events_seq")),
        schema="content",
    )
    op.create_index(
        "ix_email_events_tenant_id_campaign_id_occurred_at",
        "email_events",
        ["tenant_id", "campaign_id", "occurred_at"],
        unique=False,
        schema="content",
    )
    op.create_index(
        "ix_email_events_tenant_id_message_id",
        "email_events",
        ["tenant_id", "message_id"],
        unique=False,
        schema="content",
    )
    op.create_index(
        "ix_email_events_tenant_id_occurred_at",
        "email_events",
        ["tenant_id", "occurred_at"],
        unique=False,
        schema="content",
    )
    op.create_table(
        "email_messages",
        sa.Column("campaign_id", sa.UUID(), nullable=True),
        sa.Column("lead_id", sa.UUID(), nullable=True),
        sa.Column("account_id", sa.UUID(), nullable=True),
        sa.Column("step_position", sa.SmallInteger(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("message_id_header", sa.String(length=255), nullable=False),
        sa.Column("verp_token", sa.String(length=64), nullable=False),
        sa.Column("from_address", sa.String(length=320), nullable=False),
        sa.Column("to_address", sa.String(length=320), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body_compressed", sa.LargeBinary(), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "PENDING",
                "SENT",
                "BOUNCED",
                "FAILED",
                name="message_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            server_default="PENDING",
            nullable=False,
        ),
        sa.Column("smtp_response", sa.Text(), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_messages")),
        sa.UniqueConstraint("message_id_header", name=op.f("uq_email_messages_message_id_header")),
        sa.UniqueConstraint("verp_token", name=op.f("uq_email_messages_verp_token")),
        schema="content",
    )
    op.create_index(
        "ix_email_messages_tenant_id_account_id_sent_at",
        "email_messages",
        ["tenant_id", "account_id", "sent_at"],
        unique=False,
        schema="content",
    )
    op.create_index(
        "ix_email_messages_tenant_id_campaign_id_created_at",
        "email_messages",
        ["tenant_id", "campaign_id", "created_at"],
        unique=False,
        schema="content",
    )
    op.create_index(
        "ix_email_messages_tenant_id_lead_id",
        "email_messages",
        ["tenant_id", "lead_id"],
        unique=False,
        schema="content",
    )
    op.create_index(
        "uq_email_messages_tenant_id_idempotency_key",
        "email_messages",
        ["tenant_id", "idempotency_key"],
        unique=True,
        schema="content",
    )
    op.create_table(
        "inbound_messages",
        sa.Column("tenant_id", sa.UUID(), nullable=True),
        sa.Column(
            "kind",
            sa.Enum(
                "DSN",
                "ARF",
                "REPLY",
                "UNKNOWN",
                name="inbound_kind",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("mail_from", sa.String(length=320), nullable=True),
        sa.Column("rcpt_to", sa.String(length=320), nullable=False),
        sa.Column("matched_message_id", sa.UUID(), nullable=True),
        sa.Column("raw_compressed", sa.LargeBinary(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_messages")),
        schema="content",
    )
    op.create_index(
        "ix_inbound_messages_tenant_id_created_at",
        "inbound_messages",
        ["tenant_id", "created_at"],
        unique=False,
        schema="content",
    )
    op.create_table(
        "job_logs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=True),
        sa.Column("job_id", sa.UUID(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "queued",
                "dispatched",
                "running",
                "succeeded",
                "failed",
                "dead",
                "cancelled",
                name="job_log_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_logs")),
        schema="queue",
    )
    op.create_index("ix_job_logs_at", "job_logs", ["at"], unique=False, schema="queue")
    op.create_index(
        "ix_job_logs_tenant_id_job_id",
        "job_logs",
        ["tenant_id", "job_id"],
        unique=False,
        schema="queue",
    )
    op.create_table(
        "jobs",
        sa.Column("tenant_id", sa.UUID(), nullable=True),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column(
            "payload", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column(
            "status",
            sa.Enum(
                "queued",
                "dispatched",
                "running",
                "succeeded",
                "failed",
                "dead",
                "cancelled",
                name="job_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            server_default="queued",
            nullable=False,
        ),
        sa.Column("priority", sa.SmallInteger(), server_default="100", nullable=False),
        sa.Column(
            "run_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("max_attempts", sa.Integer(), server_default="5", nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("campaign_id", sa.UUID(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "attempts >= 0 AND max_attempts >= 1", name=op.f("ck_jobs_attempts_sane")
        ),
        sa.CheckConstraint("priority BETWEEN 0 AND 1000", name=op.f("ck_jobs_priority_range")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        schema="queue",
    )
    op.create_index(
        "ix_jobs_lease_until",
        "jobs",
        ["lease_until"],
        unique=False,
        schema="queue",
        postgresql_where=sa.text("status IN ('dispatched', 'running')"),
    )
    op.create_index(
        "ix_jobs_ready",
        "jobs",
        ["priority", "run_at"],
        unique=False,
        schema="queue",
        postgresql_where=sa.text("status IN ('queued', 'failed')"),
    )
    op.create_index(
        "ix_jobs_tenant_id_campaign_id",
        "jobs",
        ["tenant_id", "campaign_id"],
        unique=False,
        schema="queue",
        postgresql_where=sa.text("status IN ('queued', 'failed', 'dispatched')"),
    )
    op.create_index(
        "ix_jobs_tenant_id_status", "jobs", ["tenant_id", "status"], unique=False, schema="queue"
    )
    op.create_index(
        "uq_jobs_tenant_id_idempotency_key",
        "jobs",
        ["tenant_id", "idempotency_key"],
        unique=True,
        schema="queue",
        postgresql_nulls_not_distinct=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.create_table(
        "staff_members",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("role_id", sa.UUID(), nullable=False),
        sa.Column("active", sa.Boolean(), server_default="true", nullable=False),
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["role_id"],
            ["app.staff_roles.id"],
            name=op.f("fk_staff_members_role_id_staff_roles"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["app.users.id"],
            name=op.f("fk_staff_members_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_staff_members")),
        sa.UniqueConstraint("user_id", name=op.f("uq_staff_members_user_id")),
        schema="app",
    )
    op.create_table(
        "tenants",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("slug", sa.String(length=63), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "ACTIVE",
                "SUSPENDED",
                "CLOSED",
                name="tenant_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            server_default="ACTIVE",
            nullable=False,
        ),
        sa.Column("plan_id", sa.UUID(), nullable=True),
        sa.Column("stripe_customer_id", sa.String(length=64), nullable=True),
        sa.Column("sending_suspended_reason", sa.Text(), nullable=True),
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'", name=op.f("ck_tenants_slug_format")
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["app.plans.id"],
            name=op.f("fk_tenants_plan_id_plans"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
        sa.UniqueConstraint("slug", name=op.f("uq_tenants_slug")),
        sa.UniqueConstraint("stripe_customer_id", name=op.f("uq_tenants_stripe_customer_id")),
        schema="app",
    )
    op.create_table(
        "alerts",
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column(
            "severity",
            sa.Enum(
                "INFO",
                "WARNING",
                "CRITICAL",
                name="alert_severity",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("subject", sa.String(length=200), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column(
            "details", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["app.tenants.id"],
            name=op.f("fk_alerts_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        schema="app",
    )
    op.create_index(
        "ix_alerts_tenant_id_created_at",
        "alerts",
        ["tenant_id", "created_at"],
        unique=False,
        schema="app",
    )
    op.create_index(
        "ix_alerts_tenant_id_kind_subject",
        "alerts",
        ["tenant_id", "kind", "subject"],
        unique=False,
        schema="app",
    )
    op.create_table(
        "api_keys",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.Text(), nullable=False),
        sa.Column("created_by", sa.UUID(), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["app.users.id"],
            name=op.f("fk_api_keys_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["app.tenants.id"],
            name=op.f("fk_api_keys_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
        schema="app",
    )
    op.create_index(
        "ix_api_keys_tenant_id_created_at",
        "api_keys",
        ["tenant_id", "created_at"],
        unique=False,
        schema="app",
    )
    op.create_table(
        "audit_log",
        sa.Column("tenant_id", sa.UUID(), nullable=True),
        sa.Column("actor_user_id", sa.UUID(), nullable=True),
        sa.Column("actor_kind", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=True),
        sa.Column(
            "details", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column("ip", postgresql.INET(), nullable=True),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["actor_user_id"],
            ["app.users.id"],
            name=op.f("fk_audit_log_actor_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["app.tenants.id"],
            name=op.f("fk_audit_log_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
        schema="app",
    )
    op.create_index(
        "ix_audit_log_actor_user_id_at",
        "audit_log",
        ["actor_user_id", "at"],
        unique=False,
        schema="app",
    )
    op.create_index(
        "ix_audit_log_tenant_id_at", "audit_log", ["tenant_id", "at"], unique=False, schema="app"
    )
    op.create_table(
        "campaigns",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "DRAFT",
                "SCHEDULED",
                "RUNNING",
                "PAUSED",
                "COMPLETED",
                "CANCELLED",
                name="campaign_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            server_default="DRAFT",
            nullable=False,
        ),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("timezone", sa.String(length=64), server_default="UTC", nullable=False),
        sa.Column(
            "window_days",
            postgresql.ARRAY(sa.SmallInteger()),
            server_default="{1,2,3,4,5}",
            nullable=False,
        ),
        sa.Column("start_hour", sa.SmallInteger(), server_default="9", nullable=False),
        sa.Column("end_hour", sa.SmallInteger(), server_default="17", nullable=False),
        sa.Column("daily_limit", sa.Integer(), nullable=True),
        sa.Column("send_spacing_seconds", sa.Integer(), server_default="60", nullable=False),
        sa.Column("launched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "cardinality(window_days) BETWEEN 1 AND 7 AND window_days <@ ARRAY[1,2,3,4,5,6,7]::smallint[]",
            name=op.f("ck_campaigns_window_days_iso"),
        ),
        sa.CheckConstraint(
            "daily_limit IS NULL OR daily_limit > 0", name=op.f("ck_campaigns_daily_limit_positive")
        ),
        sa.CheckConstraint(
            "start_hour BETWEEN 0 AND 23 AND end_hour BETWEEN 1 AND 24 AND start_hour < end_hour",
            name=op.f("ck_campaigns_window_hours"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["app.tenants.id"],
            name=op.f("fk_campaigns_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
        schema="app",
    )
    op.create_index(
        "ix_campaigns_tenant_id_created_at",
        "campaigns",
        ["tenant_id", "created_at"],
        unique=False,
        schema="app",
    )
    op.create_index(
        "ix_campaigns_tenant_id_status",
        "campaigns",
        ["tenant_id", "status"],
        unique=False,
        schema="app",
    )
    op.create_table(
        "domains",
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "PENDING",
                "VERIFIED",
                "FAILED",
                name="domain_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            server_default="PENDING",
            nullable=False,
        ),
        sa.Column("dkim_selector", sa.String(length=63), server_default="pm", nullable=False),
        sa.Column("dkim_algorithm", sa.String(length=16), server_default="rsa", nullable=False),
        sa.Column("dkim_public_key", sa.Text(), nullable=True),
        sa.Column("dkim_private_key_encrypted", sa.LargeBinary(), nullable=True),
        sa.Column("encryption_key_id", sa.String(length=32), nullable=True),
        sa.Column(
            "dns_records",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="[]",
            nullable=False,
        ),
        sa.Column("last_checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("name = lower(name)", name=op.f("ck_domains_name_lowercase")),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["app.tenants.id"],
            name=op.f("fk_domains_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_domains")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_domains_tenant_id_name")),
        schema="app",
    )
    op.create_index(
        "ix_domains_tenant_id_created_at",
        "domains",
        ["tenant_id", "created_at"],
        unique=False,
        schema="app",
    )
    op.create_table(
        "stripe_events",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=True),
        sa.Column("stripe_created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "processed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["app.tenants.id"],
            name=op.f("fk_stripe_events_tenant_id_tenants"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_events")),
        schema="app",
    )
    op.create_table(
        "subscriptions",
        sa.Column("plan_id", sa.UUID(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "TRIALING",
                "ACTIVE",
                "PAST_DUE",
                "GRACE",
                "SUSPENDED",
                "CANCELED",
                name="subscription_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("stripe_subscription_id", sa.String(length=64), nullable=True),
        sa.Column("current_period_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("current_period_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("grace_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("canceled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stripe_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["app.plans.id"],
            name=op.f("fk_subscriptions_plan_id_plans"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["app.tenants.id"],
            name=op.f("fk_subscriptions_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriptions")),
        sa.UniqueConstraint(
            "stripe_subscription_id", name=op.f("uq_subscriptions_stripe_subscription_id")
        ),
        schema="app",
    )
    op.create_index(
        "ix_subscriptions_tenant_id_status",
        "subscriptions",
        ["tenant_id", "status"],
        unique=False,
        schema="app",
    )
    op.create_table(
        "suppressions",
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column(
            "reason",
            sa.Enum(
                "HARD_BOUNCE",
                "COMPLAINT",
                "UNSUBSCRIBE",
                "MANUAL",
                name="suppression_reason",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("email = lower(email)", name=op.f("ck_suppressions_email_lowercase")),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["app.tenants.id"],
            name=op.f("fk_suppressions_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suppressions")),
        sa.UniqueConstraint("tenant_id", "email", name=op.f("uq_suppressions_tenant_id_email")),
        schema="app",
    )
    op.create_table(
        "templates",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column(
            "variables",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="[]",
            nullable=False,
        ),
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "html IS NOT NULL OR text IS NOT NULL", name=op.f("ck_templates_has_body")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["app.tenants.id"],
            name=op.f("fk_templates_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_templates")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_templates_tenant_id_name")),
        schema="app",
    )
    op.create_index(
        "ix_templates_tenant_id_created_at",
        "templates",
        ["tenant_id", "created_at"],
        unique=False,
        schema="app",
    )
    op.create_table(
        "tenant_users",
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column(
            "role",
            sa.Enum(
                "OWNER",
                "ADMIN",
                "MEMBER",
                name="role",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["app.tenants.id"],
            name=op.f("fk_tenant_users_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["app.users.id"],
            name=op.f("fk_tenant_users_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "user_id", name=op.f("pk_tenant_users")),
        schema="app",
    )
    op.create_index(
        "ix_tenant_users_user_id", "tenant_users", ["user_id"], unique=False, schema="app"
    )
    op.create_table(
        "vps_instances",
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("provider_id", sa.String(length=64), nullable=True),
        sa.Column("region", sa.String(length=64), nullable=True),
        sa.Column("hostname", sa.String(length=253), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "REQUESTED",
                "PROVISIONING",
                "CONFIGURING_SMTP",
                "CONFIGURING_DNS",
                "WARMING_UP",
                "ACTIVE",
                "FAILED",
                "SUSPENDED",
                "DECOMMISSIONED",
                name="vps_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            server_default="REQUESTED",
            nullable=False,
        ),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("primary_ip", postgresql.INET(), nullable=True),
        sa.Column("smtp_host", sa.String(length=253), nullable=True),
        sa.Column("smtp_port", sa.Integer(), nullable=True),
        sa.Column(
            "config", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["app.tenants.id"],
            name=op.f("fk_vps_instances_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vps_instances")),
        sa.UniqueConstraint(
            "provider", "provider_id", name=op.f("uq_vps_instances_provider_provider_id")
        ),
        schema="app",
    )
    op.create_index(
        "ix_vps_instances_tenant_id_status",
        "vps_instances",
        ["tenant_id", "status"],
        unique=False,
        schema="app",
    )
    op.create_table(
        "campaign_sequence_steps",
        sa.Column("campaign_id", sa.UUID(), nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False),
        sa.Column("delay_days", sa.Integer(), server_default="0", nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("template_id", sa.UUID(), nullable=True),
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "delay_days >= 0", name=op.f("ck_campaign_sequence_steps_delay_not_negative")
        ),
        sa.CheckConstraint(
            "position >= 1", name=op.f("ck_campaign_sequence_steps_position_from_one")
        ),
        sa.CheckConstraint(
            "template_id IS NOT NULL OR html IS NOT NULL OR text IS NOT NULL",
            name=op.f("ck_campaign_sequence_steps_has_body"),
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["app.campaigns.id"],
            name=op.f("fk_campaign_sequence_steps_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["app.templates.id"],
            name=op.f("fk_campaign_sequence_steps_template_id_templates"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["app.tenants.id"],
            name=op.f("fk_campaign_sequence_steps_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaign_sequence_steps")),
        sa.UniqueConstraint(
            "campaign_id", "position", name=op.f("uq_campaign_sequence_steps_campaign_id_position")
        ),
        schema="app",
    )
    op.create_index(
        "ix_campaign_sequence_steps_tenant_id_campaign_id",
        "campaign_sequence_steps",
        ["tenant_id", "campaign_id"],
        unique=False,
        schema="app",
    )
    op.create_table(
        "leads",
        sa.Column("campaign_id", sa.UUID(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("first_name", sa.String(length=200), nullable=True),
        sa.Column("last_name", sa.String(length=200), nullable=True),
        sa.Column("company", sa.String(length=200), nullable=True),
        sa.Column(
            "fields", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column(
            "status",
            sa.Enum(
                "ACTIVE",
                "CONTACTED",
                "REPLIED",
                "BOUNCED",
                "UNSUBSCRIBED",
                "COMPLAINED",
                "FINISHED",
                name="lead_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            server_default="ACTIVE",
            nullable=False,
        ),
        sa.Column("current_step", sa.SmallInteger(), server_default="0", nullable=False),
        sa.Column("last_sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_message_id", sa.String(length=255), nullable=True),
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("current_step >= 0", name=op.f("ck_leads_step_not_negative")),
        sa.CheckConstraint("email = lower(email)", name=op.f("ck_leads_email_lowercase")),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["app.campaigns.id"],
            name=op.f("fk_leads_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["app.tenants.id"],
            name=op.f("fk_leads_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_leads")),
        sa.UniqueConstraint("campaign_id", "email", name=op.f("uq_leads_campaign_id_email")),
        schema="app",
    )
    op.create_index(
        "ix_leads_tenant_id_campaign_id_id",
        "leads",
        ["tenant_id", "campaign_id", "id"],
        unique=False,
        schema="app",
    )
    op.create_index(
        "ix_leads_tenant_id_campaign_id_status_id",
        "leads",
        ["tenant_id", "campaign_id", "status", "id"],
        unique=False,
        schema="app",
    )
    op.create_index(
        "ix_leads_tenant_id_email", "leads", ["tenant_id", "email"], unique=False, schema="app"
    )
    op.create_table(
        "payments",
        sa.Column("subscription_id", sa.UUID(), nullable=True),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), server_default="usd", nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "PENDING",
                "SUCCEEDED",
                "FAILED",
                "REFUNDED",
                name="payment_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("stripe_invoice_id", sa.String(length=64), nullable=True),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("amount_cents >= 0", name=op.f("ck_payments_amount_not_negative")),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["app.subscriptions.id"],
            name=op.f("fk_payments_subscription_id_subscriptions"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["app.tenants.id"],
            name=op.f("fk_payments_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
        sa.UniqueConstraint("stripe_invoice_id", name=op.f("uq_payments_stripe_invoice_id")),
        schema="app",
    )
    op.create_index(
        "ix_payments_tenant_id_created_at",
        "payments",
        ["tenant_id", "created_at"],
        unique=False,
        schema="app",
    )
    op.create_table(
        "smtp_ip_addresses",
        sa.Column("vps_id", sa.UUID(), nullable=True),
        sa.Column("address", postgresql.INET(), nullable=False),
        sa.Column("ptr_hostname", sa.String(length=253), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "PENDING",
                "WARMING_UP",
                "ACTIVE",
                "PAUSED",
                "BLACKLISTED",
                "RELEASED",
                name="ip_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            server_default="PENDING",
            nullable=False,
        ),
        sa.Column("reputation_score", sa.Integer(), server_default="100", nullable=False),
        sa.Column(
            "blacklisted_on",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="[]",
            nullable=False,
        ),
        sa.Column("last_checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "reputation_score BETWEEN 0 AND 100", name=op.f("ck_smtp_ip_addresses_reputation_range")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["app.tenants.id"],
            name=op.f("fk_smtp_ip_addresses_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["vps_id"],
            ["app.vps_instances.id"],
            name=op.f("fk_smtp_ip_addresses_vps_id_vps_instances"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_smtp_ip_addresses")),
        sa.UniqueConstraint("address", name=op.f("uq_smtp_ip_addresses_address")),
        schema="app",
    )
    op.create_index(
        "ix_smtp_ip_addresses_tenant_id_status",
        "smtp_ip_addresses",
        ["tenant_id", "status"],
        unique=False,
        schema="app",
    )
    op.create_index(
        "ix_smtp_ip_addresses_tenant_id_vps_id",
        "smtp_ip_addresses",
        ["tenant_id", "vps_id"],
        unique=False,
        schema="app",
    )
    op.create_table(
        "email_accounts",
        sa.Column("domain_id", sa.UUID(), nullable=False),
        sa.Column("ip_id", sa.UUID(), nullable=True),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "ACTIVE",
                "WARMING_UP",
                "PAUSED",
                "DISABLED",
                name="account_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            server_default="ACTIVE",
            nullable=False,
        ),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("daily_limit", sa.Integer(), server_default="50", nullable=False),
        sa.Column("smtp_host", sa.String(length=253), nullable=True),
        sa.Column("smtp_port", sa.Integer(), nullable=True),
        sa.Column("smtp_username", sa.String(length=320), nullable=True),
        sa.Column("smtp_password_encrypted", sa.LargeBinary(), nullable=True),
        sa.Column("encryption_key_id", sa.String(length=32), nullable=True),
        sa.Column("imap_host", sa.String(length=253), nullable=True),
        sa.Column("imap_port", sa.Integer(), nullable=True),
        sa.Column("imap_last_uid", sa.Integer(), nullable=True),
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "address = lower(address)", name=op.f("ck_email_accounts_address_lowercase")
        ),
        sa.CheckConstraint(
            "daily_limit >= 0", name=op.f("ck_email_accounts_daily_limit_not_negative")
        ),
        sa.ForeignKeyConstraint(
            ["domain_id"],
            ["app.domains.id"],
            name=op.f("fk_email_accounts_domain_id_domains"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["ip_id"],
            ["app.smtp_ip_addresses.id"],
            name=op.f("fk_email_accounts_ip_id_smtp_ip_addresses"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["app.tenants.id"],
            name=op.f("fk_email_accounts_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_accounts")),
        sa.UniqueConstraint(
            "tenant_id", "address", name=op.f("uq_email_accounts_tenant_id_address")
        ),
        schema="app",
    )
    op.create_index(
        "ix_email_accounts_tenant_id_domain_id",
        "email_accounts",
        ["tenant_id", "domain_id"],
        unique=False,
        schema="app",
    )
    op.create_index(
        "ix_email_accounts_tenant_id_status",
        "email_accounts",
        ["tenant_id", "status"],
        unique=False,
        schema="app",
    )
    op.create_table(
        "campaign_accounts",
        sa.Column("campaign_id", sa.UUID(), nullable=False),
        sa.Column("account_id", sa.UUID(), nullable=False),
        sa.Column("position", sa.SmallInteger(), server_default="0", nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["app.email_accounts.id"],
            name=op.f("fk_campaign_accounts_account_id_email_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["app.campaigns.id"],
            name=op.f("fk_campaign_accounts_campaign_id_campaigns"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["app.tenants.id"],
            name=op.f("fk_campaign_accounts_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("campaign_id", "account_id", name=op.f("pk_campaign_accounts")),
        schema="app",
    )
    op.create_index(
        "ix_campaign_accounts_tenant_id_account_id",
        "campaign_accounts",
        ["tenant_id", "account_id"],
        unique=False,
        schema="app",
    )
    op.create_table(
        "warmup_states",
        sa.Column("account_id", sa.UUID(), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("day", sa.Integer(), server_default="0", nullable=False),
        sa.Column("today_target", sa.Integer(), server_default="0", nullable=False),
        sa.Column("reputation", sa.Integer(), server_default="50", nullable=False),
        sa.Column("started_on", sa.Date(), nullable=True),
        sa.Column("last_tick_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "day >= 0 AND today_target >= 0", name=op.f("ck_warmup_states_counters_not_negative")
        ),
        sa.CheckConstraint(
            "reputation BETWEEN 0 AND 100", name=op.f("ck_warmup_states_reputation_range")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["app.email_accounts.id"],
            name=op.f("fk_warmup_states_account_id_email_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["app.tenants.id"],
            name=op.f("fk_warmup_states_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_warmup_states")),
        schema="app",
    )
    op.create_index(
        "ix_warmup_states_tenant_id_enabled",
        "warmup_states",
        ["tenant_id", "enabled"],
        unique=False,
        schema="app",
    )

    run_sql_file("roles.sql")
    run_sql_file("rls.sql")
    run_sql_file("grants.sql")


def downgrade() -> None:
    # Everything this revision made lives in the four schemas. The login roles are server-wide
    # and may serve other databases on the server, so they stay.
    for schema in reversed(SCHEMAS):
        op.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
