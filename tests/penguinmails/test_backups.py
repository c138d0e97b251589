"""`penguinmails backup` and `penguinmails restore`, run as an operator runs them, against
databases of the test's own."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

import models
from models.sessions import Database
from penguinmails.settings import Settings
from tests.cli import run_cli
from tests.conftest import create_database, drop_database
from tests.factories import create_row, create_tenant

# Every table's row count and a checksum of its rows, in a stable order.
TABLES_SQL = """
SELECT schemaname || '.' || tablename FROM pg_tables
WHERE schemaname IN ('app', 'content', 'queue', 'analytics', 'public') ORDER BY 1
"""


async def _contents(url: str) -> dict[str, tuple[int, str]]:
    conn = await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(False))
    try:
        tables = [r[0] for r in await conn.fetch(TABLES_SQL)]
        return {
            name: tuple(
                await conn.fetchrow(
                    f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
                    f" FROM {name} t"
                )
            )
            for name in tables
        }
    finally:
        await conn.close()


async def _fill_every_table(settings: Settings) -> None:
    """A row in every table of the models (with the parents each needs), as the system role."""
    db = Database(settings)
    try:
        async with db.system_session() as s:
            tenant = await create_tenant(s, "Backed up")
            for tbl in models.Base.metadata.sorted_tables:
                await create_row(s, tbl, tenant if "tenant_id" in tbl.c else None)
    finally:
        await db.dispose()


def _damaged_copies(file: Path) -> tuple[Path, Path]:
    """The backup with a byte of a dump's rows changed, and its first half alone."""
    data = bytearray(file.read_bytes())
    data[data.index(b"PGDMP") + len(data) // 3] ^= 0xFF
    damaged, cut = file.with_name("damaged.tar"), file.with_name("cut.tar")
    damaged.write_bytes(bytes(data))
    cut.write_bytes(data[: len(data) // 2])
    return damaged, cut


async def test_a_backup_restores_every_table_as_it_was(
    own_database: Settings, tmp_path: Path
) -> None:
    await _fill_every_table(own_database)
    before = await _contents(own_database.database_url)
    code, out, err = await run_cli(own_database, "backup", "--dir", str(tmp_path))
    assert code == 0, err
    file = Path(out.strip())
    assert file.parent == tmp_path and file.name.startswith("penguinmails-")
    assert "backed up" in err and "tables" in err  # the progress line

    empty = await asyncio.to_thread(create_database, "pm_restored")
    try:
        elsewhere = own_database.model_copy(update={"database_url": empty})
        code, out, err = await run_cli(elsewhere, "restore", str(file))
        assert code == 0, err
        assert await _contents(empty) == before
    finally:
        await asyncio.to_thread(drop_database, empty)

    conn = await asyncpg.connect(own_database.database_url)
    try:  # an operator's mistake: rows deleted and changed, a table dropped
        await conn.execute("DELETE FROM queue.jobs; UPDATE app.tenants SET name = 'changed'")
        await conn.execute("DROP TABLE content.email_events")
    finally:
        await conn.close()
    code, _, err = await run_cli(own_database, "restore", str(file))
    assert code == 2
    assert "--force" in err and len(err.strip().splitlines()) == 1
    damaged, cut = _damaged_copies(file)
    for bad, reason in [(damaged, "damaged"), (cut, "cut short")]:
        code, _, err = await run_cli(own_database, "restore", "--force", str(bad))
        assert code == 2 and reason in err and len(err.strip().splitlines()) == 1, err
    code, _, err = await run_cli(own_database, "restore", "--force", str(file))
    assert code == 0, err
    assert await _contents(own_database.database_url) == before
    assert sum(count for count, _ in before.values()) >= len(models.Base.metadata.tables)


async def test_restore_refuses_a_missing_damaged_or_foreign_file_in_one_line(
    settings: Settings, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a backup at all\n" * 50)
    for path, reason in [
        (tmp_path / "missing.tar", "no such file"),
        (junk, "not a backup"),
    ]:
        code, _, err = await run_cli(settings, "restore", str(path))
        assert code == 2, err
        assert reason in err and len(err.strip().splitlines()) == 1


async def test_the_scheduler_backs_up_once_a_day_and_keeps_the_newest(
    own_database: Settings, tmp_path: Path
) -> None:
    from jobs.scheduler import back_up_databases

    settings = own_database.model_copy(update={"backup_dir": tmp_path, "backup_keep": 2})
    _old_backups(tmp_path, ["20260101T000000Z", "20260102T000000Z", "20260103T000000Z"])
    written = await back_up_databases(settings)
    again = await back_up_databases(settings)  # the next hour's check, the same day
    assert again is None
    assert written is not None
    kept = sorted(os.listdir(tmp_path))
    assert kept == ["penguinmails-20260103T000000Z.tar", Path(written).name]


def _old_backups(directory: Path, stamps: list[str]) -> None:
    """Backups written days ago (their files' times too)."""
    for stamp in stamps:
        path = directory / f"penguinmails-{stamp}.tar"
        path.write_bytes(b"an old backup")
        os.utime(path, (path.stat().st_mtime - 3 * 86400,) * 2)
