"""More than one machine: two server processes, on different ports, share one PostgreSQL
database and one Redis, and behave as one API.

Runs on the PostgreSQL run (a scratch database beside TEST_DATABASE_URL) when TEST_REDIS_URL
is set, in the Redis database numbered after that URL's, which it empties before and after.
"""

import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.factories import (
    PASSWORD,
    assert_unauthorized,
    create_post,
    create_user,
    create_user_and_login,
    login,
    vote,
)
from tests.redis_server import emptied_next_database, requires_redis
from tests.servers import (
    requires_postgres,
    running_servers,
    scratch_database,
    vote_count_mismatches,
    vote_rows,
)

LOGIN_MAX_FAILURES = 5

pytestmark = [
    requires_postgres("two servers share one PostgreSQL database"),
    requires_redis("two servers share one Redis"),
]


@pytest.fixture(scope="module")
def shared_redis() -> Iterator[str]:
    with emptied_next_database() as url:
        yield url


@pytest.fixture(scope="module")
def shared_database() -> Iterator[str]:
    with scratch_database("multi") as url:
        yield url


@pytest.fixture(scope="module")
def servers(
    shared_database: str, shared_redis: str
) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    settings = {
        "REDIS_URL": shared_redis,
        "LOGIN_MAX_FAILURES": str(LOGIN_MAX_FAILURES),
    }
    with (
        running_servers(2, shared_database, **settings) as (first, second),
        first.client() as a,
        second.client() as b,
    ):
        assert first.port != second.port
        yield a, b


def test_a_token_from_one_server_works_on_the_other(
    servers: tuple[httpx.Client, httpx.Client],
) -> None:
    a, b = servers
    user, headers = create_user_and_login(a)
    me = b.get("/users/me", headers=headers)
    assert me.status_code == 200, me.text
    assert me.json()["id"] == user["id"]
    post = create_post(b, headers)
    assert a.get(f"/posts/{post['id']}", headers=headers).json() == post


def test_a_token_revoked_on_one_server_is_refused_by_both(
    servers: tuple[httpx.Client, httpx.Client],
) -> None:
    a, b = servers
    user = create_user(a)
    headers, other_session = login(b, user["email"]), login(a, user["email"])
    assert a.post("/logout", headers=headers).status_code == 204
    for server in servers:
        assert_unauthorized(server.get("/users/me", headers=headers))
        assert server.get("/users/me", headers=other_session).status_code == 200


def test_login_throttling_counts_failures_across_both_servers(
    servers: tuple[httpx.Client, httpx.Client],
) -> None:
    a, b = servers
    user = create_user(a)
    wrong = {"username": user["email"], "password": "not the password"}
    for server, failures in ((a, 3), (b, LOGIN_MAX_FAILURES - 3)):
        for _ in range(failures):
            response = server.post("/login", data=wrong)
            assert response.status_code == 403, response.text
    right = {"username": user["email"], "password": PASSWORD}
    for server in servers:
        response = server.post("/login", data=right)
        assert response.status_code == 429, response.text
        assert response.json() == {"detail": "Too many failed logins; try again later"}
        assert 0 < int(response.headers["retry-after"]) <= 60


VOTERS = 12


def test_a_vote_race_split_across_both_servers_ends_with_the_exact_count(
    servers: tuple[httpx.Client, httpx.Client], shared_database: str
) -> None:
    """Every voter votes, unvotes and votes again, alternating servers, all at once."""
    a = servers[0]
    _, author = create_user_and_login(a)
    post = create_post(a, author)
    voters = [create_user_and_login(servers[n % 2])[1] for n in range(VOTERS)]
    start = threading.Barrier(VOTERS, timeout=30)
    statuses: list[int] = []

    def vote_twice(number: int, headers: dict[str, str]) -> None:
        urls = [str(servers[(number + step) % 2].base_url) for step in range(3)]
        start.wait()
        for url, direction in zip(urls, (1, 0, 1), strict=True):
            with httpx.Client(base_url=url, timeout=30) as client:
                statuses.append(
                    vote(client, headers, post["id"], direction).status_code
                )

    threads = [
        threading.Thread(target=vote_twice, args=(number, headers))
        for number, headers in enumerate(voters)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert statuses == [201] * 3 * VOTERS
    for server in servers:
        assert (
            server.get(f"/posts/{post['id']}", headers=author).json()["votes"] == VOTERS
        )
    assert (
        sum(1 for _, voted in vote_rows(shared_database) if voted == post["id"])
        == VOTERS
    )
    assert vote_count_mismatches(shared_database) == {}
