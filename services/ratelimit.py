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


# Sliding windows in sorted sets: one member per hit, scored by its time. One call takes a slot
# in every window a request names (an account's and its IP's), or in none of them, for each
# request in order; atomic in Redis. ARGV[3] is JSON: per request, [key index, limit] pairs.
_SLIDING = """
local now, window, prefix = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[4]
local requests = cjson.decode(ARGV[3])
local trimmed, waits = {}, {}
for i, request in ipairs(requests) do
  local wait = 0
  for _, limit in ipairs(request) do
    local key = KEYS[limit[1]]
    if not trimmed[key] then
      redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
      trimmed[key] = true
    end
    if redis.call('ZCARD', key) >= limit[2] then
      local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      if oldest[2] then
        wait = math.max(wait, tonumber(oldest[2]) + window - now, 0.001)
      else  -- a limit of 0: never a slot; ask again after a window
        wait = math.max(wait, window)
      end
    end
  end
  if wait == 0 then
    for _, limit in ipairs(request) do
      redis.call('ZADD', KEYS[limit[1]], now, prefix .. ':' .. i)
      redis.call('PEXPIRE', KEYS[limit[1]], math.ceil(window * 1000))
    end
  end
  waits[i] = tostring(wait)
end
return waits
"""


async def acquire_many(
    redis: Redis, requests: list[list[tuple[str, int]]], window_seconds: float
) -> list[float]:
    """For each request (its (key, limit) windows), one slot in all of its windows of `limit`
    per sliding `window_seconds`, in order: 0 where taken, else the seconds until the fullest
    window has room. One round trip for the lot."""
    import json
    import time
    import uuid

    keys: dict[str, int] = {}
    encoded = [
        [[keys.setdefault(key, len(keys) + 1), limit] for key, limit in request]
        for request in requests
    ]
    waits = await redis.eval(
        _SLIDING, len(keys), *keys, time.time(), window_seconds, json.dumps(encoded),
        uuid.uuid4().hex,
    )  # fmt: skip
    return [max(0.0, float(w)) for w in waits]


async def acquire(redis: Redis, key: str, limit: int, window_seconds: float) -> float:
    """Takes one slot of `limit` per sliding `window_seconds`; returns 0 when taken, else how
    many seconds until the oldest hit leaves the window."""
    [wait] = await acquire_many(redis, [[(key, limit)]], window_seconds)
    return wait
