"""Sign-up limits: SIGNUP_MAX_PER_ADDRESS successful registrations per client address
(an IPv6 client by its /64) per SIGNUP_WINDOW_SECONDS, in memory and in Redis; and the
client address itself, which the server takes from X-Forwarded-For only on connections
from FORWARDED_ALLOW_IPS (real server processes)."""

import asyncio
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session, func, select

from blogapi.config import settings
from blogapi.errors import TooManyAttempts
from blogapi.main import create_app
from blogapi.throttle import (
    KEY_PREFIX,
    MemoryStore,
    RedisStore,
    SignupThrottle,
    client_network,
)
from blogapi.users import User
from tests.factories import PASSWORD, engine
from tests.redis_server import patient, redis_test_url, requires_redis
from tests.servers import ServerProcess

REDIS_URL = patient(redis_test_url() or "")
NEEDS_REDIS = requires_redis("sign-ups counted in Redis need a Redis server")
REFUSED = "Too many sign-ups from this address; try again later"
LIMIT = 3
WINDOW = 3


def register(client: httpx.Client, email: str | None = None) -> httpx.Response:
    email = email or f"{uuid.uuid4().hex[:12]}@example.com"
    return client.post("/users/", json={"email": email, "password": PASSWORD})


def assert_refused(response: httpx.Response, window: int = WINDOW) -> None:
    assert response.status_code == 429, response.text
    assert response.json() == {"detail": REFUSED}
    assert 1 <= int(response.headers["retry-after"]) <= window


def count_users() -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(User)).one()


@pytest.fixture
def limited(monkeypatch: pytest.MonkeyPatch) -> None:
    """LIMIT sign-ups per WINDOW seconds, for apps (and throttles) built after this."""
    monkeypatch.setattr(settings, "signup_max_per_address", LIMIT)
    monkeypatch.setattr(settings, "signup_window_seconds", WINDOW)


@pytest.fixture
def app(limited: None) -> FastAPI:
    return create_app()


def client_at(app: FastAPI, host: str, portal_of: TestClient) -> TestClient:
    """A client of the same running app (`portal_of`'s) that connects from `host`."""
    elsewhere = TestClient(app, client=(host, 50000))
    elsewhere.portal = portal_of.portal
    return elsewhere


# Through the app


def test_the_limit_then_429_with_retry_after_and_no_account(app: FastAPI) -> None:
    with TestClient(app) as client:
        for _ in range(LIMIT):
            assert register(client).status_code == 201
        users = count_users()

        refused = register(client, "one-too-many@example.com")
        again = register(client, "one-too-many@example.com")

    assert_refused(refused)
    assert_refused(again)
    assert count_users() == users == LIMIT


def test_other_addresses_count_on_their_own(app: FastAPI) -> None:
    with TestClient(app) as client:
        for _ in range(LIMIT):
            assert register(client).status_code == 201
        assert_refused(register(client))

        elsewhere = client_at(app, "198.51.100.7", client)
        for _ in range(LIMIT):
            assert register(elsewhere).status_code == 201
        assert_refused(register(elsewhere))


def test_only_registrations_that_succeed_count(app: FastAPI) -> None:
    """A taken email (409) is taken back; an invalid body (422) is never counted."""
    with TestClient(app) as client:
        taken = register(client).json()["email"]
        for _ in range(LIMIT * 2):
            assert register(client, taken).status_code == 409
            response = client.post("/users/", json={"email": "x@example.com"})
            assert response.status_code == 422
        for _ in range(LIMIT - 1):
            assert register(client).status_code == 201

        assert_refused(register(client))


def test_a_refused_registration_is_not_counted_either(app: FastAPI) -> None:
    """Once a window is over, those it refused leave nothing behind."""
    with TestClient(app) as client:
        for _ in range(LIMIT):
            assert register(client).status_code == 201
        for _ in range(LIMIT):
            assert_refused(register(client))

        time.sleep(WINDOW + 0.2)

        for _ in range(LIMIT):
            assert register(client).status_code == 201
        assert_refused(register(client))


@pytest.mark.parametrize(
    ("first", "second", "shared"),
    [
        ("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:fffe", True),
        ("2001:db8:1:2::1", "2001:db8:1:3::1", False),
        ("203.0.113.1", "203.0.113.2", False),
    ],
)
def test_ipv6_clients_count_by_their_64(
    app: FastAPI, first: str, second: str, shared: bool
) -> None:
    with TestClient(app) as client:
        one, other = client_at(app, first, client), client_at(app, second, client)
        for _ in range(LIMIT):
            assert register(one).status_code == 201

        response = register(other)

    if shared:
        assert_refused(response)
    else:
        assert response.status_code == 201, response.text


def test_parallel_sign_ups_never_pass_the_limit(app: FastAPI) -> None:
    """Each registration is counted before bcrypt runs: of 12 at once, LIMIT pass."""
    results: list[int] = []
    with TestClient(app) as client:
        start = threading.Barrier(12, timeout=30)

        def sign_up() -> None:
            start.wait()
            results.append(register(client).status_code)

        threads = [threading.Thread(target=sign_up) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

    assert Counter(results) == {201: LIMIT, 429: 12 - LIMIT}
    assert count_users() == LIMIT


def test_parallel_sign_ups_with_one_email_leave_the_others_their_turn(
    app: FastAPI,
) -> None:
    """Of 8 registrations of one email at once, one succeeds; those that found it
    taken give their count back, so LIMIT - 1 more may follow."""
    results: list[int] = []
    with TestClient(app) as client:
        start = threading.Barrier(8, timeout=30)

        def sign_up() -> None:
            start.wait()
            results.append(register(client, "same@example.com").status_code)

        threads = [threading.Thread(target=sign_up) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        later = [register(client).status_code for _ in range(LIMIT)]

    assert results.count(201) == 1
    assert set(results) <= {201, 409, 429}
    assert later == [201] * (LIMIT - 1) + [429]


@pytest.mark.parametrize(
    ("host", "counted_as"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("2001:db8:abcd:12:1:2:3:4", "2001:db8:abcd:12::/64"),
        ("2001:DB8:ABCD:0012::", "2001:db8:abcd:12::/64"),
        ("2001:db8:abcd:13::1", "2001:db8:abcd:13::/64"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("fe80::1%eth0", "fe80::/64"),
        ("testclient", "testclient"),
    ],
)
def test_client_network(host: str, counted_as: str) -> None:
    assert client_network(host) == counted_as


# In Redis: shared by every worker and machine


@pytest.fixture
def redis_address() -> Iterator[str]:
    """A client address of the test's own, whose count in Redis goes after the test."""
    address = f"addr-{uuid.uuid4().hex}"
    yield address
    connection = redis.Redis.from_url(REDIS_URL)
    connection.delete(f"{KEY_PREFIX}{SignupThrottle.PURPOSE}:address:{address}")
    connection.close()


@NEEDS_REDIS
def test_two_apps_on_redis_count_sign_ups_together(
    limited: None, monkeypatch: pytest.MonkeyPatch, redis_address: str
) -> None:
    monkeypatch.setattr(settings, "redis_url", REDIS_URL)
    first_app, second_app = create_app(), create_app()

    with (
        TestClient(first_app, client=(redis_address, 50000)) as first,
        TestClient(second_app, client=(redis_address, 50000)) as second,
    ):
        assert register(first).status_code == 201
        taken = register(second).json()["email"]
        assert register(first, taken).status_code == 409
        assert register(second).status_code == 201

        assert_refused(register(first))
        assert_refused(register(second))


@pytest.mark.parametrize("store", ["memory", pytest.param("redis", marks=NEEDS_REDIS)])
def test_parallel_registrations_in_the_store_stop_at_the_limit(
    limited: None, store: str, request: pytest.FixtureRequest
) -> None:
    """The store's count is atomic: 30 at once, each holding its count while it runs."""
    address = request.getfixturevalue("redis_address") if store == "redis" else "a"
    throttle = SignupThrottle(
        MemoryStore() if store == "memory" else RedisStore(REDIS_URL)
    )

    async def register_once() -> bool:
        try:
            async with throttle.registering(address):
                await asyncio.sleep(0.05)
        except TooManyAttempts:
            return False
        return True

    async def all_at_once() -> list[bool]:
        return await asyncio.gather(*(register_once() for _ in range(30)))

    assert asyncio.run(all_at_once()).count(True) == LIMIT


# The client address behind a proxy: real servers


def sign_ups_from(server: ServerProcess, forwarded_for: list[str]) -> list[int]:
    """Register once per entry, each sent with that X-Forwarded-For header."""
    with server.client() as http:
        return [
            http.post(
                "/users/",
                json={
                    "email": f"{uuid.uuid4().hex[:12]}@example.com",
                    "password": PASSWORD,
                },
                headers={"X-Forwarded-For": header},
            ).status_code
            for header in forwarded_for
        ]


@pytest.fixture
def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'proxied.db'}"


def test_from_a_trusted_proxy_each_forwarded_address_counts_apart(
    database: str,
) -> None:
    """FORWARDED_ALLOW_IPS unset: 127.0.0.1 is trusted, and the address is the last one
    in X-Forwarded-For that is not a trusted proxy (what the proxy itself appended)."""
    with ServerProcess(database, SIGNUP_MAX_PER_ADDRESS="2") as server:
        statuses = sign_ups_from(
            server,
            [
                "203.0.113.1",
                "198.51.100.50, 203.0.113.1",
                "203.0.113.1",
                "203.0.113.2",
                "203.0.113.2",
                "203.0.113.2",
            ],
        )

    assert statuses == [201, 201, 429, 201, 201, 429]


@pytest.mark.parametrize("mode", ["gunicorn", "reload"])
def test_from_an_untrusted_peer_forwarded_addresses_are_ignored(
    database: str, mode: str
) -> None:
    """FORWARDED_ALLOW_IPS from a .env file reaches both servers: 127.0.0.1 is not in
    it, so every sign-up counts for 127.0.0.1 whatever X-Forwarded-For says."""
    with ServerProcess(
        database,
        reload=mode == "reload",
        dotenv="FORWARDED_ALLOW_IPS=192.0.2.1\n",
        SIGNUP_MAX_PER_ADDRESS="2",
    ) as server:
        statuses = sign_ups_from(server, ["203.0.113.1", "203.0.113.2", "203.0.113.3"])

    assert statuses == [201, 201, 429]


def test_with_star_the_left_most_forwarded_entry_decides(database: str) -> None:
    """Why docs/settings.md says never `*` behind a proxy that appends to the client's
    own X-Forwarded-For: the client's left-most entry is then taken as its address."""
    with ServerProcess(
        database, FORWARDED_ALLOW_IPS="*", SIGNUP_MAX_PER_ADDRESS="2"
    ) as server:
        statuses = sign_ups_from(
            server, [f"198.51.100.{n}, 203.0.113.1" for n in range(1, 5)]
        )

    assert statuses == [201, 201, 201, 201]
