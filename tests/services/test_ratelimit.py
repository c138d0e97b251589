"""Sliding-window rate limits in Redis."""

from __future__ import annotations

import asyncio
import uuid

from redis.asyncio import Redis

from penguinmails.settings import Settings
from services.ratelimit import acquire


async def test_a_sliding_window_admits_the_limit_then_says_how_long_to_wait(
    settings: Settings,
) -> None:
    redis = Redis.from_url(settings.redis_url)
    key = f"test:rate:{uuid.uuid4().hex}"
    try:
        taken = [await acquire(redis, key, limit=3, window_seconds=0.5) for _ in range(3)]
        wait = await acquire(redis, key, limit=3, window_seconds=0.5)
        assert taken == [0.0, 0.0, 0.0]
        assert 0 < wait <= 0.5
        await asyncio.sleep(wait + 0.05)  # the oldest hit has left the window
        assert await acquire(redis, key, limit=3, window_seconds=0.5) == 0.0
    finally:
        await redis.delete(key)
        await redis.aclose()
