"""Account e-mails: users.email_verified_at (the users that exist are taken as verified), the
single-use tokens mailed to users (app.user_tokens, hashes only, the system role's), and
queue.enqueue_account_mail() for the platform jobs that send them.

Revision ID: 0020
Revises: 0019
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from penguinmails.migrations import run_sql_file

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("email_verified_at", sa.DateTime(timezone=True)), schema="app")
    # Accounts made before verification existed keep launching as they did.
    op.execute("UPDATE app.users SET email_verified_at = created_at")
    op.create_table(
        "user_tokens",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column(
            "purpose",
            sa.Enum(
                "VERIFY_EMAIL",
                "RESET_PASSWORD",
                name="token_purpose",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["app.users.id"],
            name=op.f("fk_user_tokens_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_user_tokens_token_hash")),
        schema="app",
    )
    op.create_index(
        "ix_user_tokens_user_id_purpose", "user_tokens", ["user_id", "purpose"], schema="app"
    )
    run_sql_file("account_mail.sql")
    run_sql_file("grants.sql")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS queue.enqueue_account_mail(jsonb, text)")
    op.drop_table("user_tokens", schema="app")
    op.drop_column("users", "email_verified_at", schema="app")
