"""invitations: a role offered to an email address, a membership only once its user accepts;
the addressee reads it (policy invitee_read) and the inviting tenant's name
(app.invited_tenant_names())

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from penguinmails.migrations import run_sql_file

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=32)


def upgrade() -> None:
    op.create_table(
        "invitations",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("tenant_id", sa.UUID(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("role", _enum("role", "OWNER", "ADMIN", "MEMBER"), nullable=False),
        sa.Column(
            "status",
            _enum("invitation_status", "PENDING", "ACCEPTED", "DECLINED", "REVOKED"),
            server_default="PENDING",
            nullable=False,
        ),
        sa.Column("invited_by", sa.UUID(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
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
        sa.CheckConstraint("email = lower(email)", name=op.f("ck_invitations_email_lowercase")),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["app.tenants.id"],
            name=op.f("fk_invitations_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["invited_by"],
            ["app.users.id"],
            name=op.f("fk_invitations_invited_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invitations")),
        schema="app",
    )
    op.create_index(
        "uq_invitations_tenant_id_email_pending", "invitations", ["tenant_id", "email"],
        unique=True, schema="app", postgresql_where=sa.text("status = 'PENDING'"),
    )  # fmt: skip
    op.create_index("ix_invitations_email", "invitations", ["email"], schema="app")
    run_sql_file("rls.sql")  # tenant_isolation on the new table
    run_sql_file("invitations.sql")
    run_sql_file("grants.sql")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS app.invited_tenant_names()")
    op.drop_table("invitations", schema="app")  # its policies and indexes with it
