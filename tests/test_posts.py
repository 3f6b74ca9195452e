"""/posts: listing, paging, search, drafts, and reading, replacing, patching, deleting."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated

import pytest
from fastapi import Depends
from fastapi.testclient import TestClient
from sqlmodel import Session, col, delete

from blogapi.auth import TokenClaims, get_current_user
from blogapi.db import SessionDep
from blogapi.main import app
from blogapi.posts import (
    CONTENT_MAX_CHARS,
    TITLE_MAX_CHARS,
    Post,
    get_owned_post,
    get_visible_post,
)
from blogapi.users import User
from tests.factories import (
    as_others_see,
    assert_invalid,
    assert_unauthorized,
    create_post,
    create_user,
    create_user_and_login,
    delete_user_row,
    engine,
    login,
    set_created_at,
    vote,
)
from tests.servers import requires_postgres

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def list_ids(client: TestClient, headers: dict[str, str], **params: object) -> list:
    response = client.get("/posts/", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return [post["id"] for post in response.json()]


# Creating and reading


def test_create_returns_the_full_post(client: TestClient) -> None:
    me, headers = create_user_and_login(client)

    response = client.post(
        "/posts/", json={"title": "Hello", "content": "World"}, headers=headers
    )

    assert response.status_code == 201
    post = response.json()
    assert set(post) == {
        "id",
        "title",
        "content",
        "published",
        "created_at",
        "owner_id",
        "owner",
        "votes",
    }
    assert post["title"] == "Hello"
    assert post["content"] == "World"
    assert post["published"] is True
    assert post["owner_id"] == me["id"]
    assert post["owner"] == as_others_see(me)
    assert post["votes"] == 0
    created_at = datetime.fromisoformat(post["created_at"])
    assert created_at.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - created_at) < timedelta(minutes=1)


def test_get_one_post(client: TestClient) -> None:
    _, headers = create_user_and_login(client)
    post = create_post(client, headers)
    _, reader = create_user_and_login(client)

    response = client.get(f"/posts/{post['id']}", headers=reader)

    assert response.status_code == 200
    assert response.json() == post


def test_reads_write_the_json_fastapi_writes_for_a_post(client: TestClient) -> None:
    """The two reads write their JSON from the rows themselves: byte for byte it is what
    FastAPI writes from a PostPublic, as in the answer to the post's creation."""
    _, headers = create_user_and_login(client)
    body = {"title": 'Ünïcödé "quoted" ✓', "content": "a\nb\\c", "published": False}
    created = client.post("/posts/", json=body, headers=headers)
    assert created.status_code == 201, created.text

    one = client.get(f"/posts/{created.json()['id']}", headers=headers)
    listed = client.get("/posts/", headers=headers)

    assert one.headers["content-type"] == created.headers["content-type"]
    assert one.content == created.content
    assert listed.headers["content-type"] == created.headers["content-type"]
    assert listed.content == b"[" + created.content + b"]"


def test_get_a_missing_post_is_404(client: TestClient) -> None:
    _, headers = create_user_and_login(client)

    response = client.get("/posts/12345", headers=headers)

    assert response.status_code == 404
    assert response.json() == {"detail": "Post 12345 not found"}


@pytest.mark.parametrize("post_id", ["0", "-1", "abc", str(2**31), str(2**63)])
def test_a_post_id_that_cannot_exist_is_rejected(
    client: TestClient, post_id: str
) -> None:
    _, headers = create_user_and_login(client)

    response = client.get(f"/posts/{post_id}", headers=headers)

    assert_invalid(response, ("path", "post_id"))


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/posts/"), ("POST", "/posts/"), ("GET", "/posts/1")]
    + [(method, "/posts/1") for method in ("PUT", "PATCH", "DELETE")],
)
def test_posts_need_a_token(client: TestClient, method: str, path: str) -> None:
    _, headers = create_user_and_login(client)
    create_post(client, headers)

    response = client.request(method, path, json={"title": "t", "content": "c"})

    assert_unauthorized(response, "Not authenticated")


@pytest.mark.parametrize(
    "extra",
    [
        {"id": 999},
        {"owner_id": 999},
        {"created_at": "2000-01-01T00:00:00Z"},
        {"votes": 999},
        {"owner": {"id": 999, "email": "x@example.com"}},
        {"unknown": "field"},
    ],
)
def test_server_owned_fields_are_ignored_on_create(
    client: TestClient, extra: dict
) -> None:
    me, headers = create_user_and_login(client)

    post = create_post(client, headers, **extra)

    assert post["id"] != 999
    assert post["owner_id"] == me["id"]
    assert post["owner"] == as_others_see(me)
    assert post["votes"] == 0
    assert not post["created_at"].startswith("2000")
    assert "unknown" not in post
    assert client.get(f"/posts/{post['id']}", headers=headers).json() == post


# Bounds and NUL


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("title", "", "at least 1 character"),
        ("title", "x" * (TITLE_MAX_CHARS + 1), f"at most {TITLE_MAX_CHARS}"),
        ("content", "", "at least 1 character"),
        ("content", "x" * (CONTENT_MAX_CHARS + 1), f"at most {CONTENT_MAX_CHARS}"),
        ("title", "nul\0inside", "pattern"),
        ("content", "nul\0inside", "pattern"),
        ("title", None, "valid string"),
        ("published", "maybe", "valid boolean"),
    ],
)
def test_invalid_post_is_rejected_on_create_put_and_patch(
    client: TestClient, field: str, value: object, message: str
) -> None:
    _, headers = create_user_and_login(client)
    post = create_post(client, headers, title="Before", content="Before")
    body = {"title": "ok", "content": "ok", field: value}

    created = client.post("/posts/", json=body, headers=headers)
    replaced = client.put(f"/posts/{post['id']}", json=body, headers=headers)
    patched = client.patch(f"/posts/{post['id']}", json={field: value}, headers=headers)

    for response in (created, replaced, patched):
        assert_invalid(response, ("body", field), message)
    assert client.get(f"/posts/{post['id']}", headers=headers).json() == post
    assert list_ids(client, headers) == [post["id"]]


def test_longest_title_and_content_fit_the_columns(client: TestClient) -> None:
    _, headers = create_user_and_login(client)
    # Multi-byte characters: the bounds count characters, and so must the columns.
    title, content = "é" * TITLE_MAX_CHARS, "ü" * CONTENT_MAX_CHARS

    post = create_post(client, headers, title=title, content=content)

    stored = client.get(f"/posts/{post['id']}", headers=headers).json()
    assert (stored["title"], stored["content"]) == (title, content)


def test_missing_title_or_content_is_rejected(client: TestClient) -> None:
    _, headers = create_user_and_login(client)

    for missing in ("title", "content"):
        body = {"title": "t", "content": "c"}
        del body[missing]
        response = client.post("/posts/", json=body, headers=headers)
        assert_invalid(response, ("body", missing), "Field required")


# Listing


def test_list_is_empty_at_first(client: TestClient) -> None:
    _, headers = create_user_and_login(client)

    response = client.get("/posts/", headers=headers)

    assert response.status_code == 200
    assert response.json() == []


def test_list_shows_full_posts_with_owner_and_votes(client: TestClient) -> None:
    _, headers = create_user_and_login(client)
    post = create_post(client, headers)
    _, voter = create_user_and_login(client)
    assert vote(client, voter, post["id"]).status_code == 201

    listed = client.get("/posts/", headers=headers).json()

    assert listed == [{**post, "votes": 1}]


def test_list_is_newest_first(client: TestClient) -> None:
    _, headers = create_user_and_login(client)
    old, new, middle = (create_post(client, headers)["id"] for _ in range(3))
    set_created_at([old], T0)
    set_created_at([middle], T0 + timedelta(hours=1))
    set_created_at([new], T0 + timedelta(hours=2))

    assert list_ids(client, headers) == [new, middle, old]


def test_limit_defaults_to_10(client: TestClient) -> None:
    _, headers = create_user_and_login(client)
    ids = [create_post(client, headers)["id"] for _ in range(12)]

    assert list_ids(client, headers) == ids[::-1][:10]


@pytest.mark.parametrize("limit", [1, 100])
def test_limit_bounds_are_accepted(client: TestClient, limit: int) -> None:
    _, headers = create_user_and_login(client)
    ids = [create_post(client, headers)["id"] for _ in range(3)]

    assert list_ids(client, headers, limit=limit) == ids[::-1][:limit]


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        ("0", "greater than or equal to 1"),
        ("-5", "greater than or equal to 1"),
        ("101", "less than or equal to 100"),
        ("ten", "valid integer"),
    ],
)
def test_limit_out_of_bounds_is_422(
    client: TestClient, limit: str, message: str
) -> None:
    _, headers = create_user_and_login(client)

    response = client.get("/posts/", params={"limit": limit}, headers=headers)

    assert_invalid(response, ("query", "limit"), message)


@pytest.mark.parametrize(
    ("skip", "message"),
    [("-1", "greater than or equal to 0"), ("x", "valid integer")],
)
def test_negative_skip_is_422(client: TestClient, skip: str, message: str) -> None:
    _, headers = create_user_and_login(client)

    response = client.get("/posts/", params={"skip": skip}, headers=headers)

    assert_invalid(response, ("query", "skip"), message)


def test_skip_past_the_end_is_an_empty_page(client: TestClient) -> None:
    _, headers = create_user_and_login(client)
    create_post(client, headers)

    assert list_ids(client, headers, skip=1) == []
    assert list_ids(client, headers, skip=2**31 - 1) == []


def test_paging_with_equal_timestamps_never_repeats_or_skips(
    client: TestClient,
) -> None:
    _, headers = create_user_and_login(client)
    ids = [create_post(client, headers)["id"] for _ in range(23)]
    set_created_at(ids[5:20], T0)  # a run of ties in the middle
    set_created_at(ids[:5], T0 - timedelta(days=1))
    set_created_at(ids[20:], T0 + timedelta(days=1))

    pages = [list_ids(client, headers, limit=4, skip=skip) for skip in range(0, 24, 4)]

    seen = [post_id for page in pages for post_id in page]
    assert seen == ids[::-1]
    assert list_ids(client, headers, limit=100) == seen


def test_drafts_are_listed_only_for_their_owner(client: TestClient) -> None:
    _, author = create_user_and_login(client)
    _, reader = create_user_and_login(client)
    published = create_post(client, author)["id"]
    draft = create_post(client, author, published=False)["id"]
    readers_draft = create_post(client, reader, published=False)["id"]

    assert list_ids(client, author) == [draft, published]
    assert list_ids(client, reader) == [readers_draft, published]


def test_drafts_do_not_eat_into_a_page(client: TestClient) -> None:
    _, author = create_user_and_login(client)
    _, reader = create_user_and_login(client)
    visible = [create_post(client, author)["id"] for _ in range(3)]
    for _ in range(3):
        create_post(client, author, published=False)

    assert list_ids(client, reader, limit=3) == visible[::-1]


# Search


def test_search_matches_the_title_ignoring_case(client: TestClient) -> None:
    _, headers = create_user_and_login(client)
    match_a = create_post(client, headers, title="FastAPI tips")["id"]
    create_post(client, headers, title="Cooking", content="fastapi in the content")
    match_b = create_post(client, headers, title="why I like fastapi")["id"]

    assert list_ids(client, headers, search="FASTapi") == [match_b, match_a]
    assert list_ids(client, headers, search="nothing like it") == []
    assert list_ids(client, headers, search="") == list_ids(client, headers)


@pytest.mark.parametrize(
    ("search", "matching", "other"),
    [
        ("%", "100% sure", "100 percent sure"),
        ("0%s", "100%sure", "100 sure"),
        ("_", "snake_case", "snakecase"),
        ("e_c", "snake_case", "snakeXcase"),
        ("\\", "back\\slash", "backslash"),
        ("/", "and/or", "andor"),
        ("/%", "50/% off", "50/50 off"),
    ],
)
def test_search_takes_wildcards_literally(
    client: TestClient, search: str, matching: str, other: str
) -> None:
    _, headers = create_user_and_login(client)
    match = create_post(client, headers, title=matching)["id"]
    create_post(client, headers, title=other)

    assert list_ids(client, headers, search=search) == [match]


SLASHED_TITLES = [
    "a/b",
    "a%b",
    "a/%b",
    "a%/b",
    "a//b",
    "a/_b",
    "a_b",
    "ab",
    "a\\%b",
    "100/% sure",
]


@pytest.mark.parametrize("search", ["/", "/%", "%/", "//", "/_", "%", "_", "\\%"])
def test_the_escape_character_is_taken_literally_too(
    client: TestClient, search: str
) -> None:
    """`/` is the LIKE escape character: a search for it, or for it beside a wildcard,
    finds the titles that contain those characters, and nothing else."""
    _, headers = create_user_and_login(client)
    ids = {
        create_post(client, headers, title=title)["id"]: title
        for title in SLASHED_TITLES
    }
    expected = [i for i, title in sorted(ids.items(), reverse=True) if search in title]

    assert expected, "every search term here is in some title"
    assert list_ids(client, headers, search=search, limit=100) == expected


def test_search_ignores_case_beyond_ascii(client: TestClient) -> None:
    _, headers = create_user_and_login(client)
    upper = create_post(client, headers, title="CRÈME BRÛLÉE")["id"]
    lower = create_post(client, headers, title="Ωmega straße")["id"]

    assert list_ids(client, headers, search="crème brûlée") == [upper]
    assert list_ids(client, headers, search="ωMEGA STRAßE") == [lower]


def test_search_hides_other_users_drafts(client: TestClient) -> None:
    _, author = create_user_and_login(client)
    _, reader = create_user_and_login(client)
    draft = create_post(client, author, title="secret plan", published=False)["id"]

    assert list_ids(client, reader, search="secret") == []
    assert list_ids(client, author, search="secret") == [draft]


def test_search_with_nul_is_422(client: TestClient) -> None:
    _, headers = create_user_and_login(client)

    response = client.get("/posts/", params={"search": "a\0b"}, headers=headers)

    assert_invalid(response, ("query", "search"), "pattern")


def test_search_pages_like_the_plain_list(client: TestClient) -> None:
    _, headers = create_user_and_login(client)
    ids = [create_post(client, headers, title=f"match {n}")["id"] for n in range(5)]
    create_post(client, headers, title="other")

    first = list_ids(client, headers, search="MATCH", limit=3)
    second = list_ids(client, headers, search="MATCH", limit=3, skip=3)

    assert first + second == ids[::-1]


# Drafts


def test_a_draft_is_visible_to_its_owner_only(client: TestClient) -> None:
    _, author = create_user_and_login(client)
    _, reader = create_user_and_login(client)
    draft = create_post(client, author, published=False)

    assert client.get(f"/posts/{draft['id']}", headers=author).json() == draft
    response = client.get(f"/posts/{draft['id']}", headers=reader)
    assert response.status_code == 404
    assert response.json() == {"detail": f"Post {draft['id']} not found"}


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_changing_someone_elses_draft_is_404_not_403(
    client: TestClient, method: str
) -> None:
    _, author = create_user_and_login(client)
    _, other = create_user_and_login(client)
    draft = create_post(client, author, published=False)

    response = client.request(
        method,
        f"/posts/{draft['id']}",
        json={"title": "mine now", "content": "x"},
        headers=other,
    )

    assert response.status_code == 404
    assert response.json() == {"detail": f"Post {draft['id']} not found"}
    assert client.get(f"/posts/{draft['id']}", headers=author).json() == draft


# Replacing (PUT) and patching (PATCH)


def test_put_replaces_title_content_and_published(client: TestClient) -> None:
    _, headers = create_user_and_login(client)
    post = create_post(client, headers, title="Old", content="Old", published=True)
    new = {"title": "New", "content": "New content", "published": False}

    response = client.put(f"/posts/{post['id']}", json=new, headers=headers)

    assert response.status_code == 200
    assert response.json() == {**post, **new}
    assert client.get(f"/posts/{post['id']}", headers=headers).json() == {
        **post,
        **new,
    }


@pytest.mark.parametrize("missing", ["title", "content"])
def test_put_without_a_required_field_is_422(client: TestClient, missing: str) -> None:
    _, headers = create_user_and_login(client)
    post = create_post(client, headers)
    body = {"title": "New", "content": "New", "published": False}
    del body[missing]

    response = client.put(f"/posts/{post['id']}", json=body, headers=headers)

    assert_invalid(response, ("body", missing), "Field required")
    assert client.get(f"/posts/{post['id']}", headers=headers).json() == post


@pytest.mark.parametrize(
    "change",
    [{"title": "New title"}, {"content": "New content"}, {"published": False}, {}],
)
def test_patch_changes_only_what_is_sent(client: TestClient, change: dict) -> None:
    _, headers = create_user_and_login(client)
    post = create_post(client, headers, title="Old", content="Old", published=True)

    response = client.patch(f"/posts/{post['id']}", json=change, headers=headers)

    assert response.status_code == 200
    assert response.json() == {**post, **change}
    assert client.get(f"/posts/{post['id']}", headers=headers).json() == {
        **post,
        **change,
    }


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_server_owned_fields_are_ignored_on_update(
    client: TestClient, method: str
) -> None:
    _, headers = create_user_and_login(client)
    other, _ = create_user_and_login(client)
    post = create_post(client, headers, title="Old", content="Old")
    _, voter = create_user_and_login(client)
    assert vote(client, voter, post["id"]).status_code == 201

    response = client.request(
        method,
        f"/posts/{post['id']}",
        json={
            "title": "New",
            "content": "New",
            "id": post["id"] + 100,
            "owner_id": other["id"],
            "created_at": "2000-01-01T00:00:00Z",
            "votes": 999,
            "owner": other,
        },
        headers=headers,
    )

    assert response.status_code == 200
    expected = {**post, "title": "New", "content": "New", "votes": 1}
    assert response.json() == expected
    assert client.get(f"/posts/{post['id']}", headers=headers).json() == expected


def test_update_shows_the_vote_count(client: TestClient) -> None:
    _, headers = create_user_and_login(client)
    post = create_post(client, headers)
    _, voter = create_user_and_login(client)
    assert vote(client, voter, post["id"]).status_code == 201

    patched = client.patch(f"/posts/{post['id']}", json={}, headers=headers)

    assert patched.json()["votes"] == 1


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_changing_someone_elses_post_is_403(client: TestClient, method: str) -> None:
    _, author = create_user_and_login(client)
    _, other = create_user_and_login(client)
    post = create_post(client, author)

    response = client.request(
        method,
        f"/posts/{post['id']}",
        json={"title": "mine now", "content": "x"},
        headers=other,
    )

    assert response.status_code == 403
    assert response.json() == {"detail": "Not authorized to change this post"}
    assert client.get(f"/posts/{post['id']}", headers=author).json() == post


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_changing_a_missing_post_is_404(client: TestClient, method: str) -> None:
    _, headers = create_user_and_login(client)

    response = client.request(
        method, "/posts/777", json={"title": "t", "content": "c"}, headers=headers
    )

    assert response.status_code == 404
    assert response.json() == {"detail": "Post 777 not found"}


# Deleting


def test_delete_is_204_with_an_empty_body(client: TestClient) -> None:
    _, headers = create_user_and_login(client)
    post = create_post(client, headers)
    kept = create_post(client, headers)

    response = client.delete(f"/posts/{post['id']}", headers=headers)

    assert response.status_code == 204
    assert response.content == b""
    gone = client.get(f"/posts/{post['id']}", headers=headers)
    assert gone.status_code == 404
    assert gone.json() == {"detail": f"Post {post['id']} not found"}
    assert list_ids(client, headers) == [kept["id"]]
    again = client.delete(f"/posts/{post['id']}", headers=headers)
    assert again.status_code == 404
    assert again.json() == {"detail": f"Post {post['id']} not found"}


# Paths


def test_every_posts_path_answers_with_and_without_a_trailing_slash(
    client: TestClient,
) -> None:
    _, headers = create_user_and_login(client)
    for slash in ("", "/"):
        created = client.post(
            f"/posts{slash}",
            json={"title": "t", "content": "c"},
            headers=headers,
            follow_redirects=False,
        )
        assert created.status_code == 201, slash
        item = f"/posts/{created.json()['id']}{slash}"
        calls = [
            ("GET", f"/posts{slash}", None, 200),
            ("GET", item, None, 200),
            ("PUT", item, {"title": "t2", "content": "c2"}, 200),
            ("PATCH", item, {"title": "t3"}, 200),
            ("DELETE", item, None, 204),
        ]
        for method, path, body, expected in calls:
            response = client.request(
                method, path, json=body, headers=headers, follow_redirects=False
            )
            assert response.status_code == expected, (method, path, response.text)


@pytest.fixture
def gone_after_check() -> Iterator[None]:
    """Between the route's checks and its commit, the caller's account or post vanishes."""

    def post_then_delete_it(post: Annotated[Post, Depends(get_visible_post)]) -> Post:
        with Session(engine) as other:
            other.exec(delete(Post).where(col(Post.id) == post.id))
            other.commit()
        return post

    async def user_then_delete_it(claims: TokenClaims, session: SessionDep) -> User:
        user = await session.get_one(User, claims.user_id)
        delete_user_row(user.id)
        return user

    app.dependency_overrides[get_owned_post] = post_then_delete_it
    app.dependency_overrides[get_current_user] = user_then_delete_it
    yield
    app.dependency_overrides.clear()


@requires_postgres(
    "SQLite refuses a write from a transaction that read before another's write "
    "(503), so there is no stale update to see"
)
@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_editing_a_post_deleted_meanwhile_is_404(
    client: TestClient, method: str, gone_after_check: None
) -> None:
    headers = login(client, create_user(client)["email"])
    app.dependency_overrides.pop(get_current_user)
    post = create_post(client, headers)

    response = client.request(
        method,
        f"/posts/{post['id']}",
        json={"title": "T", "content": "C"},
        headers=headers,
    )

    assert response.status_code == 404
    assert response.json() == {"detail": f"Post {post['id']} not found"}


def test_posting_as_a_user_deleted_meanwhile_is_401(
    client: TestClient, gone_after_check: None
) -> None:
    headers = login(client, create_user(client)["email"])

    response = client.post(
        "/posts/", json={"title": "T", "content": "C"}, headers=headers
    )

    assert response.status_code == 401
    assert response.json() == {"detail": "Could not validate credentials"}
