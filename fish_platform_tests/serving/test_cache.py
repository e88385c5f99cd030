"""The prediction cache: in-process LRU and a real redis-server (stopped and started again)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from serving.cache import (
    CacheConfig,
    CacheState,
    InProcessLRUCache,
    RedisCache,
    build_cache,
    cache_key,
    explain_key,
)

pytestmark = pytest.mark.timeout(60)

VALUE = {"model_version": "3", "top3": [{"species": "Trout", "confidence": 0.9}]}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(coro):
    return asyncio.run(coro)


def test_key_separates_model_versions():
    sha = "ab" * 32
    assert cache_key("fish", "1", sha) != cache_key("fish", "2", sha)
    assert cache_key("fish", "1", sha).endswith(f":fish:1:{sha}")


def test_lru_hit_miss_ttl_and_eviction():
    events: list[str] = []
    clock = FakeClock()
    cache = InProcessLRUCache(max_items=2, ttl_seconds=10, on_event=events.append, clock=clock)

    async def scenario():
        assert await cache.get("a") is None
        await cache.set("a", VALUE)
        assert await cache.get("a") == VALUE
        await cache.set("b", VALUE)
        await cache.get("a")  # "a" is now the most recently used
        await cache.set("c", VALUE)  # evicts "b"
        assert await cache.get("b") is None
        assert await cache.get("a") == VALUE
        clock.now += 11
        assert await cache.get("a") is None  # expired

    run(scenario())
    assert events == ["miss", "hit", "hit", "miss", "hit", "miss"]
    assert len(cache) == 1  # "c" left; expired "a" dropped on read


def test_lru_returns_copies():
    cache = InProcessLRUCache()

    async def scenario():
        await cache.set("k", VALUE)
        got = await cache.get("k")
        got["model_version"] = "changed"
        return await cache.get("k")

    assert run(scenario())["model_version"] == "3"


def test_without_redis_url_the_log_says_in_process(caplog):
    with caplog.at_level(logging.INFO, logger="serving.cache"):
        cache = build_cache(CacheConfig(redis_url=None))
    assert cache.backend == "memory"
    assert "in-process LRU" in caplog.text and "REDIS_URL not set" in caplog.text


def test_redis_round_trip_with_ttl(redis_server):
    events: list[str] = []
    cache = build_cache(CacheConfig(redis_url=redis_server.url, ttl_seconds=77), on_event=events.append)
    assert isinstance(cache, RedisCache)

    async def scenario():
        key = cache_key("fish", "1", "cd" * 32)
        assert await cache.get(key) is None
        await cache.set(key, VALUE)
        assert await cache.get(key) == VALUE
        await cache.close()
        return key

    key = run(scenario())
    assert events == ["miss", "hit"]
    assert 0 < redis_server.client().ttl(key) <= 77


def test_redis_down_is_a_counted_miss_and_recovers(redis_server):
    """Stop the real Redis: no exception, 'error' events, breaker; start it: cache works again."""
    events: list[str] = []
    clock = FakeClock()
    cache = RedisCache(
        redis_server.url, ttl_seconds=60, retry_after_s=2.0, on_event=events.append, clock=clock
    )
    key = cache_key("fish", "1", "ef" * 32)

    async def scenario():
        await cache.set(key, VALUE)
        assert await cache.get(key) == VALUE
        redis_server.stop()
        try:
            assert await cache.get(key) is None  # fails fast, counted
            assert not cache.available  # breaker open: Redis left alone for a while
            await cache.set(key, VALUE)  # skipped silently
            assert await cache.get(key) is None
        finally:
            redis_server.start()
        clock.now += 2.5  # breaker closes; a fresh connection is opened
        await cache.set(key, VALUE)  # the restarted Redis is empty
        assert await cache.get(key) == VALUE
        await cache.close()

    run(scenario())
    assert events == ["hit", "error", "error", "hit"]


def test_redis_password_is_not_logged(caplog):
    with caplog.at_level(logging.INFO, logger="serving.cache"):
        build_cache(CacheConfig(redis_url="redis://app:s3cret@redis.internal:6379/0"))
    fields = [getattr(record, "fields", {}) for record in caplog.records]
    assert {"url": "redis://app:***@redis.internal:6379/0"}.items() <= fields[-1].items()
    assert "s3cret" not in repr(fields)


def test_state_says_whether_redis_answers(redis_server):
    """What /readyz reports: the real Redis up, killed, and back."""
    cache = RedisCache(redis_server.url, ttl_seconds=60, retry_after_s=30.0)

    async def scenario():
        assert await InProcessLRUCache().state() == CacheState("memory", "memory")
        assert await cache.state() == CacheState("redis", "redis")
        redis_server.stop()
        try:
            down = await cache.state()
            assert down.state == "redis_unavailable" and down.error
            assert not cache.available  # the failed PING opens the breaker, as a failed GET does
        finally:
            redis_server.start()
        assert await cache.state() == CacheState("redis", "redis")
        assert cache.available  # a PING that succeeds closes it at once, without waiting 30 s
        await cache.close()

    run(scenario())


def test_explain_keys_separate_species_and_versions():
    keys = {
        explain_key("fish", "1", "ab" * 32, None),
        explain_key("fish", "1", "ab" * 32, "Trout"),
        explain_key("fish", "2", "ab" * 32, "Trout"),
        cache_key("fish", "1", "ab" * 32),
    }
    assert len(keys) == 4
