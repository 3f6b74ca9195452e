"""Throttling attempts per account and per client address: failed logins, and
password recovery requests counted apart.

Every attempt is counted before its password is checked, so parallel guesses
can't slip past the limit while bcrypt runs; a successful login takes its attempt back.
With REDIS_URL set, counts live in Redis and so hold across worker processes and
machines; otherwise they live in this process's memory, and each worker counts alone
(so the real limit is the setting times the number of workers).
"""

import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

import redis.asyncio as redis
from redis.exceptions import RedisError
from starlette.requests import Request

from blogapi import metrics
from blogapi.config import settings
from blogapi.errors import TooManyAttempts

log = logging.getLogger("blogapi")

KEY_PREFIX = "blogapi:login-attempts:"
MEMORY_PRUNE_SIZE = 10_000

# Take one attempt back, but never bring back a key whose window has ended.
_UNCOUNT_ATTEMPT = (
    "if redis.call('exists', KEYS[1]) == 1 then redis.call('decr', KEYS[1]) end"
)


class AttemptStore(Protocol):
    async def add(
        self, keys: Sequence[str], window_seconds: int
    ) -> list[tuple[int, int]]:
        """Count one attempt on every key at once; for each key, the attempts in its
        window and the window's seconds left."""
        ...

    async def take_back(self, key: str) -> None: ...

    async def reset(self, key: str) -> None: ...

    async def close(self) -> None:
        """Let go of what the store holds open, at shutdown."""
        ...


class MemoryStore:
    """Counts in this process; each method runs on the event loop without awaiting, so
    no two requests interleave inside one."""

    def __init__(self) -> None:
        self._windows: dict[str, tuple[int, float]] = {}

    async def add(
        self, keys: Sequence[str], window_seconds: int
    ) -> list[tuple[int, int]]:
        now = time.monotonic()
        if len(self._windows) > MEMORY_PRUNE_SIZE:
            self._windows = {k: w for k, w in self._windows.items() if w[1] > now}
        counts = []
        for key in keys:
            attempts, ends = self._windows.get(key, (0, 0.0))
            if ends <= now:
                attempts, ends = 0, now + window_seconds
            self._windows[key] = (attempts + 1, ends)
            counts.append((attempts + 1, int(ends - now) + 1))
        return counts

    async def take_back(self, key: str) -> None:
        attempts, ends = self._windows.get(key, (0, 0.0))
        if attempts > 0:
            self._windows[key] = (attempts - 1, ends)

    async def reset(self, key: str) -> None:
        self._windows.pop(key, None)

    async def close(self) -> None:
        self._windows.clear()


class RedisStore:
    """Counts in Redis; while Redis is unreachable, logins are let through unthrottled."""

    def __init__(self, url: str) -> None:
        self._redis = redis.Redis.from_url(
            url, socket_timeout=2, socket_connect_timeout=2
        )

    async def _run(self, pipeline: redis.client.Pipeline) -> list[Any] | None:
        try:
            return await pipeline.execute()
        except RedisError:
            log.warning(
                "login throttle: Redis unavailable, not throttling", exc_info=True
            )
            return None

    async def add(
        self, keys: Sequence[str], window_seconds: int
    ) -> list[tuple[int, int]]:
        # One MULTI/EXEC for all keys, so parallel attempts are counted in the same
        # order on each key.
        pipeline = self._redis.pipeline(transaction=True)
        for key in keys:
            name = KEY_PREFIX + key
            pipeline.incr(name)
            pipeline.expire(name, window_seconds, nx=True)
            pipeline.ttl(name)
        result = await self._run(pipeline)
        if result is None:
            return [(0, 0)] * len(keys)
        return [
            (int(result[i]), max(int(result[i + 2]), 1))
            for i in range(0, len(result), 3)
        ]

    async def take_back(self, key: str) -> None:
        pipeline = self._redis.pipeline()
        pipeline.eval(_UNCOUNT_ATTEMPT, 1, KEY_PREFIX + key)
        await self._run(pipeline)

    async def reset(self, key: str) -> None:
        pipeline = self._redis.pipeline()
        pipeline.delete(KEY_PREFIX + key)
        await self._run(pipeline)

    async def close(self) -> None:
        await self._redis.aclose()


class AttemptThrottle:
    """Refuses attempts (logins, by default) for an account or address with too many in
    the window.

    `purpose` names another kind of request counted the same way, apart from logins,
    in the same store (`for_purpose`): password recovery, say."""

    def __init__(self, store: AttemptStore, purpose: str = "") -> None:
        self.store = store
        self.prefix = f"{purpose}:" if purpose else ""
        self.purpose = purpose or "login"
        """What `blogapi_throttle_refusals_total` counts its refusals as."""
        self.window = settings.login_window_seconds
        self.limits = {
            "account": settings.login_max_failures,
            "address": settings.login_max_failures_per_address,
        }

    def for_purpose(self, purpose: str) -> "AttemptThrottle":
        return AttemptThrottle(self.store, purpose)

    def _keys(self, email: str, address: str) -> dict[str, str]:
        return {
            "account": f"{self.prefix}account:{email}",
            "address": f"{self.prefix}address:{address}",
        }

    async def attempt(self, email: str, address: str) -> int | None:
        """Count this attempt: seconds to wait when it is one too many, else None."""
        keys = self._keys(email, address)
        counts = await self.store.add(list(keys.values()), self.window)
        waits = [
            seconds_left
            for kind, (attempts, seconds_left) in zip(keys, counts, strict=True)
            if attempts > self.limits[kind]
        ]
        return max(waits, default=None)

    async def check(self, email: str, address: str, what: str) -> None:
        """Count this attempt; TooManyAttempts (`what`: "Too many failed logins") when
        it is one too many."""
        retry_after = await self.attempt(email, address)
        if retry_after is not None:
            metrics.THROTTLE_REFUSALS.labels(self.purpose).inc()
            raise TooManyAttempts(what, retry_after)

    async def succeeded(self, email: str, address: str) -> None:
        keys = self._keys(email, address)
        await self.store.reset(keys["account"])
        await self.store.take_back(keys["address"])


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def build_attempt_throttle() -> AttemptThrottle:
    return AttemptThrottle(
        RedisStore(settings.redis_url) if settings.redis_url else MemoryStore()
    )
