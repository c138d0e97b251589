"""The embedded PostgreSQL and Redis: started from the wheels on loopback, reused, stopped."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import asyncpg
import pytest
import redis

from penguinmails import embedded


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _server_facts(url: str) -> tuple[str, str]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval("SHOW listen_addresses"), await conn.fetchval(
            "SHOW server_version"
        )
    finally:
        await conn.close()


def test_embedded_postgres_starts_on_loopback_is_reused_and_stops(tmp_path: Path) -> None:
    port = _free_port()
    first = embedded.ensure_postgres(tmp_path, port)
    try:
        listen, version = asyncio.run(_server_facts(first.url))
        again = embedded.ensure_postgres(tmp_path, port)
    finally:
        embedded.stop_postgres(tmp_path)
    assert first.started and not again.started and again.url == first.url
    assert listen == "127.0.0.1" and f":{port}/" in first.url
    assert int(version.split(".")[0]) >= 15
    with pytest.raises(OSError):
        asyncio.run(asyncpg.connect(first.url, timeout=2))


def test_embedded_redis_starts_on_loopback_keeps_data_dir_and_stops(tmp_path: Path) -> None:
    port = _free_port()
    first = embedded.ensure_redis(tmp_path, port)
    try:
        client = redis.Redis.from_url(first.url)
        client.set("k", "v")
        bind = client.config_get("bind")["bind"]
        again = embedded.ensure_redis(tmp_path, port)
    finally:
        embedded.stop_redis(tmp_path, port)
    assert first.started and not again.started
    assert bind == "127.0.0.1"
    assert (tmp_path / "redis" / "dump.rdb").exists()  # saved on shutdown, loaded next start
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(first.url).ping()
