"""What a database error answers: a fault in the code or the schema (a missing table) is a
500 whose traceback is logged, never a 503 that would send clients back to retry it; a
deadlock is retried once, and a second one is a 503.

The missing-table tests damage a scratch database of their own, with an app pointed at it
(see tests/servers.py). The deadlock tests make real deadlocks between an app request and
an outside connection on the PostgreSQL run.
"""

import logging
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.pool import NullPool

from blogapi.config import settings
from blogapi.main import create_app
from tests.factories import (
    blogapi_log,
    count_vote_rows,
    create_post,
    create_user_and_login,
    engine,
    vote,
)
from tests.servers import requires_postgres, scratch_database, vote_count_mismatches

WAIT_SECONDS = 20
"""The longest any step here waits for another connection: generous, for a loaded
machine; each step normally takes a second or less."""


@pytest.fixture
def scratch_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, str]]:
    """An app of its own on a scratch database, which a test may damage."""
    with scratch_database("errors") as url:
        monkeypatch.setattr(settings, "database_url", url)
        with TestClient(create_app()) as client:
            yield client, url


@pytest.mark.parametrize(
    ("damage", "table"),
    [
        ("DROP TABLE revoked_tokens", "revoked_tokens"),
        ("ALTER TABLE posts RENAME TO posts_elsewhere", "posts"),
    ],
)
def test_a_missing_table_is_a_500_with_its_traceback_logged(
    scratch_app: tuple[TestClient, str],
    caplog: pytest.LogCaptureFixture,
    damage: str,
    table: str,
) -> None:
    client, url = scratch_app
    _, headers = create_user_and_login(client)
    outside = create_engine(url, poolclass=NullPool)
    with outside.begin() as connection:
        connection.execute(text(damage))
    outside.dispose()

    with blogapi_log(caplog):
        listed = client.get("/posts/", headers=headers)
        posted = client.post(
            "/posts/", json={"title": "t", "content": "c"}, headers=headers
        )

    for response in (listed, posted):
        assert response.status_code == 500, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"detail": "Internal server error"}
        assert "retry-after" not in response.headers
    failures = [record for record in caplog.records if record.exc_info]
    assert [record.getMessage() for record in failures] == [
        "unhandled error on GET /posts/",
        "unhandled error on POST /posts/",
    ]
    for record in failures:
        assert record.exc_info is not None and table in str(record.exc_info[1])
        traceback = logging.Formatter().formatException(record.exc_info)
        assert traceback.startswith("Traceback (most recent call last)")
    assert "database unavailable" not in caplog.text


# Deadlocks (PostgreSQL). The outside connection locks the post's row; the app's vote
# inserts its row, and its trigger then waits to update the post's count. The outside
# connection inserts the same vote, and so waits for the app's uncommitted row: each
# waits for the other. The app's backend, waiting first, runs the deadlock check after
# the server's deadlock_timeout (1 s); the outside one's is put off to 60 s, so the app's
# transaction is the one PostgreSQL aborts (40P01), and RetryConflicts runs it again.


def backend_pid(connection: Connection) -> int:
    return connection.execute(text("SELECT pg_backend_pid()")).scalar_one()


def wait_until_blocked_by(pid: int, what: str) -> None:
    """Until another backend (`what`: the app's request) waits for a lock `pid` holds."""
    deadline = time.monotonic() + WAIT_SECONDS
    with engine.connect() as observer:
        while time.monotonic() < deadline:
            waiting = observer.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE CAST(:pid AS integer) = ANY(pg_blocking_pids(pid))"
                ),
                {"pid": pid},
            ).scalar_one()
            observer.rollback()
            if waiting:
                return
            time.sleep(0.01)
    raise AssertionError(f"{what} did not wait for backend {pid} in {WAIT_SECONDS} s")


def deadlocks_detected() -> int:
    with engine.connect() as observer:
        observer.execute(text("SELECT pg_stat_clear_snapshot()"))
        return observer.execute(
            text(
                "SELECT deadlocks FROM pg_stat_database "
                "WHERE datname = current_database()"
            )
        ).scalar_one()


def wait_for_deadlocks(count: int) -> int:
    """The server's deadlock count once it reaches `count` (its statistics lag a little)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while (found := deadlocks_detected()) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


@pytest.fixture
def outside() -> Iterator[Connection]:
    """A connection in a transaction that waits up to WAIT_SECONDS for any lock, and
    leaves the deadlock check to the app's backend."""
    with engine.connect() as connection:
        with engine.connect() as settings_check:
            assert (
                settings_check.execute(text("SHOW deadlock_timeout")).scalar_one()
                == "1s"
            )
        connection.execute(text("SET LOCAL deadlock_timeout = '60s'"))
        connection.execute(text(f"SET LOCAL lock_timeout = '{WAIT_SECONDS}s'"))
        try:
            yield connection
        finally:
            connection.rollback()


VOTE_BY_HAND = text(
    "INSERT INTO votes (user_id, post_id, created_at) VALUES (:user, :post, now())"
)


@contextmanager
def vote_in_a_deadlock(
    client: TestClient, outside: Connection
) -> Iterator[tuple[dict[str, Any], dict[str, str], "Future[httpx.Response]"]]:
    """A vote whose first run the database aborts as a deadlock with `outside`: yields
    the post, its author's headers and the request once its second run waits for the
    same vote, which `outside` now holds."""
    _, author = create_user_and_login(client)
    post = create_post(client, author)
    voter, headers = create_user_and_login(client)
    pid = backend_pid(outside)
    outside.execute(
        text("SELECT id FROM posts WHERE id = :post FOR UPDATE"), {"post": post["id"]}
    )
    with ThreadPoolExecutor(1) as requests:
        voting = requests.submit(vote, client, headers, post["id"])
        wait_until_blocked_by(pid, "the vote")
        # Waits for the app's uncommitted vote, and returns once the deadlock check
        # has rolled the app's transaction back: the same vote is now this one's.
        outside.execute(VOTE_BY_HAND, {"user": voter["id"], "post": post["id"]})
        wait_until_blocked_by(pid, "the vote's second run")
        yield post, author, voting


@requires_postgres("makes a deadlock between PostgreSQL backends")
def test_a_deadlocked_request_is_run_again_and_counts_once(
    client: TestClient, outside: Connection
) -> None:
    deadlocks_before = deadlocks_detected()
    with vote_in_a_deadlock(client, outside) as (post, author, voting):
        # The request's second run waits for the outside vote; take it back.
        outside.rollback()
        response = voting.result(timeout=WAIT_SECONDS)

    assert response.status_code == 201, response.text
    assert response.json() == {"message": "successfully added vote"}
    assert count_vote_rows(post["id"]) == 1
    shown = client.get(f"/posts/{post['id']}", headers=author).json()["votes"]
    assert shown == 1
    assert vote_count_mismatches(settings.database_url) == {}
    assert wait_for_deadlocks(deadlocks_before + 1) == deadlocks_before + 1


@requires_postgres("makes a deadlock between PostgreSQL backends")
def test_a_request_deadlocked_twice_is_503(
    client: TestClient, outside: Connection
) -> None:
    deadlocks_before = deadlocks_detected()
    with vote_in_a_deadlock(client, outside) as (post, author, voting):
        # The second run waits for the outside vote while holding the votes table in
        # ROW EXCLUSIVE mode, which this waits for: a second deadlock.
        outside.execute(text("LOCK TABLE votes IN SHARE MODE"))
        outside.rollback()
        response = voting.result(timeout=WAIT_SECONDS)

    assert response.status_code == 503, response.text
    assert response.json() == {
        "detail": "The database is unavailable; try again shortly"
    }
    assert int(response.headers["retry-after"]) > 0
    assert count_vote_rows(post["id"]) == 0
    shown = client.get(f"/posts/{post['id']}", headers=author).json()["votes"]
    assert shown == 0
    assert wait_for_deadlocks(deadlocks_before + 2) == deadlocks_before + 2
