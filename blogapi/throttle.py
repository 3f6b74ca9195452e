"""Throttling attempts per account and per client address: failed logins, and
password recovery requests counted apart; registrations per client network; and
claims that let one run of a thing (a user's data export) go at a time.

Every attempt is counted before its password is checked, so parallel guesses
can't slip past the limit while bcrypt runs; a successful login takes its attempt back.
With REDIS_URL set, counts and claims live in Redis and so hold across worker processes
and machines; otherwise they live in this process's memory, and each worker counts alone
(so the real limit is the setting times the number of workers).
"""

import ipaddress
import logging
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import anyio
import redis.asyncio as redis
from redis.exceptions import RedisError
from starlette.requests import Request

from blogapi import metrics
from blogapi.config import settings
from blogapi.errors import TooManyAttempts

log = logging.getLogger("blogapi")

TOO_MANY_SIGNUPS = "Too many sign-ups from this address"

KEY_PREFIX = "blogapi:login-attempts:"
CLAIM_PREFIX = "blogapi:claims:"
MEMORY_PRUNE_SIZE = 10_000
IPV6_NETWORK_BITS = 64
"""An IPv6 client is counted by its /64: the least a subscriber or a server is given,
and any address in it is theirs to pick."""

# Take one attempt back, but never bring back a key whose window has ended.
_UNCOUNT_ATTEMPT = (
    "if redis.call('exists', KEYS[1]) == 1 then redis.call('decr', KEYS[1]) end"
)
# Touch a claim only while it is still the caller's (it may have expired and been
# taken by another meanwhile).
_EXTEND_CLAIM = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "redis.call('expire', KEYS[1], ARGV[2]) end"
)
_RELEASE_CLAIM = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]) end"
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

    async def claim(self, key: str, token: str, seconds: int) -> bool:
        """Hold `key` for `seconds` under `token` unless another holds it; whether it
        is now held by `token`."""
        ...

    async def extend(self, key: str, token: str, seconds: int) -> None:
        """Hold `key` for `seconds` more from now, if `token` still holds it."""
        ...

    async def release(self, key: str, token: str) -> None:
        """Let go of `key`, if `token` still holds it."""
        ...

    async def close(self) -> None:
        """Let go of what the store holds open, at shutdown."""
        ...


class MemoryStore:
    """Counts in this process; each method runs on the event loop without awaiting, so
    no two requests interleave inside one."""

    def __init__(self) -> None:
        self._windows: dict[str, tuple[int, float]] = {}
        self._claims: dict[str, tuple[str, float]] = {}

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

    async def claim(self, key: str, token: str, seconds: int) -> bool:
        now = time.monotonic()
        holder = self._claims.get(key)
        if holder is not None and holder[1] > now:
            return False
        self._claims[key] = (token, now + seconds)
        return True

    async def extend(self, key: str, token: str, seconds: int) -> None:
        holder = self._claims.get(key)
        if holder is not None and holder[0] == token:
            self._claims[key] = (token, time.monotonic() + seconds)

    async def release(self, key: str, token: str) -> None:
        holder = self._claims.get(key)
        if holder is not None and holder[0] == token:
            del self._claims[key]

    async def close(self) -> None:
        self._windows.clear()
        self._claims.clear()


class RedisStore:
    """Counts and claims in Redis; while Redis is unreachable, requests are let through
    unthrottled (and claims granted)."""

    def __init__(self, url: str) -> None:
        self._redis = redis.Redis.from_url(
            url, socket_timeout=2, socket_connect_timeout=2
        )

    async def _run(self, pipeline: redis.client.Pipeline) -> list[Any] | None:
        try:
            return await pipeline.execute()
        except RedisError:
            log.warning("throttle: Redis unavailable, not throttling", exc_info=True)
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

    async def claim(self, key: str, token: str, seconds: int) -> bool:
        pipeline = self._redis.pipeline()
        pipeline.set(CLAIM_PREFIX + key, token, nx=True, ex=seconds)
        result = await self._run(pipeline)
        return result is None or bool(result[0])

    async def extend(self, key: str, token: str, seconds: int) -> None:
        pipeline = self._redis.pipeline()
        pipeline.eval(_EXTEND_CLAIM, 1, CLAIM_PREFIX + key, token, seconds)
        await self._run(pipeline)

    async def release(self, key: str, token: str) -> None:
        pipeline = self._redis.pipeline()
        pipeline.eval(_RELEASE_CLAIM, 1, CLAIM_PREFIX + key, token)
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
            "address": f"{self.prefix}address:{client_network(address)}",
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


class SignupThrottle:
    """Refuses a registration once SIGNUP_MAX_PER_ADDRESS have been made from the same
    client network (`client_network`) in the window of SIGNUP_WINDOW_SECONDS that the
    first of them started.

    Only registrations that succeed count: each is counted before its password is
    hashed, so parallel sign-ups can't pass the limit, and taken back when it fails (a
    taken email, the database unavailable, the client gone) or is refused."""

    PURPOSE = "signup"

    def __init__(self, store: AttemptStore) -> None:
        self.store = store
        self.window = settings.signup_window_seconds
        self.limit = settings.signup_max_per_address

    @asynccontextmanager
    async def registering(self, host: str) -> AsyncIterator[None]:
        """Count a registration from `host` for the block's duration; TooManyAttempts
        when it is one too many, and the count taken back when the block raises."""
        key = f"{self.PURPOSE}:address:{client_network(host)}"
        [(registrations, seconds_left)] = await self.store.add([key], self.window)
        if registrations > self.limit:
            await self.store.take_back(key)
            raise TooManyAttempts(TOO_MANY_SIGNUPS, seconds_left)
        try:
            yield
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.store.take_back(key)
            raise


class OneAtATime:
    """Lets one run of `purpose` (a data export, say) go at a time per subject (a
    user's id), across every worker and machine when the store is Redis.

    A claim lasts `seconds` unless extended, so one left by a process that died is
    free again after that; while Redis is unreachable every claim is granted."""

    def __init__(self, store: AttemptStore, purpose: str, seconds: int) -> None:
        self.store = store
        self.purpose = purpose
        self.seconds = seconds

    def key(self, subject: str) -> str:
        return f"{self.purpose}:{subject}"

    async def claim(self, subject: str) -> "Claim | None":
        """The claim on `subject`, or None while another holds it."""
        token = secrets.token_hex(16)
        if not await self.store.claim(self.key(subject), token, self.seconds):
            return None
        return Claim(self, subject, token)


class Claim:
    """One held claim: extend it while the work goes on, release it when it ends."""

    def __init__(self, owner: OneAtATime, subject: str, token: str) -> None:
        self._owner = owner
        self._key = owner.key(subject)
        self._token = token
        self._extended = time.monotonic()

    async def keep(self) -> None:
        """Extend the claim once a third of its time has gone by since it was last."""
        if time.monotonic() - self._extended < self._owner.seconds / 3:
            return
        self._extended = time.monotonic()
        await self._owner.store.extend(self._key, self._token, self._owner.seconds)

    async def release(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._owner.store.release(self._key, self._token)


def client_address(request: Request) -> str:
    """The client's address: the peer's, or the one a trusted proxy forwarded
    (FORWARDED_ALLOW_IPS: the server rewrites `request.client` from X-Forwarded-For)."""
    return request.client.host if request.client else "unknown"


def client_network(host: str) -> str:
    """What a per-address limit counts for a client at `host`: an IPv4 address as it
    is; an IPv6 address by its /64 network (an IPv4-mapped one as its IPv4 address);
    anything else (a Unix socket's peer, a test client's name) as it is."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    network = ipaddress.IPv6Network((address.packed, IPV6_NETWORK_BITS), strict=False)
    return str(network)


def build_attempt_store() -> AttemptStore:
    """Redis when REDIS_URL is set, else this process's memory: one store for every
    throttle and claim of the app."""
    return RedisStore(settings.redis_url) if settings.redis_url else MemoryStore()
