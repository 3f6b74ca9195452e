"""Database faults, against real server processes: the database going away and coming back,
the server killed mid-burst, and vote counts under concurrent voting and account deletion.

The outage test starts a PostgreSQL cluster of its own and stops that one (never the shared
server), so it runs on the PostgreSQL run only. The others run on both databases, each
against a scratch database of its own (see tests/servers.py).
"""

import asyncio
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from types import SimpleNamespace

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import make_url, text

from blogapi.config import settings
from blogapi.db import IDLE_PING_SECONDS, _database_slot, build_engine, read_rows
from blogapi.main import create_app
from blogapi.posts import LIST_PAGE
from blogapi.security import read_access_token
from blogapi.users import token_params
from tests.factories import (
    PASSWORD,
    create_post,
    create_user_and_login,
    engine,
    vote,
)
from tests.servers import (
    ServerProcess,
    postgres_cluster,
    requires_postgres,
    running_server,
    scratch_database,
    vote_count_mismatches,
    vote_rows,
)

OUTAGE_ANSWER_SECONDS = 5
"""How long a request may take to be refused while the database is down."""


def assert_database_unavailable(
    what: str, response: httpx.Response, elapsed: float
) -> None:
    assert response.status_code == 503, f"{what}: {response.text}"
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "detail": "The database is unavailable; try again shortly"
    }
    assert int(response.headers["retry-after"]) > 0
    assert elapsed < OUTAGE_ANSWER_SECONDS, f"{what} took {elapsed:.1f} s"


def timed(send: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = send()
    return response, time.monotonic() - started


@requires_postgres("stops and restarts a PostgreSQL cluster of its own")
def test_database_outage_gives_503_quickly_and_recovers_without_restart() -> None:
    with (
        postgres_cluster() as cluster,
        running_server(cluster.url, workers=1) as server,
        server.client(timeout=30) as client,
    ):
        user, headers = create_user_and_login(client)
        post = create_post(client, headers)
        assert client.get("/health/ready").status_code == 200

        cluster.stop("immediate")
        requests = {
            "list posts": lambda: client.get("/posts/", headers=headers),
            "read a post": lambda: client.get(f"/posts/{post['id']}", headers=headers),
            "readiness": lambda: client.get("/health/ready"),
            "create a post": lambda: client.post(
                "/posts/", json={"title": "t", "content": "c"}, headers=headers
            ),
            "vote": lambda: vote(client, headers, post["id"]),
            "log in": lambda: client.post(
                "/login", data={"username": user["email"], "password": PASSWORD}
            ),
        }
        for name, send in requests.items():
            response, elapsed = timed(send)
            assert_database_unavailable(name, response, elapsed)
        assert client.get("/health").status_code == 200, (
            "liveness must not depend on it"
        )

        cluster.start()
        response, _ = timed(lambda: client.get("/posts/", headers=headers))
        assert response.status_code == 200, response.text
        assert [found["id"] for found in response.json()] == [post["id"]]
        assert client.get("/health/ready").json() == {"status": "ok"}
        assert vote(client, headers, post["id"]).status_code == 201
        assert server.process.poll() is None
        assert server.log_text().count("Booting worker") == 1, "a worker restarted"


@requires_postgres("stops and restarts a PostgreSQL cluster of its own")
def test_a_database_restart_while_idle_costs_no_request() -> None:
    """Pooled connections that sat idle are checked before use, so the first request
    after the database restarted gets a fresh connection instead of an error."""
    with (
        postgres_cluster() as cluster,
        running_server(cluster.url, workers=1) as server,
        server.client(timeout=30) as client,
    ):
        _, headers = create_user_and_login(client)
        for _ in range(3):
            assert client.get("/posts/", headers=headers).status_code == 200

        cluster.stop("fast")
        cluster.start()
        time.sleep(IDLE_PING_SECONDS + 0.5)

        assert client.get("/posts/", headers=headers).status_code == 200
        assert client.get("/health/ready").status_code == 200


@requires_postgres("needs a PostgreSQL role that may not connect")
def test_a_database_that_refuses_connections_is_503(client: TestClient) -> None:
    """Too many connections (SQLSTATE 53300) is the database being busy, not a bug."""
    role = "blogapi_no_connections"
    with engine.begin() as connection:
        connection.execute(text(f"DROP ROLE IF EXISTS {role}"))
        connection.execute(text(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 0"))
    app_engine = client.app.state.engine
    refused = build_engine(make_url(settings.database_url).set(username=role))
    client.app.state.engine = refused
    try:
        response, elapsed = timed(lambda: client.get("/health/ready"))
    finally:
        client.app.state.engine = app_engine
        client.portal.call(refused.dispose)
        with engine.begin() as connection:
            connection.execute(text(f"DROP ROLE {role}"))

    assert_database_unavailable("readiness", response, elapsed)


@requires_postgres("connects to PostgreSQL with a libpq option in the URL")
def test_a_database_url_with_sslmode_works(client: TestClient) -> None:
    """Hosts put libpq's `sslmode` in DATABASE_URL; asyncpg knows it as `ssl`."""
    url = make_url(settings.database_url).update_query_dict({"sslmode": "disable"})
    with_sslmode = build_engine(url.render_as_string(hide_password=False))

    async def select_one() -> int:
        async with with_sslmode.connect() as connection:
            return (await connection.execute(text("SELECT 1"))).scalar_one()

    try:
        assert client.portal.call(select_one) == 1
    finally:
        client.portal.call(with_sslmode.dispose)


WRITERS = 4
WRITES_PER_WRITER = 200
ACKNOWLEDGED_BEFORE_KILL = 20
BURST_SECONDS = 20


@pytest.fixture
def durable_database() -> Iterator[str]:
    with scratch_database("durability") as url:
        yield url


def test_every_acknowledged_write_survives_sigkill(durable_database: str) -> None:
    server = ServerProcess(durable_database, workers=2).start()
    try:
        acknowledged = _burst_then_kill(server)
        server.start()
        with server.client() as client:
            _, headers = create_user_and_login(client)
            for post_id, title in acknowledged["posts"]:
                response = client.get(f"/posts/{post_id}", headers=headers)
                assert response.status_code == 200, (post_id, response.text)
                assert response.json()["title"] == title
    finally:
        server.close()
    assert set(acknowledged["votes"]) <= vote_rows(durable_database)
    assert vote_count_mismatches(durable_database) == {}


def _burst_then_kill(server: ServerProcess) -> dict[str, list]:
    """Writers create posts and vote until the server is SIGKILLed under them."""
    with server.client() as client:
        writers = [create_user_and_login(client) for _ in range(WRITERS)]
        shared = [create_post(client, writers[0][1])["id"] for _ in range(3)]
    acknowledged: dict[str, list] = {"posts": [], "votes": [], "cut off": []}

    def write(user: dict, headers: dict[str, str]) -> None:
        targets = list(shared)
        with server.client(timeout=10) as client:
            for number in range(WRITES_PER_WRITER):
                title = f"burst {user['id']}-{number}"
                try:
                    response = client.post(
                        "/posts/",
                        json={"title": title, "content": "x"},
                        headers=headers,
                    )
                    if response.status_code != 201:
                        return
                    post_id = response.json()["id"]
                    acknowledged["posts"].append((post_id, title))
                    for target in [post_id, *targets[:1]]:
                        if vote(client, headers, target).status_code != 201:
                            return
                        acknowledged["votes"].append((user["id"], target))
                    targets = targets[1:]
                except httpx.TransportError:
                    acknowledged["cut off"].append(user["id"])
                    return

    threads = [threading.Thread(target=write, args=writer) for writer in writers]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + BURST_SECONDS
    while (
        len(acknowledged["posts"]) < ACKNOWLEDGED_BEFORE_KILL
        and time.monotonic() < deadline
    ):
        time.sleep(0.01)
    server.kill()
    for thread in threads:
        thread.join(timeout=15)
    assert not any(thread.is_alive() for thread in threads)
    assert len(acknowledged["posts"]) >= ACKNOWLEDGED_BEFORE_KILL, server.log_text()
    assert acknowledged["cut off"], "the kill came after the burst, not during it"
    return acknowledged


CHURNERS = 8
DELETERS = 8
VOTES_PER_CHURNER = 40
RACE_SECONDS = 4


def test_vote_counts_match_rows_under_concurrent_votes_and_deletions() -> None:
    """Churners vote and unvote the same posts at random, all at once; meanwhile other
    voters delete their accounts while their own unvotes are in flight."""
    with (
        scratch_database("counts") as database,
        running_server(database, workers=2) as server,
        server.client() as client,
    ):
        _, author = create_user_and_login(client)
        posts = [create_post(client, author)["id"] for _ in range(3)]
        churners = [create_user_and_login(client)[1] for _ in range(CHURNERS)]
        deleters = [create_user_and_login(client) for _ in range(DELETERS)]
        for _, headers in deleters:
            for post in posts:
                assert vote(client, headers, post).status_code == 201
        unexpected: list[str] = []
        start = threading.Barrier(CHURNERS + 2 * DELETERS, timeout=30)
        deadline = time.monotonic() + RACE_SECONDS

        def churn(seed: int, headers: dict[str, str]) -> None:
            choose = random.Random(seed)
            with server.client() as own:
                start.wait()
                for _ in range(VOTES_PER_CHURNER):
                    if time.monotonic() > deadline:
                        return
                    post, direction = choose.choice(posts), choose.randint(0, 1)
                    response = vote(own, headers, post, direction)
                    if response.status_code not in {201, 404, 409}:
                        unexpected.append(
                            f"vote: {response.status_code} {response.text}"
                        )

        def unvote(post: int, headers: dict[str, str]) -> None:
            with server.client() as own:
                start.wait()
                response = vote(own, headers, post, 0)
            # 404 or 401 when the account went first.
            if response.status_code not in {201, 401, 404}:
                unexpected.append(f"unvote: {response.status_code} {response.text}")

        def delete_account(headers: dict[str, str]) -> None:
            with server.client() as own:
                start.wait()
                response = own.request(
                    "DELETE", "/users/me", json={"password": PASSWORD}, headers=headers
                )
            if response.status_code != 204:
                unexpected.append(f"delete: {response.status_code} {response.text}")

        threads = [
            threading.Thread(target=churn, args=(seed, headers))
            for seed, headers in enumerate(churners)
        ]
        for number, (_, headers) in enumerate(deleters):
            threads.append(
                threading.Thread(target=unvote, args=(posts[number % 3], headers))
            )
            threads.append(threading.Thread(target=delete_account, args=(headers,)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=RACE_SECONDS + 30)
        assert not any(thread.is_alive() for thread in threads)
        assert unexpected == [], server.log_text()
        assert vote_count_mismatches(database) == {}
        rows = vote_rows(database)
        deleted = {user["id"] for user, _ in deleters}
        assert not {user for user, _ in rows} & deleted
        listed = client.get("/posts/", headers=author).json()
        assert {post["id"]: post["votes"] for post in listed} == {
            post: sum(1 for _, voted in rows if voted == post) for post in posts
        }


@requires_postgres(
    "the statement timeout is asyncpg's; SQLite waits on its busy timeout"
)
@pytest.mark.parametrize("request_kind", ["an edit", "the list", "a read"])
def test_a_statement_stuck_behind_a_lock_is_503_after_the_statement_timeout(
    monkeypatch: pytest.MonkeyPatch, request_kind: str
) -> None:
    monkeypatch.setattr(settings, "db_statement_timeout", 0.5)
    with TestClient(create_app()) as client:
        _, headers = create_user_and_login(client)
        post = create_post(client, headers)
        path = f"/posts/{post['id']}"
        sends: dict[str, Callable[[str], httpx.Response]] = {
            "an edit": lambda title: client.patch(
                path, json={"title": title}, headers=headers
            ),
            "the list": lambda _: client.get("/posts/", headers=headers),
            "a read": lambda _: client.get(path, headers=headers),
        }
        send = sends[request_kind]

        with engine.connect() as holder:
            holder.execute(text("LOCK TABLE posts IN ACCESS EXCLUSIVE MODE"))
            response, elapsed = timed(lambda: send("behind the lock"))
            holder.rollback()

        assert_database_unavailable(f"{request_kind} behind a lock", response, elapsed)
        assert elapsed < 2
        # The pool hands out its most recently returned connection first: the one whose
        # statement timed out is the next one used, and must work.
        for attempt in range(3):
            assert send(f"edit {attempt}").status_code == 200
        last_title = "edit 2" if request_kind == "an edit" else post["title"]
        assert client.get(path, headers=headers).json()["title"] == last_title


def test_requests_get_a_database_slot_in_arrival_order() -> None:
    """A request arriving as a slot is handed on must not take it from those waiting."""
    state = SimpleNamespace(db_slots=anyio.Semaphore(1), engine=None)
    request = SimpleNamespace(app=SimpleNamespace(state=state))
    served: list[str] = []

    async def use_a_slot(name: str, until: anyio.Event | None = None) -> None:
        async with _database_slot(request):  # type: ignore[arg-type]
            served.append(name)
            if until is not None:
                await until.wait()

    async def arrive() -> None:
        done = anyio.Event()
        async with anyio.create_task_group() as requests:
            requests.start_soon(use_a_slot, "first", done)
            await anyio.wait_all_tasks_blocked()
            for name in ("waiting 1", "waiting 2"):
                requests.start_soon(use_a_slot, name)
                await anyio.wait_all_tasks_blocked()
            done.set()
            for name in ("newcomer 1", "newcomer 2"):
                requests.start_soon(use_a_slot, name)

    anyio.run(arrive)

    assert served == ["first", "waiting 1", "waiting 2", "newcomer 1", "newcomer 2"]


def test_a_cancelled_read_gives_its_connection_back(client: TestClient) -> None:
    """A read cancelled at any point, by a task cancel or an anyio deadline, still
    returns its connection to the pool and frees its database slot."""
    user, headers = create_user_and_login(client)
    for _ in range(3):
        create_post(client, headers)
    token = headers["Authorization"].removeprefix("Bearer ")
    claims = read_access_token(token)
    assert claims is not None and claims.user_id == user["id"]
    params = {**token_params(claims), "limit": 10, "skip": 0}
    request = SimpleNamespace(app=client.app)
    pool = client.app.state.engine.sync_engine.pool

    async def cancel_reads() -> list[int]:
        left_out = []
        for step in range(60):
            delay = step * 0.0001
            read = asyncio.ensure_future(read_rows(request, LIST_PAGE, params))  # type: ignore[arg-type]
            await asyncio.sleep(delay)
            read.cancel()
            with suppress(asyncio.CancelledError):
                await read
            with anyio.move_on_after(delay):
                await read_rows(request, LIST_PAGE, params)  # type: ignore[arg-type]
            left_out.append(pool.checkedout())
        return left_out

    assert set(client.portal.call(cancel_reads)) == {0}
    assert (
        client.app.state.db_slots.value
        == settings.db_pool_size + settings.db_max_overflow
    )
    assert len(client.get("/posts/", headers=headers).json()) == 3


def test_a_request_that_cannot_get_a_connection_in_time_is_503(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, headers = create_user_and_login(client)
    monkeypatch.setattr(settings, "db_pool_timeout", 0.2)
    monkeypatch.setattr(client.app.state, "db_slots", anyio.Semaphore(0))

    started = time.monotonic()
    response = client.get("/posts/", headers=headers)

    assert time.monotonic() - started < 2
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json() == {
        "detail": "The database is unavailable; try again shortly"
    }
