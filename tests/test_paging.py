"""Cursor paging of GET /posts/: the `Link` header, its cursor, and walks through it."""

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blogapi.config import settings as app_settings
from tests.factories import (
    assert_invalid,
    create_post,
    create_user_and_login,
    empty_tables,
    set_created_at,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
WALK_MAX_PAGES = 200


def next_url(response: Response) -> str | None:
    assert response.status_code == 200, response.text
    link = response.links.get("next")
    return None if link is None else link["url"]


def walk(
    client: TestClient,
    headers: dict[str, str],
    first: str,
    between: Callable[[int], None] | None = None,
) -> list[dict]:
    """Every post the `Link` headers lead to from `first`, in order; `between(page)`
    runs after each page but the last."""
    seen: list[dict] = []
    url: str | None = first
    for page in range(WALK_MAX_PAGES):
        response = client.get(url, headers=headers)
        seen += response.json()
        url = next_url(response)
        if url is None:
            return seen
        if between:
            between(page)
    raise AssertionError(f"still more pages after {WALK_MAX_PAGES}")


def order_key(post: dict) -> tuple[datetime, int]:
    return datetime.fromisoformat(post["created_at"]), post["id"]


def cursor_of(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_links_visit_every_visible_post_once_newest_first(client: TestClient) -> None:
    me, mine = create_user_and_login(client)
    _, theirs = create_user_and_login(client)
    ids = [
        create_post(client, (mine, theirs)[i % 2], published=i % 3 != 0)["id"]
        for i in range(23)
    ]
    set_created_at(ids[4:12], T0)  # ties: ordered by id among them
    visible = client.get("/posts/?limit=100", headers=mine).json()
    assert all(p["published"] or p["owner_id"] == me["id"] for p in visible)
    assert len(visible) == len([i for i in range(23) if i % 3 or i % 2 == 0])

    seen = walk(client, mine, "/posts/?limit=4")

    assert seen == visible
    assert [order_key(p) for p in seen] == sorted(map(order_key, seen), reverse=True)


def test_the_next_link_keeps_limit_and_search(client: TestClient) -> None:
    _, headers = create_user_and_login(client)
    wanted = [create_post(client, headers, title=f"Cats {i}")["id"] for i in range(5)]
    for i in range(5):
        create_post(client, headers, title=f"Dogs {i}")

    first = client.get("/posts/?limit=2&search=CAT", headers=headers)
    url = next_url(first)

    assert url is not None and url.startswith("/posts/?")
    assert "limit=2" in url and "search=CAT" in url and "cursor=" in url
    seen = walk(client, headers, "/posts/?limit=2&search=CAT")
    assert [p["id"] for p in seen] == wanted[::-1]


def test_a_search_with_link_syntax_stays_inside_the_url(client: TestClient) -> None:
    _, headers = create_user_and_login(client)
    title = 'a>; rel="prev" <b &c=d'
    for _ in range(3):
        create_post(client, headers, title=title)

    response = client.get(
        "/posts/", params={"limit": 1, "search": title}, headers=headers
    )

    assert list(response.links) == ["next"]
    assert len(walk(client, headers, next_url(response))) == 2


def test_the_last_page_has_no_link(client: TestClient) -> None:
    _, headers = create_user_and_login(client)
    for _ in range(4):
        create_post(client, headers)

    exact = client.get("/posts/?limit=4", headers=headers)
    more = client.get("/posts/?limit=3", headers=headers)

    assert len(exact.json()) == 4 and "link" not in exact.headers
    assert len(more.json()) == 3 and next_url(more) is not None
    assert "link" not in client.get("/posts/?search=nothing", headers=headers).headers


def test_skip_keeps_working_and_links_on_by_cursor(client: TestClient) -> None:
    _, headers = create_user_and_login(client)
    ids = [create_post(client, headers)["id"] for _ in range(7)][::-1]

    response = client.get("/posts/?limit=2&skip=3", headers=headers)

    assert [p["id"] for p in response.json()] == ids[3:5]
    url = next_url(response)
    assert url is not None and "skip" not in url
    assert [p["id"] for p in walk(client, headers, url)] == ids[5:]


@st.composite
def walks(draw: st.DrawFn) -> dict:
    return {
        "posts": draw(st.integers(0, 14)),
        "drafts": draw(st.sets(st.integers(0, 13), max_size=4)),
        "ties": draw(st.sets(st.integers(0, 13), max_size=6)),
        "limit": draw(st.integers(1, 4)),
        "search": draw(st.booleans()),
        "changes": draw(
            st.lists(
                st.tuples(st.integers(0, 3), st.lists(st.integers(0, 30), max_size=2)),
                max_size=8,
            )
        ),
    }


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(plan=walks())
def test_links_visit_every_post_once_while_posts_come_and_go(
    client: TestClient, plan: dict
) -> None:
    """Between pages, new posts arrive and some posts are deleted: a walk shows no post
    twice, none out of order, none it may not see, and every post that was there from
    start to end."""
    empty_tables()
    me, mine = create_user_and_login(client)
    _, theirs = create_user_and_login(client)
    word = "Match" if plan["search"] else ""

    def new_post(i: int) -> dict:
        author = theirs if i % 2 else mine
        title = f"{word if i % 3 else 'Other'} {i}"
        return create_post(
            client, author, title=title, published=i not in plan["drafts"]
        )

    posts = [new_post(i) for i in range(plan["posts"])]
    set_created_at([p["id"] for p in posts if posts.index(p) in plan["ties"]], T0)
    deleted: set[int] = set()

    def change(page: int) -> None:
        if page >= len(plan["changes"]):
            return
        arrivals, deletions = plan["changes"][page]
        for i in range(arrivals):
            posts.append(new_post(len(posts) + i))
        for index in deletions:
            if posts and index < len(posts):
                victim = posts[index]
                author = mine if victim["owner_id"] == me["id"] else theirs
                response = client.delete(f"/posts/{victim['id']}", headers=author)
                assert response.status_code in (204, 404)
                deleted.add(victim["id"])

    at_start = client.get(
        "/posts/", params={"limit": 100, "search": word}, headers=mine
    ).json()
    seen = walk(
        client, mine, f"/posts/?limit={plan['limit']}&search={word}", between=change
    )

    seen_ids = [p["id"] for p in seen]
    assert len(seen_ids) == len(set(seen_ids))
    assert [order_key(p) for p in seen] == sorted(map(order_key, seen), reverse=True)
    assert all(p["published"] or p["owner_id"] == me["id"] for p in seen)
    assert all(word.lower() in p["title"].lower() for p in seen)
    assert {p["id"] for p in at_start} - deleted <= set(seen_ids)


@pytest.mark.parametrize(
    "cursor",
    [
        "not base64 !",
        "é",
        cursor_of("not json"),
        cursor_of("{}"),
        cursor_of("[]"),
        cursor_of('["2024-05-01T12:00:00Z"]'),
        cursor_of('["2024-05-01T12:00:00Z", 5, 6]'),
        cursor_of('["yesterday", 5]'),
        cursor_of('["2024-05-01T12:00:00", 5]'),  # no time zone
        cursor_of('["0001-01-01T00:00:00+01:00", 5]'),  # before year 1 in UTC
        cursor_of('["2024-05-01T12:00:00Z", 0]'),
        cursor_of('["2024-05-01T12:00:00Z", 2147483648]'),
        cursor_of('["2024-05-01T12:00:00Z", "five"]'),
    ],
)
def test_a_malformed_cursor_is_422(client: TestClient, cursor: str) -> None:
    _, headers = create_user_and_login(client)

    response = client.get("/posts/", params={"cursor": cursor}, headers=headers)

    assert_invalid(response, ("query", "cursor"), "Malformed cursor")


def test_an_overlong_cursor_is_422(client: TestClient) -> None:
    _, headers = create_user_and_login(client)

    response = client.get("/posts/", params={"cursor": "A" * 201}, headers=headers)

    assert_invalid(response, ("query", "cursor"), "at most 200 characters")


def test_cursor_with_skip_is_422(client: TestClient) -> None:
    _, headers = create_user_and_login(client)
    ids = [create_post(client, headers)["id"] for _ in range(3)]
    url = next_url(client.get("/posts/?limit=1", headers=headers))

    skipping = client.get(f"{url}&skip=1", headers=headers)
    # What Swagger UI and some clients send with every request: it skips nothing.
    default = client.get(f"{url}&skip=0", headers=headers)

    assert_invalid(skipping, ("query", "skip"), "either `cursor` or `skip`")
    assert [p["id"] for p in default.json()] == [ids[1]]


def test_a_cursor_from_another_time_zone_names_the_same_moment(
    client: TestClient,
) -> None:
    _, headers = create_user_and_login(client)
    ids = [create_post(client, headers)["id"] for _ in range(3)]
    for i, post_id in enumerate(ids):
        set_created_at([post_id], T0 + timedelta(hours=i))
    in_berlin = (T0 + timedelta(hours=2)).astimezone(timezone(timedelta(hours=2)))
    cursor = cursor_of(json.dumps([in_berlin.isoformat(), ids[2]]))

    response = client.get("/posts/", params={"cursor": cursor}, headers=headers)

    assert [p["id"] for p in response.json()] == [ids[1], ids[0]]


def test_links_are_built_on_public_url(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_settings, "public_url", "https://blog.example.com/api")
    _, headers = create_user_and_login(client)
    for _ in range(2):
        create_post(client, headers)

    url = next_url(client.get("/posts/?limit=1", headers=headers))

    assert url is not None
    assert url.startswith("https://blog.example.com/api/posts/?limit=1&cursor=")


@pytest.mark.parametrize("public_url", ["", "https://blog.example.com"])
def test_forged_host_headers_never_reach_the_link(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, public_url: str
) -> None:
    monkeypatch.setattr(app_settings, "public_url", public_url)
    _, headers = create_user_and_login(client)
    for _ in range(2):
        create_post(client, headers)
    forged = {
        "Host": "evil.example",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Proto": "gopher",
        "X-Forwarded-Prefix": "/evil",
        "Forwarded": "host=evil.example;proto=gopher",
    }

    response = client.get("/posts/?limit=1", headers={**headers, **forged})

    link = response.headers["link"]
    assert "evil" not in link and "gopher" not in link
    assert link.startswith(f"<{public_url}/posts/?limit=1&cursor=")
    assert link.endswith('>; rel="next"')


def test_openapi_documents_the_cursor_and_the_link_header(client: TestClient) -> None:
    listing = client.get("/openapi.json").json()["paths"]["/posts"]["get"]

    parameters = {p["name"]: p for p in listing["parameters"]}
    assert "`Link` header" in parameters["cursor"]["description"]
    assert "above 0 not with `cursor`" in parameters["skip"]["description"]
    link = listing["responses"]["200"]["headers"]["Link"]
    assert 'rel="next"' in link["description"]
