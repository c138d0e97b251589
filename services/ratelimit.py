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


# Sliding window in a sorted set: one member per hit, scored by its time. Atomic in Redis.
_SLIDING = """
local key, now, window, limit, member = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZCARD', key) < limit then
  redis.call('ZADD', key, now, member)
  redis.call('PEXPIRE', key, math.ceil(window * 1000))
  return '0'
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
return tostring(tonumber(oldest[2]) + window - now)
"""


async def acquire(redis: Redis, key: str, limit: int, window_seconds: float) -> float:
    """Takes one slot of `limit` per sliding `window_seconds`; returns 0 when taken, else how
    many seconds until the oldest hit leaves the window."""
    import time
    import uuid

    wait = await redis.eval(_SLIDING, 1, key, time.time(), window_seconds, limit, uuid.uuid4().hex)
    return max(0.0, float(wait))
