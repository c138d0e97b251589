"""Applies Alembic migrations (sql/migrations) to every database the tiers live on."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from penguinmails.settings import PROJECT_ROOT, Settings


def alembic_config(url: str, settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(PROJECT_ROOT / "sql" / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["settings"] = settings
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    for url in settings.owner_urls():
        command.upgrade(alembic_config(url, settings), revision)


def downgrade(settings: Settings, revision: str = "base") -> None:
    for url in settings.owner_urls():
        command.downgrade(alembic_config(url, settings), revision)


def run_sql_file(filename: str) -> None:
    """Inside a migration: run every named statement of `sql/<filename>`, with the role names
    and passwords from settings available to the SQL as `penguinmails.*` settings."""
    from alembic import context, op
    from sqlalchemy import text

    from models.sqlfiles import statements
    from penguinmails.settings import get_settings

    settings: Settings = context.config.attributes.get("settings") or get_settings()
    bind = op.get_bind()
    for key, value in role_settings(settings).items():
        bind.execute(text("SELECT set_config(:k, :v, true)"), {"k": key, "v": value})
    for sql in statements(filename).values():
        bind.exec_driver_sql(sql)


def role_settings(settings: Settings) -> dict[str, str]:
    """The `penguinmails.*` settings sql/roles.sql and sql/grants.sql read."""
    return {
        "penguinmails.app_role": settings.app_db_role,
        "penguinmails.system_role": settings.system_db_role,
        "penguinmails.app_password": _secret(settings.app_db_password),
        "penguinmails.system_password": _secret(settings.system_db_password),
    }


def _secret(value) -> str:
    return value.get_secret_value() if value else ""
