"""Real services for the suite.

Before collection: the PostgreSQL and Redis named by DATABASE_URL / REDIS_URL, or the embedded
ones when unset; a fresh database for this session, migrated to head, dropped at the end.
`DATABASE_URL` then names that database, so every process a test starts uses it too.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import pytest
from playwright.async_api import Browser, async_playwright
from sqlalchemy.engine import make_url

from models.sessions import Database
from penguinmails import embedded, migrations
from penguinmails.settings import Settings, get_settings

_state: dict = {}


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("PENGUINMAILS_ENVIRONMENT", "test")
    # The suite's requests all come from loopback, many a second; the tests of the API's rate
    # limits serve the app with limits of their own. Loopback is the suite's proxy: a test
    # speaks for a client with X-Forwarded-For.
    os.environ.setdefault("PENGUINMAILS_API_RATE_PER_IP", "1000000")
    os.environ.setdefault("PENGUINMAILS_API_RATE_PER_TOKEN", "1000000")
    os.environ.setdefault("PENGUINMAILS_TRUSTED_PROXIES", "127.0.0.1")
    get_settings.cache_clear()
    services = embedded.ensure_services(get_settings())
    os.environ.update(services.env)
    _state["started"] = services.started
    # The queue's keys of this session, apart from any other user of the same Redis.
    os.environ["PENGUINMAILS_REDIS_NAMESPACE"] = f"pmtest-{uuid.uuid4().hex[:8]}"
    # The local hosting provider's instances and the zone files DNS records are published to:
    # this session's own, in a directory removed at its end.
    infra = Path(tempfile.mkdtemp(prefix="pm-infra-"))
    _state["infra_dir"] = infra
    os.environ["PENGUINMAILS_LOCAL_HOSTING_STATE"] = str(infra / "local-hosting.json")
    os.environ["PENGUINMAILS_LOCAL_HOSTING_NETWORK"] = "127.77.0.0/16"
    os.environ["PENGUINMAILS_DNS_ZONE_DIR"] = str(infra / "zones")
    server_url = os.environ["DATABASE_URL"]
    name = f"pm_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
    _state["server_url"] = server_url
    _state["database"] = name
    os.environ["DATABASE_URL"] = _with_database(server_url, name)
    get_settings.cache_clear()
    migrations.upgrade(get_settings())
    asyncio.run(_apply_plan_catalogue())


async def _apply_plan_catalogue() -> None:
    """The plans are reference data every tenant needs (sign-up puts tenants on the entry plan);
    `penguinmails migrate` applies them the same way."""
    from services import plan_catalogue

    settings = get_settings()
    db = Database(settings)
    try:
        async with db.system_session() as session:
            await plan_catalogue.apply(session, plan_catalogue.load(settings.plan_catalogue))
    finally:
        await db.dispose()


def pytest_unconfigure(config: pytest.Config) -> None:
    if "database" in _state:
        asyncio.run(
            _admin(
                _state["server_url"], f'DROP DATABASE IF EXISTS "{_state["database"]}" WITH (FORCE)'
            )
        )
    embedded.stop_services(get_settings(), _state.get("started", []))
    if "infra_dir" in _state:
        shutil.rmtree(_state["infra_dir"], ignore_errors=True)


async def _admin(server_url: str, sql: str) -> None:
    conn = await asyncpg.connect(_with_database(server_url, "postgres"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def create_database(prefix: str = "pm_scratch") -> str:
    """Another empty database on the test server (for tests that migrate from scratch)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(_state["server_url"], f'CREATE DATABASE "{name}"'))
    return _with_database(_state["server_url"], name)


def drop_database(url: str) -> None:
    name = make_url(url).database
    asyncio.run(_admin(_state["server_url"], f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def migrated_database(settings: Settings, prefix: str = "pm_own") -> Iterator[Settings]:
    """Settings for a migrated database of its own, with no plans; dropped after."""
    url = create_database(prefix)
    own = settings.model_copy(update={"database_url": url})
    migrations.upgrade(own)
    try:
        yield own
    finally:
        drop_database(url)


@pytest.fixture
def own_database(settings: Settings) -> Iterator[Settings]:
    """A migrated database of the test's own (migrated_database)."""
    with migrated_database(settings) as own:
        yield own


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings)
    yield database
    await database.dispose()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow crash and load tests run in CI like the rest, together at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is not None)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Headless Debian chromium driven by Playwright (its own browser download is not
    reachable here); `--no-sandbox` as the suite runs as root in CI."""

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(embedded.chromium_binary()), args=["--no-sandbox"]
        )
        yield chromium
        await chromium.close()
