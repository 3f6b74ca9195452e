"""Database faults: the database going away and coming back, refusing connections,
statements stuck behind a lock, the pool running dry, cancelled reads, the server killed
mid-burst, and vote counts under concurrent voting and account deletion; and a
DATABASE_URL carrying the libpq options hosts hand out.

The outage tests start a PostgreSQL cluster of their own and stop that one (never the
shared server), so they run on the PostgreSQL run only, as do the others that need a
PostgreSQL feature. A test that changes settings or damages a database runs an app of its
own (`TestClient(create_app())`), on a scratch database where it needs one (see
tests/servers.py); the shared test database is never altered.
"""

import gc
import json
import random
import threading
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from urllib.parse import urlencode

import anyio
import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, event, make_url, text
from sqlalchemy.exc import OperationalError, SAWarning
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import NullPool
from starlette.types import Message

from blogapi.config import Settings, settings
from blogapi.db import IDLE_PING_SECONDS
from blogapi.main import create_app
from blogapi.resources import resources_of
from tests.factories import (
    PASSWORD,
    bearer,
    create_post,
    create_user,
    create_user_and_login,
    engine,
    login,
    make_token,
    vote,
)
from tests.servers import (
    ServerProcess,
    migrate,
    postgres_cluster,
    requires_postgres,
    running_server,
    scratch_database,
    vote_count_mismatches,
    vote_rows,
)

OUTAGE_ANSWER_SECONDS = 5
"""How long a request may take to be refused while the database is down, busy or locked:
a generous bound that a loaded machine meets, and under the 10 s that a request would wait
by default for a connection or a statement (DB_POOL_TIMEOUT, DB_STATEMENT_TIMEOUT)."""


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
def test_a_database_that_refuses_connections_is_503(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Too many connections (SQLSTATE 53300) is the database being busy, not a bug."""
    role = f"blogapi_no_connections_{uuid.uuid4().hex[:8]}"
    refused = make_url(settings.database_url).set(username=role)
    headers = bearer(make_token("1"))
    requests = {
        "list posts": lambda client: client.get("/posts/", headers=headers),
        "register": lambda client: client.post(
            "/users/", json={"email": "ada@example.com", "password": PASSWORD}
        ),
        "readiness": lambda client: client.get("/health/ready"),
    }
    with engine.begin() as connection:
        connection.execute(text(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 0"))
    try:
        with pytest.raises(OperationalError, match="too many connections for role"):
            create_engine(refused, poolclass=NullPool).connect()
        monkeypatch.setattr(
            settings, "database_url", refused.render_as_string(hide_password=False)
        )
        with TestClient(create_app()) as client:
            for name, send in requests.items():
                response, elapsed = timed(partial(send, client))
                assert_database_unavailable(name, response, elapsed)
    finally:
        with engine.begin() as connection:
            connection.execute(text(f"DROP ROLE {role}"))


LIBPQ_OPTIONS = {
    "sslmode": "prefer",
    "channel_binding": "prefer",
    "connect_timeout": "10",
    "application_name": "blogapi-test",
    "options": "-csearch_path=public",
    "target_session_attrs": "read-write",
}
"""What PaaS hosts put in DATABASE_URL, in the forms this local server (no TLS) accepts:
`sslmode=require` and `channel_binding=require` need TLS, which it does not offer."""


def with_libpq_options(database_url: str, scheme: str) -> str:
    """The scratch database's URL as a host hands it out: no driver, the options as query."""
    url = make_url(database_url)
    return (
        f"{scheme}://{url.username}@{url.host}:{url.port}/{url.database}?"
        + urlencode(LIBPQ_OPTIONS)
    )


def emptied(database_url: str) -> None:
    """Take a scratch database back to nothing, so the next migration starts from scratch."""
    eraser = create_engine(database_url, poolclass=NullPool)
    try:
        with eraser.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
    finally:
        eraser.dispose()


def application_names(database_url: str) -> list[str]:
    """The application_name of every other connection to the database."""
    observer = create_engine(database_url, poolclass=NullPool)
    try:
        with observer.connect() as connection:
            return list(
                connection.execute(
                    text(
                        "SELECT application_name FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).scalars()
            )
    finally:
        observer.dispose()


def use_the_api(client: httpx.Client | TestClient) -> None:
    """Register, log in, post and list: each a real request with its statements."""
    user = create_user(client)
    headers = login(client, user["email"])
    post = create_post(client, headers)
    listed = client.get("/posts/", headers=headers)
    assert listed.status_code == 200, listed.text
    assert [found["id"] for found in listed.json()] == [post["id"]]


@pytest.fixture
def blank_database() -> Iterator[str]:
    """A scratch database with nothing in it, not even the migrations' bookkeeping."""
    with scratch_database("libpq") as url:
        emptied(url)
        yield url


@requires_postgres("connects to PostgreSQL with libpq options in the URL")
@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_a_database_url_with_libpq_options_works_for_migrations_and_the_app(
    blank_database: str, monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    database_url = Settings(
        database_url=with_libpq_options(blank_database, scheme)
    ).database_url
    migrate(database_url)
    monkeypatch.setattr(settings, "database_url", database_url)

    with TestClient(create_app()) as client:
        use_the_api(client)

        async def search_path() -> str:
            async with resources_of(client.app).engine.connect() as connection:
                return (await connection.execute(text("SHOW search_path"))).scalar_one()

        assert client.portal.call(search_path) == "public"
        assert "blogapi-test" in application_names(blank_database)


@requires_postgres("connects to PostgreSQL with libpq options in the URL")
def test_a_server_given_a_postgres_url_with_libpq_options_migrates_and_serves(
    blank_database: str,
) -> None:
    """DATABASE_URL exactly as a host hands it out, to `python -m blogapi`: its
    migrations and its workers both connect through it."""
    database_url = with_libpq_options(blank_database, "postgres")
    with (
        running_server(database_url, workers=1) as server,
        server.client() as client,
    ):
        use_the_api(client)
        assert "blogapi-test" in application_names(blank_database)


WRITERS = 4
WRITES_PER_WRITER = 200
ACKNOWLEDGED_BEFORE_KILL = 20
BURST_SECONDS = 60


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


STATEMENT_TIMEOUT = 0.5


@pytest.fixture
def half_second_statements(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A scratch database migrated with DB_STATEMENT_TIMEOUT=0.5, which makes 500 ms its
    default, and the settings pointed at it."""
    monkeypatch.setattr(settings, "db_statement_timeout", STATEMENT_TIMEOUT)
    with scratch_database("timeout") as url:
        monkeypatch.setattr(settings, "database_url", url)
        yield url


@requires_postgres(
    "the statement timeout is PostgreSQL's; SQLite waits on its busy timeout"
)
@pytest.mark.parametrize("request_kind", ["an edit", "the list", "a read"])
def test_a_statement_stuck_behind_a_lock_is_503_after_the_statement_timeout(
    half_second_statements: str, request_kind: str
) -> None:
    outside = create_engine(half_second_statements, poolclass=NullPool)
    with outside.connect() as fresh:
        timeout = fresh.execute(text("SHOW statement_timeout")).scalar_one()
    assert timeout == "500ms"

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

        with outside.connect() as holder:
            holder.execute(text("LOCK TABLE posts IN ACCESS EXCLUSIVE MODE"))
            response, elapsed = timed(lambda: send("behind the lock"))
            holder.rollback()
        outside.dispose()

        assert_database_unavailable(f"{request_kind} behind a lock", response, elapsed)
        # The pool hands out its most recently returned connection first: the one whose
        # statement timed out is the next one used, and must work.
        for attempt in range(3):
            assert send(f"edit {attempt}").status_code == 200
        last_title = "edit 2" if request_kind == "an edit" else post["title"]
        assert client.get(path, headers=headers).json()["title"] == last_title


def http_scope(method: str, path: str, headers: dict[str, str]) -> dict:
    """An ASGI HTTP scope as a server builds it for a request from 127.0.0.1."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")]
        + [(name.lower().encode(), value.encode()) for name, value in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }


FIRST_DEADLINE = 0.00001
ANSWERED_READS = 20
"""Reads cancelled after 10 µs, 10.3 µs, ..., each deadline 3% later than the last:
before the first statement, through the connection's checkout (a new connection's too),
its statements and its return, until this many reads were answered, however long a read
takes on this machine (the deadlines stop growing at DB_POOL_TIMEOUT)."""


def test_a_cancelled_read_gives_its_connection_back(client: TestClient) -> None:
    """A read cancelled at any point by an anyio deadline (how Starlette and FastAPI
    cancel work) returns its connection to the pool: none stays checked out, and none is
    left for the garbage collector to drop."""
    _, headers = create_user_and_login(client)
    for _ in range(3):
        create_post(client, headers)
    scope = http_scope("GET", "/posts/", headers)
    pool = resources_of(client.app).engine.sync_engine.pool
    answered: list[int] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            answered.append(message["status"])

    async def cancelled_reads() -> list[int]:
        checked_out, deadline = [], FIRST_DEADLINE
        while len(answered) < ANSWERED_READS:
            with anyio.move_on_after(min(deadline, settings.db_pool_timeout)):
                await client.app(dict(scope), receive, send)
            checked_out.append(pool.checkedout())
            deadline *= 1.03
        return checked_out

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checked_out = client.portal.call(cancelled_reads)
        gc.collect()

    assert set(checked_out) == {0}
    dropped = [
        str(warning.message)
        for warning in caught
        if issubclass(warning.category, SAWarning)
        and "non-checked-in connection" in str(warning.message)
    ]
    assert dropped == []
    assert answered == [200] * ANSWERED_READS
    assert len(checked_out) > ANSWERED_READS, "no read was cut short"
    assert len(client.get("/posts/", headers=headers).json()) == 3


QUEUED = ["waiting 1", "waiting 2", "waiting 3"]
NEWCOMERS = ["newcomer 1", "newcomer 2"]


async def queue_for_the_only_connection(app: FastAPI, headers: dict[str, str]) -> None:
    """Hold the app's one connection; queue requests for it one by one; then give it back,
    with newcomers arriving at that very moment: the pool's checkin event (fired just
    before the connection is put back) delivers their bodies, so each runs on to ask for
    the connection before any queued request has woken up to take it."""
    pool = resources_of(app).engine.sync_engine.pool
    handed_back = anyio.Event()

    def on_checkin(*_: object) -> None:
        handed_back.set()

    async def body_on_hand_back(title: str) -> AsyncIterator[bytes]:
        await handed_back.wait()
        yield json.dumps({"title": title, "content": "In turn"}).encode()

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://app", headers=headers
    ) as http:

        async def create(title: str, arriving_late: bool = False) -> None:
            body = body_on_hand_back(title) if arriving_late else None
            response = await http.post(
                "/posts/",
                content=body,
                json=None if arriving_late else {"title": title, "content": "In turn"},
                headers={"Content-Type": "application/json"},
            )
            assert response.status_code == 201, response.text

        held = await resources_of(app).engine.connect()
        event.listen(pool, "checkin", on_checkin)
        try:
            async with anyio.create_task_group() as requests:
                for title in QUEUED:
                    requests.start_soon(create, title)
                    await anyio.wait_all_tasks_blocked()  # it waits for the connection
                for title in NEWCOMERS:
                    requests.start_soon(create, title, True)
                await anyio.wait_all_tasks_blocked()
                await held.close()
        finally:
            event.remove(pool, "checkin", on_checkin)


def test_requests_get_the_database_connection_in_arrival_order_newcomers_included(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One connection (DB_MAX_CONNECTIONS=1, one worker), busy: requests get it in the
    order they asked for it, and one arriving just as it is handed on waits its turn.

    How it was checked: against the app's pool as it is (SQLAlchemy 2.1's
    AsyncAdaptedQueuePool) it fails on SQLite and PostgreSQL, every run: "newcomer 1" gets
    the connection first. With a hand-off queue swapped into that pool locally (a connection
    put back goes straight to the longest waiter; never committed) it passes on both.
    """
    monkeypatch.setattr(settings, "db_max_connections", 1)
    monkeypatch.setattr(settings, "web_concurrency", 1)
    with TestClient(create_app()) as client:
        _, headers = create_user_and_login(client)
        assert resources_of(client.app).engine.sync_engine.pool.size() == 1

        client.portal.call(queue_for_the_only_connection, client.app, headers)

        posts = client.get("/posts/", params={"limit": 100}, headers=headers).json()
    assert [post["title"] for post in sorted(posts, key=lambda post: post["id"])] == [
        *QUEUED,
        *NEWCOMERS,
    ]


def test_a_request_that_cannot_get_a_connection_in_time_is_503(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "db_max_connections", 1)
    monkeypatch.setattr(settings, "web_concurrency", 1)
    monkeypatch.setattr(settings, "db_pool_timeout", 0.2)
    with TestClient(create_app()) as client:
        _, headers = create_user_and_login(client)
        app_engine = resources_of(client.app).engine
        assert app_engine.sync_engine.pool.size() == 1

        async def take_the_only_connection() -> AsyncConnection:
            return await app_engine.connect()

        held = client.portal.call(take_the_only_connection)
        try:
            response, elapsed = timed(lambda: client.get("/posts/", headers=headers))
        finally:
            client.portal.call(held.close)

        assert_database_unavailable("a request with no connection", response, elapsed)
        assert response.headers["retry-after"] == "5"
        assert client.get("/posts/", headers=headers).status_code == 200
