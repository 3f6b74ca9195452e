"""Behind PgBouncer in transaction mode, as on Heroku, Supabase and Neon: under concurrent
load every request succeeds.

The server (2 workers) reaches its scratch database through a real PgBouncer whose pool is
smaller than the app's, so each server connection serves several of the app's connections,
one transaction at a time. A driver that keeps state on a server connection between
transactions (server-side prepared statements, as asyncpg's are) then finds it missing or
someone else's, and requests fail.
"""

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.factories import PASSWORD, bearer, create_post, create_user_and_login
from tests.pgbouncer import POOL_SIZE, PgBouncer, pgbouncer
from tests.servers import (
    requires_postgres,
    running_server,
    scratch_database,
    vote_count_mismatches,
    vote_rows,
)

pytestmark = requires_postgres("puts PgBouncer in front of PostgreSQL")

APP_CONNECTIONS = 4 * POOL_SIZE
"""The server's DB_MAX_CONNECTIONS (half per worker): more than PgBouncer keeps for both
workers together, so server connections are shared between client connections."""
CLIENTS = 32
SHARED_POSTS = 5
ROUNDS = 3
"""Each client's rounds of: list, read, write a post and vote for it, vote for a shared
post and (but in the last round) take the vote back."""
REQUESTS_PER_CLIENT = 2 + 6 * ROUNDS - 1
LOAD_SECONDS = 90
SHOWN = 10
"""Failures, and server log lines, quoted in an assertion message."""


@pytest.fixture
def bounced_database() -> Iterator[tuple[str, PgBouncer]]:
    """A migrated scratch database, and a PgBouncer in front of it."""
    with (
        scratch_database("pgbouncer") as url,
        pgbouncer(make_url(url).database) as bouncer,
    ):
        yield url, bouncer


class Outcomes:
    """What the clients saw, noting every request that did not get its expected status."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.lock = threading.Lock()
        self.sent = 0
        self.failures: list[str] = []

    def expect(
        self, status: int, client: httpx.Client, method: str, path: str, **request: Any
    ) -> httpx.Response | None:
        """The response if it has `status`, else None with the failure noted."""
        what = f"{method} {path}"
        if time.monotonic() > self.deadline:
            self.fail(f"{what}: not sent, the load ran past {LOAD_SECONDS} s")
            return None
        try:
            response = client.request(method, path, **request)
        except httpx.TransportError as error:
            self.fail(f"{what}: {type(error).__name__} {error}")
            return None
        with self.lock:
            self.sent += 1
        if response.status_code != status:
            self.fail(f"{what}: {response.status_code} {response.text[:300]}")
            return None
        return response

    def fail(self, failure: str) -> None:
        with self.lock:
            self.failures.append(failure)

    def report(self) -> str:
        """How many failed, and the commonest failures with their counts."""
        common = Counter(self.failures).most_common(SHOWN)
        shown = "\n".join(f"{count} x {failure}" for failure, count in common)
        return f"{len(self.failures)} of {self.sent} requests failed:\n{shown}"


def browse_post_and_vote(
    client: httpx.Client, number: int, shared: list[int], outcomes: Outcomes
) -> int | None:
    """One client's requests, as a new user; the shared post it still votes for."""
    email = f"load{number}@example.com"
    account = {"email": email, "password": PASSWORD}
    if not outcomes.expect(201, client, "POST", "/users/", json=account):
        return None
    form = {"username": email, "password": PASSWORD}
    logged_in = outcomes.expect(200, client, "POST", "/login", data=form)
    if not logged_in:
        return None
    auth = {"headers": bearer(logged_in.json()["access_token"])}
    for round_ in range(ROUNDS):
        target = shared[(number + round_) % len(shared)]
        outcomes.expect(200, client, "GET", "/posts/", params={"limit": 10}, **auth)
        outcomes.expect(200, client, "GET", f"/posts/{random.choice(shared)}", **auth)
        post = {"title": f"load {number}-{round_}", "content": "x"}
        written = outcomes.expect(201, client, "POST", "/posts/", json=post, **auth)
        if written:
            own = {"post_id": written.json()["id"], "dir": 1}
            outcomes.expect(201, client, "POST", "/vote/", json=own, **auth)
        shared_vote = {"post_id": target, "dir": 1}
        outcomes.expect(201, client, "POST", "/vote/", json=shared_vote, **auth)
        if round_ < ROUNDS - 1:
            unvote = {"post_id": target, "dir": 0}
            outcomes.expect(201, client, "POST", "/vote/", json=unvote, **auth)
    return target


def error_lines(log: str) -> str:
    """The commonest lines of a log that name an error (traceback frames left out)."""
    lines = Counter(
        line.partition(" ERROR ")[2] or line
        for line in log.splitlines()
        if "Error" in line.partition(" ")[0] or " ERROR " in line
    )
    return "\n".join(f"{count} x {line}" for line, count in lines.most_common(SHOWN))


def test_concurrent_load_through_pgbouncer_in_transaction_mode_never_fails(
    bounced_database: tuple[str, PgBouncer],
) -> None:
    database_url, bouncer = bounced_database
    with (
        running_server(
            bouncer.url, workers=2, DB_MAX_CONNECTIONS=str(APP_CONNECTIONS)
        ) as server,
        server.client() as client,
    ):
        _, author = create_user_and_login(client)
        shared = [create_post(client, author)["id"] for _ in range(SHARED_POSTS)]
        outcomes = Outcomes(deadline=time.monotonic() + LOAD_SECONDS)
        start = threading.Barrier(CLIENTS, timeout=30)
        kept: list[int | None] = [None] * CLIENTS

        def run(number: int) -> None:
            start.wait()
            with server.client(timeout=10) as own:
                kept[number] = browse_post_and_vote(own, number, shared, outcomes)

        threads = [threading.Thread(target=run, args=(n,)) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()
        joined_by = time.monotonic() + LOAD_SECONDS + 15
        for thread in threads:
            thread.join(timeout=max(0, joined_by - time.monotonic()))
        assert not any(thread.is_alive() for thread in threads)

        log = server.log_text()
        assert outcomes.failures == [], (
            f"{outcomes.report()}\nserver log:\n{error_lines(log)}"
        )
        assert outcomes.sent == CLIENTS * REQUESTS_PER_CLIENT
        assert "Traceback" not in log, log
        for post_id in shared:
            response = client.get(f"/posts/{post_id}", headers=author)
            assert response.status_code == 200, response.text
            assert response.json()["votes"] == kept.count(post_id), response.text

    assert bouncer.client_logins() > POOL_SIZE, (
        "the app never held more connections than PgBouncer's pool: none were shared"
    )
    assert len(vote_rows(database_url)) == CLIENTS * (ROUNDS + 1)
    assert vote_count_mismatches(database_url) == {}
