"""Sliding-window rate limits in Redis."""

from __future__ import annotations

import asyncio
import uuid

from redis.asyncio import Redis

from penguinmails.settings import Settings
from services.ratelimit import acquire, acquire_many


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


async def test_one_call_takes_each_request_s_slots_in_all_its_windows_or_in_none(
    settings: Settings,
) -> None:
    redis = Redis.from_url(settings.redis_url)
    a, b, ip = (f"test:rate:{name}:{uuid.uuid4().hex}" for name in ("a", "b", "ip"))
    try:
        sends = [[(a, 2), (ip, 3)]] * 3 + [[(b, 2), (ip, 3)]] * 2
        waits = await acquire_many(redis, sends, window_seconds=5)
        # a's third send finds a full and takes nothing, so b's first still gets the IP's third
        # slot; b's second finds the IP full.
        assert [w == 0 for w in waits] == [True, True, False, True, False]
        assert 0 < waits[2] <= 5 and 0 < waits[4] <= 5
        assert [await redis.zcard(k) for k in (a, b, ip)] == [2, 1, 3]
    finally:
        await redis.delete(a, b, ip)
        await redis.aclose()


async def test_a_limit_of_zero_never_gives_a_slot_and_says_to_ask_again_after_a_window(
    settings: Settings,
) -> None:
    redis = Redis.from_url(settings.redis_url)
    key = f"test:rate:zero:{uuid.uuid4().hex}"
    try:
        assert await acquire_many(redis, [[(key, 0)]], window_seconds=60) == [60.0]
        assert await redis.exists(key) == 0
    finally:
        await redis.aclose()
