"""Nasty input gets a 4xx with a JSON `detail`, never a 500, and odd text survives intact."""

from typing import Any

import anyio
import pytest
from fastapi.testclient import TestClient
from httpx import Response

from blogapi.config import settings
from blogapi.main import app
from blogapi.model_base import MAX_ID
from blogapi.posts import TITLE_MAX_CHARS
from tests.factories import (
    PASSWORD,
    assert_invalid,
    create_post,
    create_user,
    create_user_and_login,
    login,
)

NON_BMP = "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 🎉 👩‍👩‍👧"
"""Mathematical letters, an emoji and a ZWJ family: all outside the BMP, 4 bytes each."""

JSON = {"Content-Type": "application/json"}


def body_routes(post_id: int) -> list[tuple[str, str]]:
    """The routes that read a JSON body of a signed-in user (`json_body_routes` below
    finds every one in the OpenAPI document)."""
    return [
        ("POST", "/users"),
        ("PUT", "/users/me/password"),
        ("DELETE", "/users/me"),
        ("POST", "/posts"),
        ("PUT", f"/posts/{post_id}"),
        ("PATCH", f"/posts/{post_id}"),
        ("POST", "/vote"),
    ]


def assert_detail(response: Response, status_code: int, detail: str) -> None:
    assert response.status_code == status_code, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": detail}


def list_posts(client: TestClient, headers: dict[str, str], **params: Any) -> list:
    response = client.get("/posts", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


# Malformed bodies


@pytest.mark.parametrize(
    "raw",
    [b'{"title": "x", ', b"{'title': 'x'}", b"", b"\xff\xfe", b'{"a": 1}}', b"nul\0"],
    ids=["cut-short", "single-quotes", "empty", "bom-only", "trailing", "nul"],
)
def test_malformed_json_is_422_on_every_body_route(
    client: TestClient, raw: bytes
) -> None:
    _, headers = create_user_and_login(client)
    post = create_post(client, headers)

    for method, path in body_routes(post["id"]):
        response = client.request(
            method, path, content=raw, headers={**headers, **JSON}
        )

        assert response.status_code == 422, (method, path, response.text)
        assert response.json()["detail"][0]["loc"][0] == "body"
    assert client.get(f"/posts/{post['id']}", headers=headers).json() == post


def test_body_that_is_not_utf8_is_400_on_every_body_route(client: TestClient) -> None:
    _, headers = create_user_and_login(client)
    post = create_post(client, headers)

    for method, path in body_routes(post["id"]):
        response = client.request(
            method, path, content=b'{"title": "\xc3\x28"}', headers={**headers, **JSON}
        )

        assert_detail(response, 400, "There was an error parsing the body")


@pytest.mark.parametrize(
    "body", [b"[]", b'"a post"', b"null", b"1", b"true", b'[{"title": "x"}]']
)
def test_json_that_is_not_an_object_is_422(client: TestClient, body: bytes) -> None:
    _, headers = create_user_and_login(client)

    response = client.post("/posts", content=body, headers={**headers, **JSON})

    assert response.status_code == 422, response.text
    assert list_posts(client, headers) == []


def test_deeply_nested_json_is_refused_without_a_500(client: TestClient) -> None:
    _, headers = create_user_and_login(client)
    depth = 100_000

    response = client.post(
        "/posts",
        content=b"[" * depth + b"]" * depth,
        headers={**headers, **JSON},
    )

    assert_detail(response, 400, "There was an error parsing the body")


# Bodies that are not JSON

FORM_TYPE = "application/x-www-form-urlencoded"
UNSUPPORTED = {
    "detail": "The body must be JSON: send it with Content-Type: application/json"
}
OTHER_CONTENT_TYPES = [
    "text/plain",
    "text/plain; charset=utf-8",
    FORM_TYPE,
    "multipart/form-data; boundary=x",
    "application/xml",
    "text/json",
    "",
    None,
]


def json_body_routes(client: TestClient, post_id: int, user_id: int) -> list:
    """Every route the OpenAPI document says reads a JSON body, its ids filled in."""
    document = client.get("/openapi.json").json()
    return [
        (method.upper(), path.format(post_id=post_id, user_id=user_id))
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if "application/json" in operation.get("requestBody", {}).get("content", {})
    ]


def assert_unsupported(response: Response, method: str) -> None:
    """415, naming JSON, with Accept-Post or Accept-Patch where the method has one."""
    assert_detail(response, 415, UNSUPPORTED["detail"])
    accept = {
        name: value
        for name, value in response.headers.items()
        if name.startswith("accept-")
    }
    expected = {
        "POST": {"accept-post": "application/json"},
        "PATCH": {"accept-patch": "application/json"},
    }
    assert accept == expected.get(method, {}), (method, accept)


def test_every_json_body_route_is_in_the_document(client: TestClient) -> None:
    assert sorted(json_body_routes(client, 1, 2)) == sorted(
        [
            *body_routes(1),
            ("PATCH", "/users/2"),
            ("POST", "/password-recovery"),
            ("POST", "/logout"),
        ]
        + [("POST", "/reset-password"), ("POST", "/verify-email")]
    )


@pytest.mark.parametrize(
    "content_type", OTHER_CONTENT_TYPES, ids=lambda value: repr(value)
)
def test_a_body_of_another_content_type_is_415_on_every_json_route(
    client: TestClient, content_type: str | None
) -> None:
    user, headers = create_user_and_login(client)
    post = create_post(client, headers)
    if content_type is not None:
        headers = {**headers, "Content-Type": content_type}

    for method, path in json_body_routes(client, post["id"], user["id"]):
        response = client.request(
            method, path, content=b'{"title": "t", "content": "c"}', headers=headers
        )

        assert_unsupported(response, method)
    assert list_posts(client, headers) == [post]


def test_a_form_or_a_file_sent_to_a_json_route_is_415(client: TestClient) -> None:
    _, headers = create_user_and_login(client)
    post = create_post(client, headers, title="before")

    form = client.post("/posts", data={"title": "t", "content": "c"}, headers=headers)
    upload = client.patch(
        f"/posts/{post['id']}",
        files={"title": ("title.txt", b"after")},
        headers=headers,
    )
    registration = client.post(
        "/users", data={"email": "form@example.com", "password": PASSWORD}
    )

    assert form.request.headers["content-type"] == FORM_TYPE
    assert_unsupported(form, "POST")
    assert upload.request.headers["content-type"].startswith("multipart/form-data")
    assert_unsupported(upload, "PATCH")
    assert_unsupported(registration, "POST")
    assert list_posts(client, headers) == [post]
    assert (
        client.post(
            "/login", data={"username": "form@example.com", "password": PASSWORD}
        ).status_code
        == 403
    )


def test_a_put_or_delete_body_of_another_type_is_415_without_an_accept_header(
    client: TestClient,
) -> None:
    _, headers = create_user_and_login(client)
    post = create_post(client, headers)
    text = {**headers, "Content-Type": "text/plain"}

    replaced = client.put(
        f"/posts/{post['id']}", content=b"title=t&content=c", headers=text
    )
    deleted = client.request(
        "DELETE", "/users/me", content=f"password={PASSWORD}".encode(), headers=text
    )

    assert_unsupported(replaced, "PUT")
    assert_unsupported(deleted, "DELETE")
    assert list_posts(client, headers) == [post]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/merge-patch+json",
        "application/vnd.blogapi+json; charset=utf-8",
    ],
)
def test_json_under_any_json_media_type_is_read(
    client: TestClient, content_type: str
) -> None:
    _, headers = create_user_and_login(client)

    response = client.post(
        "/posts",
        content=b'{"title": "t", "content": "c"}',
        headers={**headers, "Content-Type": content_type},
    )

    assert response.status_code == 201, response.text
    assert [p["title"] for p in list_posts(client, headers)] == ["t"]


@pytest.mark.parametrize("content_type", ["text/plain", FORM_TYPE, None])
def test_a_missing_body_is_still_422_whatever_its_content_type(
    client: TestClient, content_type: str | None
) -> None:
    _, headers = create_user_and_login(client)
    if content_type is not None:
        headers = {**headers, "Content-Type": content_type}

    response = client.post("/posts", headers=headers)

    assert_invalid(response, ("body",), "Field required")


LOGIN_TAKES_A_FORM = [
    {
        "type": "value_error",
        "loc": ["body"],
        "msg": "The login takes the OAuth2 password form, not JSON: `username` and "
        "`password`, form-encoded (Content-Type: application/x-www-form-urlencoded)",
    }
]


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8"]
)
def test_a_json_login_is_422_saying_it_takes_the_form(
    client: TestClient, content_type: str
) -> None:
    user = create_user(client)

    response = client.post(
        "/login",
        content=f'{{"username": "{user["email"]}", "password": "{PASSWORD}"}}',
        headers={"Content-Type": content_type},
    )

    assert response.status_code == 422, response.text
    assert response.json() == {"detail": LOGIN_TAKES_A_FORM}
    login(client, user["email"])


def test_login_form_under_a_json_content_type_is_422_saying_it_takes_the_form(
    client: TestClient,
) -> None:
    user = create_user(client)

    response = client.post(
        "/login",
        content=f"username={user['email']}&password={PASSWORD}".encode(),
        headers=JSON,
    )

    assert response.status_code == 422, response.text
    assert response.json() == {"detail": LOGIN_TAKES_A_FORM}


@pytest.mark.parametrize(
    ("number", "message"),
    [
        (b"1e400", "valid integer"),
        (b"NaN", "valid integer"),
        (b"-Infinity", "valid integer"),
        (b"1.5", "valid integer"),
    ],
)
def test_numbers_json_cannot_echo_back_are_422_not_500(
    client: TestClient, number: bytes, message: str
) -> None:
    _, headers = create_user_and_login(client)

    response = client.post(
        "/vote",
        content=b'{"post_id": ' + number + b', "dir": 1}',
        headers={**headers, **JSON},
    )

    assert_invalid(response, ("body", "post_id"), message)


def test_a_number_too_long_to_parse_is_refused_without_a_500(
    client: TestClient,
) -> None:
    _, headers = create_user_and_login(client)

    response = client.post(
        "/vote",
        content=b'{"post_id": ' + b"9" * 5000 + b', "dir": 1}',
        headers={**headers, **JSON},
    )

    assert_detail(response, 400, "There was an error parsing the body")


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("/posts", b'{"title": "\\ud800", "content": "c"}', ("body", "title")),
        ("/posts", b'{"title": "t", "content": "a\\udfffb"}', ("body", "content")),
        ("/users", b'{"email": "a\\ud83d@example.com", "password": "x"}', None),
        (
            "/users/me/password",
            b'{"current_password": "\\ud800", "new_password": 1}',
            None,
        ),
    ],
    ids=["title", "content", "email", "password"],
)
def test_lone_surrogates_are_422_not_500(
    client: TestClient, path: str, body: bytes, loc: tuple | None
) -> None:
    """JSON may escape half a UTF-16 pair (`\\ud800`); that is no text, and can't be echoed."""
    _, headers = create_user_and_login(client)
    method = "PUT" if path.endswith("password") else "POST"

    response = client.request(method, path, content=body, headers={**headers, **JSON})

    assert response.status_code == 422, response.text
    if loc:
        assert_invalid(response, loc, "unicode")
    assert "\\ud8" not in response.text and "\\udf" not in response.text


# Bodies over MAX_BODY_BYTES


def test_declared_body_over_the_limit_is_413(client: TestClient) -> None:
    _, headers = create_user_and_login(client)
    padding = "a" * settings.max_body_bytes

    response = client.post(
        "/posts", json={"title": "big", "content": padding}, headers=headers
    )

    assert_detail(
        response, 413, f"Request body is larger than {settings.max_body_bytes} bytes"
    )
    assert list_posts(client, headers) == []


def test_body_of_exactly_the_limit_is_read(client: TestClient) -> None:
    _, headers = create_user_and_login(client)
    envelope = b'{"title": "big", "content": ""}'
    padding = b"a" * (settings.max_body_bytes - len(envelope))
    body = envelope[:-2] + padding + envelope[-2:]
    assert len(body) == settings.max_body_bytes

    response = client.post("/posts", content=body, headers={**headers, **JSON})

    assert_invalid(response, ("body", "content"), "at most")


def test_chunked_body_over_the_limit_is_413(client: TestClient) -> None:
    _, headers = create_user_and_login(client)
    chunk = b"a" * 65536
    chunks = settings.max_body_bytes // len(chunk) + 2

    response = client.post(
        "/posts",
        content=(chunk for _ in range(chunks)),
        headers={**headers, **JSON},
    )

    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_detail(
        response, 413, f"Request body is larger than {settings.max_body_bytes} bytes"
    )


def call_app(headers: dict[str, str], chunks: list[bytes]) -> tuple[int, list]:
    """POST /posts straight through the ASGI interface, counting the body chunks read."""
    received: list[bytes] = []
    sent: list[dict] = []

    async def receive() -> dict:
        if len(received) < len(chunks):
            received.append(chunks[len(received)])
            more = len(received) < len(chunks)
            return {"type": "http.request", "body": received[-1], "more_body": more}
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/posts",
        "raw_path": b"/posts",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (name.lower().encode(), value.encode()) for name, value in headers.items()
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    anyio.run(app, scope, receive, send)
    return sent[0]["status"], received


def test_declared_body_over_the_limit_is_refused_before_it_is_read(
    client: TestClient,
) -> None:
    _, headers = create_user_and_login(client)
    size = settings.max_body_bytes + 1

    status_code, read = call_app(
        {**headers, **JSON, "Content-Length": str(size)}, [b"a" * size]
    )

    assert status_code == 413
    assert read == []


def test_streamed_body_over_the_limit_stops_being_read_at_the_limit(
    client: TestClient,
) -> None:
    _, headers = create_user_and_login(client)
    chunk = b"a" * 65536
    limit_in_chunks = settings.max_body_bytes // len(chunk)

    status_code, read = call_app({**headers, **JSON}, [chunk] * (limit_in_chunks * 4))

    assert status_code == 413
    assert len(read) == limit_in_chunks + 1


# NUL characters


@pytest.mark.parametrize(
    ("method", "field"),
    [
        ("POST", "title"),
        ("POST", "content"),
        ("PUT", "title"),
        ("PUT", "content"),
        ("PATCH", "title"),
        ("PATCH", "content"),
    ],
)
def test_nul_in_a_post_is_422(client: TestClient, method: str, field: str) -> None:
    _, headers = create_user_and_login(client)
    post = create_post(client, headers, title="before", content="before")
    body = {"title": "t", "content": "c", field: "a\0b"}
    path = "/posts" if method == "POST" else f"/posts/{post['id']}"

    response = client.request(method, path, json=body, headers=headers)

    assert_invalid(response, ("body", field), "pattern")
    assert [p["title"] for p in list_posts(client, headers)] == ["before"]


@pytest.mark.parametrize("search", ["\0", "a\0b", "%\0%"])
def test_nul_in_search_is_422(client: TestClient, search: str) -> None:
    _, headers = create_user_and_login(client)

    response = client.get("/posts", params={"search": search}, headers=headers)

    assert_invalid(response, ("query", "search"), "pattern")


@pytest.mark.parametrize(
    "body",
    [
        {"email": "a\0b@example.com", "password": PASSWORD},
        {"email": "ab@exam\0ple.com", "password": PASSWORD},
        {"email": "nul@example.com", "password": f"{PASSWORD}\0"},
    ],
    ids=["email-local-part", "email-domain", "password"],
)
def test_nul_on_register_is_422(client: TestClient, body: dict) -> None:
    response = client.post("/users", json=body)

    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][:2] in (
        ["body", "email"],
        ["body", "password"],
    )


def test_nul_in_a_new_password_is_422(client: TestClient) -> None:
    user, headers = create_user_and_login(client)

    response = client.put(
        "/users/me/password",
        json={"current_password": PASSWORD, "new_password": "new pass\0word"},
        headers=headers,
    )

    assert_invalid(response, ("body", "new_password"), "NUL")
    login(client, user["email"])


@pytest.mark.parametrize(
    ("username", "password"),
    [("\0", PASSWORD), ("nul\0@example.com", PASSWORD), ("me", "\0")],
)
def test_nul_at_login_is_refused_like_any_bad_credential(
    client: TestClient, username: str, password: str
) -> None:
    """403, as for every failed login, so the answer says nothing more."""
    create_user(client, email="nul@example.com")

    response = client.post("/login", data={"username": username, "password": password})

    assert_detail(response, 403, "Invalid Credentials")


# Text outside the Basic Multilingual Plane


def test_non_bmp_text_round_trips_through_create_read_list_and_search(
    client: TestClient,
) -> None:
    _, headers = create_user_and_login(client)

    created = create_post(client, headers, title=NON_BMP, content=NON_BMP * 3)

    assert (created["title"], created["content"]) == (NON_BMP, NON_BMP * 3)
    read = client.get(f"/posts/{created['id']}", headers=headers).json()
    assert read == created
    assert list_posts(client, headers) == [created]
    for part in ("🎉", "👩‍👩‍👧", "𝔘𝔫𝔦", "\u200d"):
        assert list_posts(client, headers, search=part) == [created]
    assert list_posts(client, headers, search="🎊") == []


def test_non_bmp_text_round_trips_through_put_and_patch(client: TestClient) -> None:
    _, headers = create_user_and_login(client)
    post = create_post(client, headers)

    replaced = client.put(
        f"/posts/{post['id']}",
        json={"title": "🎉", "content": NON_BMP},
        headers=headers,
    ).json()
    patched = client.patch(
        f"/posts/{post['id']}", json={"title": NON_BMP}, headers=headers
    ).json()

    assert (replaced["title"], replaced["content"]) == ("🎉", NON_BMP)
    assert (patched["title"], patched["content"]) == (NON_BMP, NON_BMP)
    assert list_posts(client, headers)[0]["title"] == NON_BMP


def test_title_limit_counts_characters_not_bytes_or_utf16_units(
    client: TestClient,
) -> None:
    _, headers = create_user_and_login(client)
    longest = "🎉" * TITLE_MAX_CHARS

    created = create_post(client, headers, title=longest)
    too_long = client.post(
        "/posts", json={"title": longest + "🎉", "content": "c"}, headers=headers
    )

    assert created["title"] == longest
    assert_invalid(too_long, ("body", "title"), f"at most {TITLE_MAX_CHARS}")


def test_non_bmp_password_registers_and_logs_in(client: TestClient) -> None:
    password = "🎉" * 8 + "𝔘" * 10
    assert len(password.encode()) == 72
    user = create_user(client, password=password)

    login(client, user["email"], password)
    wrong = client.post("/login", data={"username": user["email"], "password": "🎉"})

    assert wrong.status_code == 403


# Ids and paging numbers that no column can hold


@pytest.mark.parametrize("post_id", [2**31, 2**32, 2**63, 2**64, 10**30])
@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_post_ids_past_the_column_range_are_422(
    client: TestClient, method: str, post_id: int
) -> None:
    _, headers = create_user_and_login(client)

    response = client.request(
        method,
        f"/posts/{post_id}",
        json={"title": "t", "content": "c"},
        headers=headers,
    )

    assert_invalid(response, ("path", "post_id"), "less than or equal to")


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_the_largest_possible_post_id_is_a_plain_404(
    client: TestClient, method: str
) -> None:
    _, headers = create_user_and_login(client)

    response = client.request(
        method, f"/posts/{MAX_ID}", json={"title": "t", "content": "c"}, headers=headers
    )

    assert_detail(response, 404, f"Post {MAX_ID} not found")


@pytest.mark.parametrize("user_id", [2**31, 2**63, 2**64])
def test_user_ids_past_the_column_range_are_422(
    client: TestClient, user_id: int
) -> None:
    _, headers = create_user_and_login(client)

    response = client.get(f"/users/{user_id}", headers=headers)

    assert_invalid(response, ("path", "user_id"), "less than or equal to")
    assert_detail(
        client.get(f"/users/{MAX_ID}", headers=headers), 404, "User not found"
    )


@pytest.mark.parametrize("post_id", [2**31, 2**63, 2**64, 10**30, -(2**63), 0])
def test_vote_post_ids_past_the_column_range_are_422(
    client: TestClient, post_id: int
) -> None:
    _, headers = create_user_and_login(client)

    response = client.post(
        "/vote", json={"post_id": post_id, "dir": 1}, headers=headers
    )

    assert_invalid(response, ("body", "post_id"))


def test_vote_on_the_largest_possible_post_id_is_a_plain_404(
    client: TestClient,
) -> None:
    _, headers = create_user_and_login(client)

    response = client.post("/vote", json={"post_id": MAX_ID, "dir": 1}, headers=headers)

    assert_detail(response, 404, f"Post {MAX_ID} not found")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("limit", 2**63),
        ("limit", 10**30),
        ("limit", -(2**63)),
        ("skip", 2**31),
        ("skip", 2**63),
        ("skip", 10**30),
        ("skip", -(2**63)),
    ],
)
def test_huge_or_negative_paging_is_422(
    client: TestClient, name: str, value: int
) -> None:
    _, headers = create_user_and_login(client)

    response = client.get("/posts", params={name: value}, headers=headers)

    assert_invalid(response, ("query", name))


def test_the_largest_skip_is_an_empty_page(client: TestClient) -> None:
    _, headers = create_user_and_login(client)
    create_post(client, headers)

    assert list_posts(client, headers, skip=MAX_ID, limit=100) == []


# Characters that mean something to SQL or LIKE


@pytest.mark.parametrize(
    "title",
    [
        "100%",
        "a_b",
        "it's",
        "''",
        'say "hi"',
        "back\\slash",
        "\\%",
        "\\_",
        "[a-z]*",
        "'; DROP TABLE posts; --",
        "%' OR '1'='1",
    ],
)
def test_search_matches_sql_and_like_characters_literally(
    client: TestClient, title: str
) -> None:
    _, headers = create_user_and_login(client)
    match = create_post(client, headers, title=f"x{title}x")["id"]
    create_post(client, headers, title="plain words with none of them")

    found = [post["id"] for post in list_posts(client, headers, search=title)]

    assert found == [match]
    assert len(list_posts(client, headers)) == 2


def test_search_of_the_longest_title_is_accepted_and_one_more_is_422(
    client: TestClient,
) -> None:
    _, headers = create_user_and_login(client)
    longest = "%" * TITLE_MAX_CHARS
    create_post(client, headers, title="%" * (TITLE_MAX_CHARS - 1))

    assert list_posts(client, headers, search=longest) == []
    response = client.get("/posts", params={"search": longest + "%"}, headers=headers)
    assert_invalid(response, ("query", "search"), f"at most {TITLE_MAX_CHARS}")


@pytest.mark.parametrize(
    ("method", "path", "body", "loc"),
    [
        (
            "post",
            "/posts/",
            {"title": "t", "content": "c", "published": 0},
            "published",
        ),
        (
            "post",
            "/posts/",
            {"title": "t", "content": "c", "published": "true"},
            "published",
        ),
        ("patch", "/posts/{id}", {"published": 1}, "published"),
        ("post", "/vote", {"post_id": "{id}", "dir": 1}, "post_id"),
        ("post", "/vote", {"post_id": 1, "dir": True}, "dir"),
        ("post", "/vote", {"post_id": 1, "dir": "1"}, "dir"),
        (
            "post",
            "/users/",
            {"email": "ada@example.com", "password": 12345678},
            "password",
        ),
    ],
)
def test_body_values_of_another_json_type_are_422(
    client: TestClient, method: str, path: str, body: dict, loc: str
) -> None:
    """Bodies are strict: the schema's types, not values that could be read as them."""
    _, headers = create_user_and_login(client)
    post_id = create_post(client, headers)["id"]
    body = {
        key: str(post_id) if value == "{id}" else value for key, value in body.items()
    }

    response = client.request(
        method, path.format(id=post_id), json=body, headers=headers
    )

    assert_invalid(response, ("body", loc))
