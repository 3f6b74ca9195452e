"""The Redis server the tests may use: the one TEST_REDIS_URL names, or none.

Without TEST_REDIS_URL no test opens a connection to Redis: the tests that need one are
skipped, saying why. A test that empties a database gets one of its own, numbered after
the one TEST_REDIS_URL names, so the shared keys of the other tests are never touched.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis


def redis_test_url() -> str | None:
    """TEST_REDIS_URL (e.g. redis://127.0.0.1:6379/0), or None when it is unset."""
    return os.environ.get("TEST_REDIS_URL") or None


def requires_redis(why: str) -> pytest.MarkDecorator:
    """Skip unless TEST_REDIS_URL is set, saying why the test needs Redis."""
    return pytest.mark.skipif(
        redis_test_url() is None,
        reason=f"{why}: runs when TEST_REDIS_URL names a Redis server",
    )


def next_database(url: str) -> str:
    """The same server's next database number: TEST_REDIS_URL's /0 gives /1."""
    parts = urlsplit(url)
    number = int(parts.path.strip("/") or 0) + 1
    return urlunsplit(parts._replace(path=f"/{number}"))


def patient(url: str) -> str:
    """The URL with 30 s timeouts in its query, which override the app's own 2 s: a test
    of what the app does with Redis must not fail because a loaded machine is slow to
    connect (the app lets logins through unthrottled when Redis does not answer)."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}socket_connect_timeout=30&socket_timeout=30"


@contextmanager
def emptied_next_database() -> Iterator[str]:
    """The (patient) URL of the database numbered after TEST_REDIS_URL's, emptied before
    and after: for servers that share their counts there, from a clean start."""
    url = patient(next_database(redis_test_url() or ""))
    store = redis.Redis.from_url(url)
    store.flushdb()
    try:
        yield url
    finally:
        store.flushdb()
        store.close()
