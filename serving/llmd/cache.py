"""The exact-match response cache for deterministic requests: a local LRU, plus Redis when configured.

Only requests that must give the same answer every time are cached: ``temperature`` explicitly 0 (vLLM
defaults to 1.0, so a missing temperature is not deterministic), not streamed, one choice, no
``kv_transfer_params``. The key hashes the endpoint and the canonical JSON body (sorted keys), so key
order and whitespace do not matter; ``user`` is dropped (it does not change the answer).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import orjson

_IGNORED = ("user", "stream_options")


def cacheable(body: Mapping[str, Any]) -> bool:
    temperature = body.get("temperature")
    if temperature is None or isinstance(temperature, bool) or temperature != 0:
        return False
    if body.get("stream") or body.get("kv_transfer_params"):
        return False
    n = body.get("n", 1)
    return n in (None, 1)


def cache_key(path: str, body: Mapping[str, Any], namespace: str = "") -> str | None:
    """The cache key for ``body`` sent to ``path``, or None when the request is not cacheable."""
    if not cacheable(body):
        return None
    canonical = {k: v for k, v in body.items() if k not in _IGNORED}
    try:
        data = orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return None
    digest = hashlib.blake2b(path.encode() + b"\0" + namespace.encode() + b"\0" + data, digest_size=16).hexdigest()
    return f"odh-llmd:resp:{digest}"


class LRUCache:
    """Bounded in-process LRU of ``key -> bytes`` with a time-to-live."""

    def __init__(self, max_entries: int = 4096, ttl_s: float = 600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.clock = clock
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires <= self.clock():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    def set(self, key: str, value: bytes) -> None:
        if self.max_entries <= 0:
            return
        self._data[key] = (self.clock() + self.ttl_s, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)


class ResponseCache:
    """Local LRU in front of an optional Redis (``redis.asyncio``) shared by router replicas.

    Redis errors never fail a request: the cache just misses (and the error is counted).
    """

    def __init__(self, local: LRUCache | None = None, redis_url: str | None = None, ttl_s: float = 600.0) -> None:
        self.local = local or LRUCache(ttl_s=ttl_s)
        self.ttl_s = ttl_s
        self.redis: Any = None
        self.redis_errors = 0
        if redis_url:
            try:
                import redis.asyncio as aioredis
            except ImportError as exc:  # pragma: no cover - redis is optional
                raise RuntimeError("--redis-url needs the 'redis' package installed") from exc
            self.redis = aioredis.from_url(redis_url, socket_timeout=0.2, socket_connect_timeout=0.2)

    async def get(self, key: str) -> bytes | None:
        value = self.local.get(key)
        if value is not None or self.redis is None:
            return value
        try:
            value = await self.redis.get(key)
        except Exception:  # a cache outage is a miss
            self.redis_errors += 1
            return None
        if value is not None:
            self.local.set(key, value)
        return value

    async def set(self, key: str, value: bytes) -> None:
        self.local.set(key, value)
        if self.redis is not None:
            try:
                await self.redis.set(key, value, ex=max(1, int(self.ttl_s)))
            except Exception:
                self.redis_errors += 1

    async def close(self) -> None:
        if self.redis is not None:
            try:
                await self.redis.aclose()
            except Exception:
                pass
