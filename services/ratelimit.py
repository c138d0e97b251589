"""Fixed-window attempt counters in Redis (log-in attempts per email and per IP)."""

from __future__ import annotations

from redis.asyncio import Redis


async def hits(redis: Redis, key: str) -> int:
    value = await redis.get(key)
    return int(value or 0)


async def record_hit(redis: Redis, key: str, window_seconds: int) -> int:
    """Count one hit; the window starts with the first hit and expires with it."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(key, 0, ex=window_seconds, nx=True)  # (EXPIRE … NX needs Redis 7)
        pipe.incr(key)
        _, count = await pipe.execute()
    return int(count)
