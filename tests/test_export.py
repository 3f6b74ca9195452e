"""GET /users/me/export: the document, its batches (each on a connection of its own),
one export at a time per user (in memory and through Redis), a failure midway that
leaves the document unclosed, and a 100,000-post account streamed in bounded memory by a
real server process."""

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event, insert, text
from starlette.types import Message

from blogapi.config import settings
from blogapi.export import BATCH_ROWS, RETRY_SECONDS, AccountExport
from blogapi.main import create_app
from blogapi.resources import resources_of
from blogapi.throttle import CLAIM_PREFIX
from blogapi.votes import Vote
from tests.factories import (
    assert_unauthorized,
    bearer,
    create_post,
    create_user,
    create_user_and_login,
    engine,
    login,
    vote,
)
from tests.redis_server import patient, redis_test_url, requires_redis
from tests.servers import ServerProcess, serving_in_thread

REDIS_URL = patient(redis_test_url() or "")
NEEDS_REDIS = requires_redis("exports claimed in Redis need a Redis server")
UNDER_WAY = "An export of this account is already under way; try again later"
VOTES = Vote.metadata.tables["votes"]


def export(client: httpx.Client, headers: dict[str, str]) -> httpx.Response:
    return client.get("/users/me/export", headers=headers)


def assert_under_way(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json() == {"detail": UNDER_WAY}
    assert response.headers["retry-after"] == str(RETRY_SECONDS)


SEED_ROWS = 20_000
"""Posts per INSERT: each statement well within the test database's statement timeout."""
_SEED = text(
    "INSERT INTO posts (owner_id, title, content, published, created_at, votes) "
    "WITH RECURSIVE numbers(n) AS (SELECT CAST(:first AS INTEGER) "
    "UNION ALL SELECT n + 1 FROM numbers WHERE n < :last) "
    "SELECT :owner, 'Seeded post ' || n, :content, n % 10 <> 0, :now, 0 FROM numbers"
)


def seed_posts(owner_id: int, count: int, content: str = "Some content") -> None:
    """`count` posts of the owner, made by the database itself in bulk INSERTs."""
    with engine.begin() as connection:
        for first in range(1, count + 1, SEED_ROWS):
            params = {
                "first": first,
                "last": min(first + SEED_ROWS - 1, count),
                "owner": owner_id,
                "content": content,
                "now": datetime.now(UTC),
            }
            connection.execute(_SEED, params)
        if connection.dialect.name == "postgresql":
            # As autovacuum would soon: the planner's row counts for the new rows.
            connection.execute(text("ANALYZE posts"))


def seed_votes(user_id: int, post_ids: list[int]) -> None:
    rows = [
        {"user_id": user_id, "post_id": post_id, "created_at": datetime.now(UTC)}
        for post_id in post_ids
    ]
    with engine.begin() as connection:
        connection.execute(insert(VOTES), rows)


def post_ids_of(owner_id: int) -> list[int]:
    with engine.connect() as connection:
        found = connection.execute(
            text("SELECT id FROM posts WHERE owner_id = :owner ORDER BY id"),
            {"owner": owner_id},
        )
        return [row_id for (row_id,) in found]


# The document


def test_the_export_holds_the_account_every_post_and_every_vote(
    client: TestClient,
) -> None:
    user, headers = create_user_and_login(client)
    other, others_headers = create_user_and_login(client)
    published = create_post(client, headers)
    draft = create_post(client, headers, published=False)
    theirs = create_post(client, others_headers)
    create_post(client, others_headers, published=False)
    for post in (published, theirs):
        assert vote(client, headers, post["id"]).status_code == 201
    assert vote(client, others_headers, published["id"]).status_code == 201

    response = export(client, headers)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-disposition"] == (
        f'attachment; filename="blogapi-export-{user["id"]}.json"'
    )
    assert response.headers["cache-control"] == "no-store"
    document = response.json()
    # Written as the documented model writes itself, byte for byte.
    exported = AccountExport.model_validate_json(response.content)
    assert exported.model_dump_json().encode() == response.content
    assert set(document) == {"exported_at", "user", "posts", "votes"}
    exported_at = datetime.fromisoformat(document["exported_at"])
    assert abs(datetime.now(UTC) - exported_at).total_seconds() < 60
    assert document["user"] == {**user, "is_admin": False, "is_active": True}
    shown = [
        client.get(f"/posts/{p['id']}", headers=headers).json()
        for p in (published, draft)
    ]
    assert document["posts"] == [
        {
            key: post[key]
            for key in ("id", "title", "content", "published", "created_at", "votes")
        }
        for post in shown
    ]
    assert [post["votes"] for post in document["posts"]] == [2, 0]
    assert [v["post_id"] for v in document["votes"]] == [published["id"], theirs["id"]]
    assert all(datetime.fromisoformat(v["created_at"]) for v in document["votes"])
    assert "password" not in response.text and "token_version" not in response.text
    assert other["email"] not in response.text


def test_an_empty_account_exports_empty_lists(client: TestClient) -> None:
    user, headers = create_user_and_login(client)

    document = export(client, headers).json()

    assert document["user"]["id"] == user["id"]
    assert document["posts"] == []
    assert document["votes"] == []


def test_the_export_needs_a_valid_token(client: TestClient) -> None:
    assert_unauthorized(client.get("/users/me/export"), "Not authenticated")
    assert_unauthorized(export(client, bearer("not-a-token")))


def test_each_batch_is_a_statement_on_a_connection_of_its_own(
    client: TestClient,
) -> None:
    """Posts and votes are read BATCH_ROWS at a time by id, each statement on a
    connection taken from the pool and given back before the next: none is held
    between batches (or while the client reads)."""
    user, headers = create_user_and_login(client)
    seed_posts(user["id"], 2 * BATCH_ROWS + 1)
    seed_votes(user["id"], post_ids_of(user["id"])[: BATCH_ROWS + 1])
    app_engine = resources_of(client.app).engine.sync_engine
    checkouts, held_at_statements = [], []

    def on_checkout(*_: Any) -> None:
        checkouts.append(1)

    def on_statement(*_: Any) -> None:
        held_at_statements.append(app_engine.pool.checkedout())

    event.listen(app_engine.pool, "checkout", on_checkout)
    event.listen(app_engine, "before_cursor_execute", on_statement)
    try:
        response = export(client, headers)
    finally:
        event.remove(app_engine.pool, "checkout", on_checkout)
        event.remove(app_engine, "before_cursor_execute", on_statement)

    assert response.status_code == 200
    document = response.json()
    post_ids = [post["id"] for post in document["posts"]]
    assert post_ids == post_ids_of(user["id"])
    assert len(post_ids) == 2 * BATCH_ROWS + 1
    assert [v["post_id"] for v in document["votes"]] == post_ids[: BATCH_ROWS + 1]
    # The token's user, then 3 batches of posts (500, 500, 1) and 2 of votes (500, 1).
    assert len(held_at_statements) == 1 + 3 + 2
    assert held_at_statements == [1] * 6
    assert len(checkouts) == 6
    assert app_engine.pool.checkedout() == 0


# One export at a time


class HeldExport:
    """GET /users/me/export through the app's ASGI interface, on the event loop of a
    running TestClient, held after the body's first chunk: an export under way, for as
    long as the test needs, until `finish()` or `disconnect()`."""

    def __init__(self, client: TestClient, headers: dict[str, str]) -> None:
        self.portal = client.portal
        assert self.portal is not None
        self.app = client.app
        self.status = 0
        self.chunks: list[bytes] = []
        self.held = threading.Event()
        self.go_on: anyio.Event = self.portal.call(anyio.Event)
        self.gone: anyio.Event = self.portal.call(anyio.Event)
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/users/me/export",
            "raw_path": b"/users/me/export",
            "root_path": "",
            "query_string": b"",
            "headers": [
                (b"host", b"testserver"),
                (b"authorization", headers["Authorization"].encode()),
            ],
            "client": ("testclient", 50000),
            "server": ("testserver", 80),
        }
        self.done = self.portal.start_task_soon(self._run)
        assert self.held.wait(60), "the export sent no body"
        assert self.status == 200

    async def _run(self) -> None:
        requested = False

        async def receive() -> Message:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await self.gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
            elif message["type"] == "http.response.body":
                self.chunks.append(message.get("body", b""))
                if not self.held.is_set():
                    self.held.set()
                    await self.go_on.wait()

        try:
            await self.app(self.scope, receive, send)
        finally:
            self.held.set()

    def finish(self) -> bytes:
        """Let it go on to the end; the whole body."""
        self.portal.call(self.go_on.set)
        self.done.result(timeout=120)
        return b"".join(self.chunks)

    def disconnect(self) -> None:
        """The client goes away before the rest is sent."""
        self.portal.call(self.gone.set)
        self.done.result(timeout=120)


def test_a_second_export_while_one_is_under_way_is_429(client: TestClient) -> None:
    user, headers = create_user_and_login(client)
    seed_posts(user["id"], BATCH_ROWS + 1)
    _, others_headers = create_user_and_login(client)
    first = HeldExport(client, headers)

    second = export(client, login(client, user["email"]))
    someone_else = export(client, others_headers)
    body = first.finish()
    after = export(client, headers)

    assert_under_way(second)
    assert someone_else.status_code == 200
    assert len(json.loads(body)["posts"]) == BATCH_ROWS + 1
    assert after.status_code == 200
    assert after.json()["posts"] == json.loads(body)["posts"]


def test_a_client_that_goes_away_lets_go_of_the_export(client: TestClient) -> None:
    user, headers = create_user_and_login(client)
    seed_posts(user["id"], BATCH_ROWS + 1)
    first = HeldExport(client, headers)
    assert_under_way(export(client, headers))

    first.disconnect()

    assert not b"".join(first.chunks).endswith(b"]}")
    assert export(client, headers).status_code == 200
    assert resources_of(client.app).engine.sync_engine.pool.checkedout() == 0


@pytest.fixture
def redis_user(client: TestClient) -> Iterator[tuple[dict, dict[str, str]]]:
    """A user whose export claim in Redis goes after the test. Ids restart with each
    test database, so another run on the same Redis may use the same id meanwhile: the
    claim lasts seconds, and the user's email is the test's own."""
    user = create_user(client, email=f"{uuid.uuid4().hex}@example.com")
    yield user, login(client, user["email"])
    connection = redis.Redis.from_url(REDIS_URL)
    connection.delete(f"{CLAIM_PREFIX}export:{user['id']}")
    connection.close()


@NEEDS_REDIS
def test_two_apps_on_redis_run_one_export_per_user_between_them(
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    redis_user: tuple[dict, dict[str, str]],
) -> None:
    user, headers = redis_user
    seed_posts(user["id"], BATCH_ROWS + 1)
    monkeypatch.setattr(settings, "redis_url", REDIS_URL)
    first_app, second_app = create_app(), create_app()

    with TestClient(first_app) as first, TestClient(second_app) as second:
        held = HeldExport(first, headers)
        elsewhere = export(second, headers)
        body = held.finish()
        after = export(second, headers)

    assert_under_way(elsewhere)
    assert len(json.loads(body)["posts"]) == BATCH_ROWS + 1
    assert after.status_code == 200


# A failure midway, through a real server


def fail_posts_batch(app: FastAPI, number: int) -> None:
    """Make the app's `number`th statement reading a batch of posts fail: on
    PostgreSQL its connection is terminated (pg_terminate_backend) just before it runs;
    SQLite, which has no server, raises the error a failing disk would."""
    app_engine = resources_of(app).engine.sync_engine
    seen = 0

    def before(connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        nonlocal seen
        if "FROM posts" not in statement or "posts.id >" not in statement:
            return
        seen += 1
        if seen != number:
            return
        if connection.dialect.name != "postgresql":
            raise sqlite3.OperationalError("disk I/O error")
        pid = connection.connection.driver_connection.info.backend_pid
        with engine.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

    event.listen(app_engine, "before_cursor_execute", before)


def test_a_failure_midway_ends_the_response_without_the_closing_bracket(
    client: TestClient,
) -> None:
    user = create_user(client)
    seed_posts(user["id"], 2 * BATCH_ROWS + 1)
    app = create_app()

    with serving_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        headers = login(http, user["email"])
        fail_posts_batch(app, number=2)
        received = bytearray()
        with (
            pytest.raises(httpx.RemoteProtocolError),
            http.stream("GET", "/users/me/export", headers=headers) as response,
        ):
            assert response.status_code == 200
            for chunk in response.iter_bytes():
                received += chunk
        again = export(http, headers)

    assert received.startswith(b'{"exported_at":')
    assert not received.rstrip().endswith(b"]}")
    with pytest.raises(json.JSONDecodeError):
        json.loads(received)
    # The first batch went out whole; nothing of the failed one did.
    assert received.count(b'"title":"Seeded post') == BATCH_ROWS
    assert again.status_code == 200
    assert len(again.json()["posts"]) == 2 * BATCH_ROWS + 1


# A large account, through a real server process

LARGE = 100_000
CONTENT = "A paragraph of text that stands for a post of ordinary length. " * 4


def status_kb(pid: int, field: str) -> int:
    """A field of /proc/<pid>/status in kB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def the_worker(server: ServerProcess) -> int:
    """The pid of the one gunicorn worker under the server's master process."""
    assert server.process is not None
    master = server.process.pid
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


@pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(),
    reason="reads the server's peak memory from Linux's /proc",
)
def test_a_100k_post_account_streams_in_bounded_memory() -> None:
    """The worker's peak resident memory grows by less than half the document while it
    streams 100,000 posts: it never holds the document, nor all of its rows."""
    with ServerProcess(settings.database_url) as server, server.client(120) as http:
        warm, warm_headers = create_user_and_login(http)
        seed_posts(warm["id"], 10)
        user, headers = create_user_and_login(http)
        seed_posts(user["id"], LARGE, CONTENT)
        seed_votes(user["id"], post_ids_of(user["id"])[:1_000])
        assert export(http, warm_headers).status_code == 200  # the code paths loaded
        worker = the_worker(server)
        Path(f"/proc/{worker}/clear_refs").write_text("5")  # VmHWM := VmRSS
        before_kb = status_kb(worker, "VmRSS")

        started = time.monotonic()
        body = bytearray()
        with http.stream("GET", "/users/me/export", headers=headers) as response:
            assert response.status_code == 200
            chunks = response.iter_bytes()
            body += next(chunks)
            # The first export is under way: its client has not read the rest.
            concurrent = export(http, headers)
            for chunk in chunks:
                body += chunk
        seconds = time.monotonic() - started
        peak_kb = status_kb(worker, "VmHWM")
        with http.stream("GET", "/users/me/export", headers=headers) as after:
            pass  # the claim went with the first export; leave without reading

    document = json.loads(body)
    ids = [post["id"] for post in document["posts"]]
    growth_mb, size_mb = (peak_kb - before_kb) / 1024, len(body) / 2**20
    print(f"\n{size_mb:.1f} MB in {seconds:.1f} s; worker peak grew {growth_mb:.1f} MB")
    assert len(ids) == LARGE
    assert ids == sorted(set(ids))
    assert len(document["votes"]) == 1_000
    assert size_mb > 30
    assert growth_mb < size_mb / 2
    assert_under_way(concurrent)
    assert after.status_code == 200
