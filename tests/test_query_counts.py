"""A request runs a fixed number of SQL statements, whatever the page size: no N+1.

Every request authenticates first (one SELECT of the token's user); a read then runs one
statement for the page, owners and vote counts included, and a write runs only the
statements it needs, with no read-back SELECT.
"""

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import event

from blogapi.main import app
from blogapi.resources import resources_of
from tests.factories import create_post, create_user_and_login, vote

USER_LOOKUP = 1


@contextmanager
def recorded_statements(client: TestClient) -> Iterator[list[str]]:
    """The SQL statements the app sends to the database inside the block."""
    engine = resources_of(client.app).engine.sync_engine
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def selects(statements: list[str]) -> list[str]:
    return [s for s in statements if s.lstrip().upper().startswith("SELECT")]


def test_reads_run_a_fixed_number_of_statements(client: TestClient) -> None:
    """105 posts from four owners, some drafts, most with votes: no query per row."""
    owners = [create_user_and_login(client)[1] for _ in range(4)]
    posts = [
        create_post(client, owners[i % 4], published=i % 10 != 0) for i in range(105)
    ]
    for i, post in enumerate(posts):
        if post["published"]:
            for voter in owners[: i % 3 + 1]:
                assert vote(client, voter, post["id"]).status_code == 201
    reader = owners[0]
    after_one = client.get("/posts/?limit=1", headers=reader).links["next"]["url"]
    cursor = after_one.split("cursor=")[1]
    reads = {
        "/posts/?limit=1": 1,
        "/posts/?limit=100": 100,
        "/posts/?limit=100&search=post": 100,
        "/posts/?limit=100&search=nothing-has-this": 0,
        f"/posts/?limit=100&cursor={cursor}": 99,
        f"/posts/?limit=100&search=post&cursor={cursor}": 99,
        f"/posts/{posts[-1]['id']}": None,
    }
    counts = {}
    for url, page_size in reads.items():
        with recorded_statements(client) as statements:
            response = client.get(url, headers=reader)
        assert response.status_code == 200, (url, response.text)
        counts[url] = len(statements)
        if page_size is not None:
            page = response.json()
            assert len(page) == page_size
            assert all(p["owner"]["id"] == p["owner_id"] for p in page)
    page = client.get("/posts/?limit=100", headers=reader).json()
    assert len({p["owner_id"] for p in page}) == 4
    assert sum(p["votes"] for p in page) > 100
    assert counts == dict.fromkeys(reads, USER_LOOKUP + 1)


def test_create_post_reads_nothing_back(client: TestClient) -> None:
    _, headers = create_user_and_login(client)
    with recorded_statements(client) as statements:
        post = create_post(client, headers)
    assert post["votes"] == 0 and post["owner"]["id"] == post["owner_id"]
    assert len(statements) == USER_LOOKUP + 1, statements
    assert len(selects(statements)) == USER_LOOKUP, statements


@pytest.mark.parametrize("direction", [1, 0])
def test_vote_updates_the_count_and_reads_nothing_back(
    client: TestClient, direction: int
) -> None:
    _, headers = create_user_and_login(client)
    post = create_post(client, headers)
    if direction == 0:
        assert vote(client, headers, post["id"]).status_code == 201
    with recorded_statements(client) as statements:
        response = vote(client, headers, post["id"], direction)
    assert response.status_code == 201, response.text
    # The vote row's INSERT or DELETE; the database's trigger changes the count.
    assert len(statements) == USER_LOOKUP + 1, statements
    assert len(selects(statements)) == USER_LOOKUP, statements


def test_authenticating_is_one_statement_that_checks_the_login_session(
    client: TestClient,
) -> None:
    """The token's user, its login session (refresh token family) not ended, and its
    own id not revoked: one SELECT, not one per check."""
    _, headers = create_user_and_login(client)

    with recorded_statements(client) as statements:
        response = client.get("/users/me", headers=headers)

    assert response.status_code == 200, response.text
    (statement,) = statements
    assert statement.lstrip().upper().startswith("SELECT")
    assert "login_sessions" in statement
    assert "revoked_tokens" in statement


def test_every_dependency_runs_on_the_event_loop() -> None:
    """FastAPI runs a plain `def` dependency in a thread pool: a thread hop on every
    request that asks for it (the bench saw 0.25 ms of CPU per request from one)."""

    def dependencies(dependant: Dependant) -> Iterator[Dependant]:
        for dependency in dependant.dependencies:
            yield dependency
            yield from dependencies(dependency)

    def runs_on_the_loop(call: Callable[..., Any]) -> bool:
        function = call if inspect.isroutine(call) else type(call).__call__
        return inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(
            function
        )

    def routes(holder: Any) -> Iterator[APIRoute]:
        for route in holder.routes:
            if isinstance(route, APIRoute):
                yield route
            included = getattr(route, "original_router", None)  # an included router
            if included is not None:
                yield from routes(included)

    in_threads = {
        f"{route.path}: {dependency.call!r}"
        for route in routes(app)
        for dependency in dependencies(route.dependant)
        if dependency.call is not None and not runs_on_the_loop(dependency.call)
    }

    assert in_threads == set()
