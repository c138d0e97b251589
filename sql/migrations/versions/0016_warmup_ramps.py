"""Warm-up (services/warmup.py): each account's ramp on app.warmup_states (start, daily_increase,
max, reply_rate, and hold_days, the days a stepped-back ramp still waits before it grows again),
and app.warmup_messages, the warm-up mail exchanged between a tenant's accounts: planned, sent,
found in the receiving mailbox, answered. The ramp's own reputation column goes: the account's
reputation_score (0015) is the one number.

Revision ID: 0016
Revises: 0015
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from penguinmails.migrations import run_sql_file

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RAMP = (
    ("start", sa.Integer, "10", "start >= 1", "start_positive"),
    ("daily_increase", sa.Integer, "2", "daily_increase >= 0", "increase_not_negative"),
    ("max", sa.Integer, "40", "max >= start", "max_not_below_start"),
    ("reply_rate", sa.Double, "0.3", "reply_rate BETWEEN 0 AND 1", "reply_rate_range"),
    ("hold_days", sa.Integer, "0", "hold_days >= 0", "hold_not_negative"),
)
STATUSES = ("PLANNED", "SENDING", "SENT", "BOUNCED", "CANCELLED")


def upgrade() -> None:
    for name, kind, default, check, check_name in RAMP:
        op.add_column(
            "warmup_states",
            sa.Column(name, kind(), nullable=False, server_default=default),
            schema="app",
        )
        op.create_check_constraint(
            op.f(f"ck_warmup_states_{check_name}"), "warmup_states", check, schema="app"
        )
    op.drop_column("warmup_states", "reputation", schema="app")  # its CHECK goes with it

    timestamp = sa.DateTime(timezone=True)
    op.create_table(
        "warmup_messages",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("from_account_id", sa.UUID(), nullable=False),
        sa.Column("to_account_id", sa.UUID(), nullable=False),
        sa.Column("reply_to_id", sa.UUID(), nullable=True),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.Column("message_id_header", sa.String(length=255), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                *STATUSES, name="warmup_message_status", native_enum=False,
                create_constraint=True, length=32,
            ),
            server_default="PLANNED",
            nullable=False,
        ),  # fmt: skip
        sa.Column("send_at", timestamp, nullable=False),
        sa.Column("sent_at", timestamp, nullable=True),
        sa.Column("smtp_response", sa.Text(), nullable=True),
        sa.Column("received_at", timestamp, nullable=True),
        sa.Column("replied_at", timestamp, nullable=True),
        sa.Column("created_at", timestamp, server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", timestamp, server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "from_account_id <> to_account_id", name=op.f("ck_warmup_messages_not_to_itself")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["app.tenants.id"],
            name=op.f("fk_warmup_messages_tenant_id_tenants"), ondelete="CASCADE",
        ),  # fmt: skip
        sa.ForeignKeyConstraint(
            ["from_account_id"], ["app.email_accounts.id"],
            name=op.f("fk_warmup_messages_from_account_id_email_accounts"), ondelete="CASCADE",
        ),  # fmt: skip
        sa.ForeignKeyConstraint(
            ["to_account_id"], ["app.email_accounts.id"],
            name=op.f("fk_warmup_messages_to_account_id_email_accounts"), ondelete="CASCADE",
        ),  # fmt: skip
        sa.ForeignKeyConstraint(
            ["reply_to_id"], ["app.warmup_messages.id"],
            name=op.f("fk_warmup_messages_reply_to_id_warmup_messages"), ondelete="CASCADE",
        ),  # fmt: skip
        sa.PrimaryKeyConstraint("id", name=op.f("pk_warmup_messages")),
        sa.UniqueConstraint("token", name=op.f("uq_warmup_messages_token")),
        sa.UniqueConstraint(
            "message_id_header", name=op.f("uq_warmup_messages_message_id_header")
        ),
        sa.UniqueConstraint("reply_to_id", name=op.f("uq_warmup_messages_reply_to_id")),
        schema="app",
    )
    for columns in (
        ("tenant_id", "day"),
        ("tenant_id", "from_account_id", "sent_at"),
        ("tenant_id", "to_account_id", "received_at"),
    ):
        op.create_index(
            op.f(f"ix_warmup_messages_{'_'.join(columns)}"), "warmup_messages", list(columns),
            schema="app",
        )  # fmt: skip
    run_sql_file("rls.sql")  # tenant_isolation on the new table
    run_sql_file("grants.sql")


def downgrade() -> None:
    op.drop_table("warmup_messages", schema="app")
    op.add_column(
        "warmup_states",
        sa.Column("reputation", sa.Integer(), nullable=False, server_default="50"),
        schema="app",
    )
    op.create_check_constraint(
        op.f("ck_warmup_states_reputation_range"), "warmup_states",
        "reputation BETWEEN 0 AND 100", schema="app",
    )  # fmt: skip
    for name, *_ in reversed(RAMP):
        op.drop_column("warmup_states", name, schema="app")
