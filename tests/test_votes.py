"""/vote: adding and removing votes, and the counts posts show."""

import threading
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from blogapi.config import settings
from blogapi.main import app
from blogapi.model_base import MAX_ID
from tests.factories import (
    assert_invalid,
    assert_unauthorized,
    count_vote_rows,
    create_post,
    create_user_and_login,
    engine,
    vote,
)
from tests.servers import (
    requires_postgres,
    serving_in_thread,
    vote_count_mismatches,
    vote_rows,
)


def votes_shown(client: TestClient, headers: dict[str, str], post_id: int) -> int:
    """The count as the single-post route and the list both show it."""
    one = client.get(f"/posts/{post_id}", headers=headers).json()["votes"]
    listed = client.get("/posts/", params={"limit": 100}, headers=headers).json()
    assert [post["votes"] for post in listed if post["id"] == post_id] == [one]
    return one


def test_add_a_vote(client: TestClient) -> None:
    _, author = create_user_and_login(client)
    post = create_post(client, author)
    _, voter = create_user_and_login(client)

    response = vote(client, voter, post["id"], 1)

    assert response.status_code == 201
    assert response.json() == {"message": "successfully added vote"}
    assert votes_shown(client, author, post["id"]) == 1
    assert count_vote_rows(post["id"]) == 1


def test_remove_a_vote(client: TestClient) -> None:
    _, author = create_user_and_login(client)
    post = create_post(client, author)
    _, voter = create_user_and_login(client)
    vote(client, voter, post["id"], 1)

    response = vote(client, voter, post["id"], 0)

    assert response.status_code == 201
    assert response.json() == {"message": "successfully deleted vote"}
    assert votes_shown(client, author, post["id"]) == 0
    assert count_vote_rows(post["id"]) == 0


def test_counts_add_up_over_voters_and_posts(client: TestClient) -> None:
    _, author = create_user_and_login(client)
    first, second = create_post(client, author), create_post(client, author)
    voters = [create_user_and_login(client)[1] for _ in range(3)]
    for voter in voters:
        assert vote(client, voter, first["id"]).status_code == 201
    assert vote(client, voters[0], second["id"]).status_code == 201
    assert vote(client, author, second["id"]).status_code == 201
    assert vote(client, voters[1], first["id"], 0).status_code == 201

    assert votes_shown(client, author, first["id"]) == 2
    assert votes_shown(client, author, second["id"]) == 2


def test_voting_twice_is_409_and_counts_once(client: TestClient) -> None:
    _, author = create_user_and_login(client)
    post = create_post(client, author)
    voter_user, voter = create_user_and_login(client)
    vote(client, voter, post["id"], 1)

    response = vote(client, voter, post["id"], 1)

    assert response.status_code == 409
    assert response.json() == {
        "detail": f"User {voter_user['id']} has already voted on post {post['id']}"
    }
    assert votes_shown(client, author, post["id"]) == 1


def test_removing_a_vote_that_does_not_exist_is_404(client: TestClient) -> None:
    _, author = create_user_and_login(client)
    post = create_post(client, author)
    _, voter = create_user_and_login(client)

    response = vote(client, voter, post["id"], 0)

    assert response.status_code == 404
    assert response.json() == {"detail": "Vote does not exist"}
    assert votes_shown(client, author, post["id"]) == 0


def test_removing_another_users_vote_is_404(client: TestClient) -> None:
    _, author = create_user_and_login(client)
    post = create_post(client, author)
    _, voter = create_user_and_login(client)
    vote(client, voter, post["id"], 1)

    response = vote(client, author, post["id"], 0)

    assert response.status_code == 404
    assert response.json() == {"detail": "Vote does not exist"}
    assert votes_shown(client, author, post["id"]) == 1


@pytest.mark.parametrize(
    ("direction", "detail"),
    [(0, "Vote does not exist"), (1, "Post 4242 not found")],
)
def test_voting_on_a_missing_post_is_404(
    client: TestClient, direction: int, detail: str
) -> None:
    _, voter = create_user_and_login(client)

    response = vote(client, voter, 4242, direction)

    assert response.status_code == 404
    assert response.json() == {"detail": detail}


@pytest.mark.parametrize(
    ("direction", "detail"),
    [(0, "Vote does not exist"), (1, "Post {} not found")],
)
def test_voting_on_someone_elses_draft_is_404(
    client: TestClient, direction: int, detail: str
) -> None:
    _, author = create_user_and_login(client)
    draft = create_post(client, author, published=False)
    _, voter = create_user_and_login(client)

    response = vote(client, voter, draft["id"], direction)

    assert response.status_code == 404
    assert response.json() == {"detail": detail.format(draft["id"])}
    assert count_vote_rows(draft["id"]) == 0
    assert client.get(f"/posts/{draft['id']}", headers=author).json() == draft


def test_a_vote_can_be_taken_back_after_the_post_became_a_draft(
    client: TestClient,
) -> None:
    _, author = create_user_and_login(client)
    post = create_post(client, author)
    _, voter = create_user_and_login(client)
    assert vote(client, voter, post["id"]).status_code == 201
    unpublished = client.patch(
        f"/posts/{post['id']}", json={"published": False}, headers=author
    )
    assert unpublished.status_code == 200

    response = vote(client, voter, post["id"], 0)

    assert response.status_code == 201, response.text
    assert response.json() == {"message": "successfully deleted vote"}
    assert count_vote_rows(post["id"]) == 0
    assert votes_shown(client, author, post["id"]) == 0


def test_voting_on_your_own_draft_counts(client: TestClient) -> None:
    _, author = create_user_and_login(client)
    draft = create_post(client, author, published=False)

    assert vote(client, author, draft["id"]).status_code == 201
    assert votes_shown(client, author, draft["id"]) == 1


@pytest.mark.parametrize(
    ("body", "loc", "message"),
    [
        ({"post_id": 1, "dir": 2}, ("body", "dir"), "less than or equal to 1"),
        ({"post_id": 1, "dir": -1}, ("body", "dir"), "greater than or equal to 0"),
        ({"post_id": 1, "dir": None}, ("body", "dir"), "valid integer"),
        ({"post_id": 1}, ("body", "dir"), "Field required"),
        ({"dir": 1}, ("body", "post_id"), "Field required"),
        ({"post_id": 0, "dir": 1}, ("body", "post_id"), "greater than or equal"),
        ({"post_id": 2**63, "dir": 1}, ("body", "post_id"), "less than or equal"),
        ({"post_id": "one", "dir": 1}, ("body", "post_id"), "valid integer"),
    ],
)
def test_invalid_vote_is_422(
    client: TestClient, body: dict, loc: tuple, message: str
) -> None:
    _, author = create_user_and_login(client)
    post = create_post(client, author)
    assert post["id"] == 1

    response = client.post("/vote/", json=body, headers=author)

    assert_invalid(response, loc, message)
    assert votes_shown(client, author, post["id"]) == 0


def post_vote(
    client: TestClient, headers: dict[str, str], body: bytes
) -> httpx.Response:
    """POST /vote with `body` as it is: JSON numbers the way a client wrote them."""
    return client.post(
        "/vote", content=body, headers={**headers, "Content-Type": "application/json"}
    )


def test_integral_json_numbers_are_integers(client: TestClient) -> None:
    """JSON Schema's integer is any number without a fractional part: `1.0` and `1e0`
    are integers, as some JSON encoders write them."""
    _, author = create_user_and_login(client)
    post_id = create_post(client, author)["id"]

    added = post_vote(client, author, b'{"post_id": %d.0, "dir": 1e0}' % post_id)
    assert (added.status_code, added.json()) == (
        201,
        {"message": "successfully added vote"},
    )
    assert votes_shown(client, author, post_id) == 1

    removed = post_vote(client, author, b'{"post_id": %de0, "dir": 0.0}' % post_id)
    assert (removed.status_code, removed.json()) == (
        201,
        {"message": "successfully deleted vote"},
    )
    assert votes_shown(client, author, post_id) == 0


@pytest.mark.parametrize(
    ("post_id", "direction", "loc", "message"),
    [
        (b"{id}", b"0.5", ("body", "dir"), "valid integer"),
        (b"{id}", b'"1"', ("body", "dir"), "valid integer"),
        (b"{id}", b"true", ("body", "dir"), "valid integer"),
        (b"{id}", b"false", ("body", "dir"), "valid integer"),
        (b"{id}", b"1e20", ("body", "dir"), "less than or equal to 1"),
        (b"{id}", b"1e400", ("body", "dir"), "valid integer"),
        (b"{id}", b"-1.0", ("body", "dir"), "greater than or equal to 0"),
        (b"{id}.5", b"1", ("body", "post_id"), "valid integer"),
        (b"1e20", b"1", ("body", "post_id"), "less than or equal"),
        (b"2147483648.0", b"1", ("body", "post_id"), "less than or equal"),
        (b"1e400", b"1", ("body", "post_id"), "valid integer"),
    ],
)
def test_a_number_that_is_no_integer_or_out_of_bounds_is_422(
    client: TestClient, post_id: bytes, direction: bytes, loc: tuple, message: str
) -> None:
    """Text and booleans are no integers, bodies being strict; nor is a number with a
    fraction. Integral numbers past the bounds (`1e20`) are refused like integers."""
    _, author = create_user_and_login(client)
    post = create_post(client, author)
    body = b'{"post_id": %s, "dir": %s}' % (
        post_id.replace(b"{id}", str(post["id"]).encode()),
        direction,
    )

    response = post_vote(client, author, body)

    assert_invalid(response, loc, message)
    assert votes_shown(client, author, post["id"]) == 0


def test_the_schema_keeps_integers_and_their_bounds(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()["components"]["schemas"]["VoteCreate"]

    assert schema["required"] == ["post_id", "dir"]
    assert {
        name: (field["type"], field["minimum"], field["maximum"])
        for name, field in schema["properties"].items()
    } == {"post_id": ("integer", 1, MAX_ID), "dir": ("integer", 0, 1)}


def test_voting_needs_a_token(client: TestClient) -> None:
    _, author = create_user_and_login(client)
    post = create_post(client, author)

    response = client.post("/vote/", json={"post_id": post["id"], "dir": 1})

    assert_unauthorized(response, "Not authenticated")
    assert votes_shown(client, author, post["id"]) == 0


def test_vote_answers_with_and_without_a_trailing_slash(client: TestClient) -> None:
    _, author = create_user_and_login(client)
    post = create_post(client, author)

    for path, direction in (("/vote", 1), ("/vote/", 0)):
        response = client.post(
            path,
            json={"post_id": post["id"], "dir": direction},
            headers=author,
            follow_redirects=False,
        )
        assert response.status_code == 201, path


def test_deleting_a_post_deletes_its_votes(client: TestClient) -> None:
    _, author = create_user_and_login(client)
    post = create_post(client, author)
    _, voter = create_user_and_login(client)
    vote(client, voter, post["id"])

    assert client.delete(f"/posts/{post['id']}", headers=author).status_code == 204

    assert count_vote_rows(post["id"]) == 0


def test_counts_follow_rows_changed_behind_the_apps_back(client: TestClient) -> None:
    """Votes deleted, cascaded away, added and moved with plain SQL, as an operator or a
    script might: every post's count still equals its rows (the triggers of migration
    0004), in the database and through the API."""
    author, author_headers = create_user_and_login(client)
    a, b, c = (create_post(client, author_headers)["id"] for _ in range(3))
    voters = [create_user_and_login(client) for _ in range(4)]
    for _, headers in voters:
        for post in (a, b, c):
            assert vote(client, headers, post).status_code == 201
    v1, v2, v3, v4 = (user["id"] for user, _ in voters)

    with engine.begin() as connection:
        run = connection.execute
        # One vote, then two at once.
        run(
            text("DELETE FROM votes WHERE user_id = :u AND post_id = :p"),
            {"u": v1, "p": a},
        )
        run(
            text("DELETE FROM votes WHERE post_id = :p AND user_id IN (:u, :w)"),
            {"p": b, "u": v2, "w": v3},
        )
        # A voter, and by cascade their three votes; a post, and by cascade its votes.
        run(text("DELETE FROM users WHERE id = :u"), {"u": v4})
        run(text("DELETE FROM posts WHERE id = :p"), {"p": c})
        # A vote added by hand, and one moved to another post.
        run(
            text(
                "INSERT INTO votes (user_id, post_id, created_at) "
                "VALUES (:u, :p, CURRENT_TIMESTAMP)"
            ),
            {"u": author["id"], "p": a},
        )
        run(
            text("UPDATE votes SET post_id = :to WHERE user_id = :u AND post_id = :p"),
            {"to": b, "u": v3, "p": a},
        )

    assert vote_count_mismatches(settings.database_url) == {}
    assert vote_rows(settings.database_url) == {
        (v2, a),
        (author["id"], a),
        (v1, b),
        (v3, b),
    }
    assert votes_shown(client, author_headers, a) == 2
    assert votes_shown(client, author_headers, b) == 2
    assert client.get(f"/posts/{c}", headers=author_headers).status_code == 404


# Simultaneous duplicate votes, through a real server (PostgreSQL only)

RACERS = 12


@pytest.fixture
def live_server() -> Iterator[str]:
    """The app served by uvicorn on a free local port, in a background thread."""
    with serving_in_thread(app) as url:
        yield url


def race(base_url: str, headers: dict[str, str], body: dict) -> Counter[int]:
    """Send the same vote from RACERS threads at once, one connection each."""
    start = threading.Barrier(RACERS)
    statuses: list[int] = []

    def send() -> None:
        with httpx.Client(base_url=base_url, timeout=30) as http:
            start.wait()
            statuses.append(http.post("/vote/", json=body, headers=headers).status_code)

    threads = [threading.Thread(target=send) for _ in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Counter(statuses)


@requires_postgres("SQLite serialises every write, so there is no race to test")
def test_simultaneous_duplicate_votes_give_one_201_and_409s(live_server: str) -> None:
    with httpx.Client(base_url=live_server) as http:
        _, author = create_user_and_login(http)
        post = create_post(http, author)
        _, voter = create_user_and_login(http)

        added = race(live_server, voter, {"post_id": post["id"], "dir": 1})
        shown = http.get(f"/posts/{post['id']}", headers=author).json()["votes"]
        removed = race(live_server, voter, {"post_id": post["id"], "dir": 0})
        after = http.get(f"/posts/{post['id']}", headers=author).json()["votes"]

    assert added == {201: 1, 409: RACERS - 1}
    assert shown == 1
    assert removed == {201: 1, 404: RACERS - 1}
    assert after == 0
    assert count_vote_rows(post["id"]) == 0
