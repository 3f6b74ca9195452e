"""Failed-login throttling per account and per client address.

With REDIS_URL set, counts live in Redis and so hold across worker processes and
machines; otherwise they live in this process's memory, and each worker counts alone
(so the real limit is the setting times the number of workers).
"""

import logging
import threading
import time
from typing import Any, Protocol

import redis

from blogapi.config import settings

log = logging.getLogger("blogapi")

KEY_PREFIX = "blogapi:login-failures:"


class FailureStore(Protocol):
    def count(self, key: str) -> tuple[int, int]:
        """The failures counted under key in the current window, and its seconds left."""
        ...

    def add(self, key: str, window_seconds: int) -> None: ...

    def reset(self, key: str) -> None: ...


class MemoryStore:
    def __init__(self) -> None:
        self._windows: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def count(self, key: str) -> tuple[int, int]:
        with self._lock:
            failures, ends = self._windows.get(key, (0, 0.0))
        left = ends - time.monotonic()
        return (failures, int(left) + 1) if left > 0 else (0, 0)

    def add(self, key: str, window_seconds: int) -> None:
        now = time.monotonic()
        with self._lock:
            self._windows = {k: w for k, w in self._windows.items() if w[1] > now}
            failures, ends = self._windows.get(key, (0, now + window_seconds))
            self._windows[key] = (failures + 1, ends)

    def reset(self, key: str) -> None:
        with self._lock:
            self._windows.pop(key, None)


class RedisStore:
    """Counts in Redis; while Redis is unreachable, logins are let through unthrottled."""

    def __init__(self, url: str) -> None:
        self._redis = redis.Redis.from_url(
            url, socket_timeout=2, socket_connect_timeout=2
        )

    def _run(self, pipeline: redis.client.Pipeline) -> list[Any] | None:
        try:
            return pipeline.execute()
        except redis.RedisError:
            log.warning(
                "login throttle: Redis unavailable, not throttling", exc_info=True
            )
            return None

    def count(self, key: str) -> tuple[int, int]:
        result = self._run(
            self._redis.pipeline().get(KEY_PREFIX + key).ttl(KEY_PREFIX + key)
        )
        if not result or result[0] is None:
            return (0, 0)
        return (int(result[0]), max(int(result[1]), 1))

    def add(self, key: str, window_seconds: int) -> None:
        pipeline = self._redis.pipeline().incr(KEY_PREFIX + key)
        self._run(pipeline.expire(KEY_PREFIX + key, window_seconds, nx=True))

    def reset(self, key: str) -> None:
        self._run(self._redis.pipeline().delete(KEY_PREFIX + key))


class LoginThrottle:
    """Refuses logins for an account or address that failed too often in the window."""

    def __init__(self, store: FailureStore) -> None:
        self.store = store
        self.window = settings.login_window_seconds
        self.limits = {
            "account": settings.login_max_failures,
            "address": settings.login_max_failures_per_address,
        }

    @staticmethod
    def _keys(email: str, address: str) -> dict[str, str]:
        return {"account": f"account:{email}", "address": f"address:{address}"}

    def retry_after(self, email: str, address: str) -> int | None:
        """Seconds to wait before trying again, or None when a try is allowed."""
        waits = []
        for kind, key in self._keys(email, address).items():
            failures, seconds_left = self.store.count(key)
            if failures >= self.limits[kind]:
                waits.append(seconds_left)
        return max(waits, default=None)

    def failed(self, email: str, address: str) -> None:
        for key in self._keys(email, address).values():
            self.store.add(key, self.window)

    def succeeded(self, email: str, address: str) -> None:
        self.store.reset(self._keys(email, address)["account"])


def build_login_throttle() -> LoginThrottle:
    return LoginThrottle(
        RedisStore(settings.redis_url) if settings.redis_url else MemoryStore()
    )
