"""Prediction cache: Redis when ``REDIS_URL`` is set, an in-process LRU otherwise.

Key = registered model name + model version + sha256 of the uploaded bytes, so a promotion never
serves an answer of the previous model and identical photos cost one model call per TTL.

The cache is an optimisation, never a dependency: every Redis failure is swallowed, counted
(``on_event("error")``) and answered as a miss. After a failure Redis is left alone for
``retry_after_s`` (a small circuit breaker, so a dead Redis costs no timeout per request); the next
call after that tries again, and redis-py opens a fresh connection, so the cache heals by itself
when Redis comes back.

This module imports nothing from BentoML; the service injects ``on_event`` to count events.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from fish_platform.logs import log_event
from fish_platform.settings import ServingSettings
from serving.config import redact_url

log = logging.getLogger("serving.cache")

CacheEvent = Callable[[str], None]  # "hit" | "miss" | "error"


def _ignore(_: str) -> None:
    return None


@dataclass(frozen=True)
class CacheConfig:
    redis_url: str | None = None
    ttl_seconds: int = 3600
    max_items: int = 10_000  # in-process LRU only
    socket_timeout_s: float = 0.05
    retry_after_s: float = 2.0

    @classmethod
    def from_settings(cls, settings: ServingSettings) -> CacheConfig:
        return cls(
            redis_url=settings.redis_url,
            ttl_seconds=settings.cache_ttl_seconds,
            max_items=settings.cache_max_items,
            socket_timeout_s=settings.redis_timeout_seconds,
        )


KEY_PREFIX = "fish:pred"
EXPLAIN_PREFIX = "fish:explain"
TOP1 = "@top1"  # the species part of an explanation's key when none was asked for


def cache_key(model_name: str, model_version: str, image_sha256: str) -> str:
    """One answer per model version and image content: a new version never sees an old answer."""
    return f"{KEY_PREFIX}:{model_name}:{model_version}:{image_sha256}"


def explain_key(model_name: str, model_version: str, image_sha256: str, species: str | None) -> str:
    """One heat map per model version, image content and species (``None``: the top-1)."""
    return f"{EXPLAIN_PREFIX}:{model_name}:{model_version}:{image_sha256}:{species or TOP1}"


@dataclass(frozen=True)
class CacheState:
    """What ``/readyz`` reports: ``state`` is ``memory``, ``redis`` (reachable) or ``redis_unavailable``."""

    backend: str
    state: str
    error: str | None = None


class PredictionCache(Protocol):
    """What the service needs from a cache; values are JSON-serialisable dicts."""

    backend: str

    async def get(self, key: str) -> dict[str, Any] | None: ...

    async def set(self, key: str, value: dict[str, Any]) -> None: ...

    async def close(self) -> None: ...

    async def state(self) -> CacheState: ...


class InProcessLRUCache:
    """Bounded LRU with per-entry TTL, for one process (the embedded mode and tests)."""

    backend = "memory"

    def __init__(
        self,
        max_items: int = 10_000,
        ttl_seconds: float = 3600,
        on_event: CacheEvent = _ignore,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_items = max_items
        self.ttl_seconds = ttl_seconds
        self._on_event = on_event
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    async def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            entry = self._items.get(key)
            if entry is not None and entry[0] <= self._clock():
                del self._items[key]
                entry = None
            if entry is not None:
                self._items.move_to_end(key)
        self._on_event("hit" if entry is not None else "miss")
        return dict(entry[1]) if entry is not None else None

    async def set(self, key: str, value: dict[str, Any]) -> None:
        with self._lock:
            self._items[key] = (self._clock() + self.ttl_seconds, dict(value))
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    async def close(self) -> None:
        with self._lock:
            self._items.clear()

    async def state(self) -> CacheState:
        return CacheState(self.backend, "memory")


class RedisCache:
    """Redis with short socket timeouts; failures become misses (counted), never errors."""

    backend = "redis"

    def __init__(
        self,
        url: str,
        ttl_seconds: int = 3600,
        socket_timeout_s: float = 0.05,
        retry_after_s: float = 2.0,
        on_event: CacheEvent = _ignore,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.url = url
        self.ttl_seconds = ttl_seconds
        self.retry_after_s = retry_after_s
        self._on_event = on_event
        self._clock = clock
        self._down_until = 0.0
        self._was_down = False
        self._client = aioredis.Redis.from_url(
            url,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            # No client-side retries (redis-py retries 3x with backoff by default): a failure is a
            # miss at once, and the breaker above decides when to try again.
            retry=Retry(NoBackoff(), 0),
            health_check_interval=30,
        )

    @property
    def available(self) -> bool:
        """False while the circuit breaker keeps Redis out of the request path."""
        return self._clock() >= self._down_until

    async def _failed(self, op: str, exc: BaseException) -> None:
        self._on_event("error")
        self._down_until = self._clock() + self.retry_after_s
        try:  # pooled connections to a Redis that went away are dead too: don't fail on each later
            await self._client.connection_pool.disconnect(inuse_connections=False)
        except Exception:  # noqa: BLE001
            pass
        if not self._was_down:
            log_event(
                log,
                "redis unavailable, answering uncached",
                logging.WARNING,
                op=op,
                error=f"{type(exc).__name__}: {exc}",
                retry_after_s=self.retry_after_s,
            )
        self._was_down = True

    def _succeeded(self) -> None:
        if self._was_down:
            log_event(log, "redis reachable again, cache back in use")
            self._was_down = False

    async def get(self, key: str) -> dict[str, Any] | None:
        if not self.available:
            self._on_event("error")
            return None
        try:
            raw = await self._client.get(key)
        except Exception as exc:  # noqa: BLE001 - any Redis trouble means "uncached"
            await self._failed("get", exc)
            return None
        self._succeeded()
        if raw is None:
            self._on_event("miss")
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            self._on_event("miss")
            return None
        self._on_event("hit")
        return value

    async def set(self, key: str, value: dict[str, Any]) -> None:
        if not self.available:
            return
        try:
            await self._client.set(key, json.dumps(value, separators=(",", ":")), ex=self.ttl_seconds)
        except Exception as exc:  # noqa: BLE001
            await self._failed("set", exc)
            return
        self._succeeded()

    async def state(self) -> CacheState:
        """Ask Redis now (PING, within the socket timeout): reachable, or why not."""
        try:
            await self._client.ping()
        except Exception as exc:  # noqa: BLE001 - any failure means "not usable now"
            await self._failed("ping", exc)
            return CacheState(self.backend, "redis_unavailable", f"{type(exc).__name__}: {exc}"[:200])
        self._succeeded()
        self._down_until = 0.0  # reachable again: no need to wait out the breaker
        return CacheState(self.backend, "redis")

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except Exception:  # noqa: BLE001 - closing a broken connection must not fail shutdown
            pass


def build_cache(config: CacheConfig, on_event: CacheEvent = _ignore) -> PredictionCache:
    """Redis when ``config.redis_url`` is set, else the in-process LRU; the log says which."""
    if config.redis_url:
        log_event(
            log,
            "prediction cache: redis",
            url=redact_url(config.redis_url),
            ttl_s=config.ttl_seconds,
            socket_timeout_s=config.socket_timeout_s,
        )
        return RedisCache(
            config.redis_url,
            ttl_seconds=config.ttl_seconds,
            socket_timeout_s=config.socket_timeout_s,
            retry_after_s=config.retry_after_s,
            on_event=on_event,
        )
    log_event(
        log,
        "prediction cache: in-process LRU (REDIS_URL not set; not shared between workers or replicas)",
        ttl_s=config.ttl_seconds,
        max_items=config.max_items,
    )
    return InProcessLRUCache(config.max_items, config.ttl_seconds, on_event=on_event)
