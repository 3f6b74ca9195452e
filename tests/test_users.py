"""/users: registration, the public user, and /users/me."""

import logging
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from blogapi.model_base import NO_NUL
from blogapi.users import User
from tests.factories import (
    PASSWORD,
    as_others_see,
    assert_invalid,
    assert_unauthorized,
    count_vote_rows,
    create_admin_and_login,
    create_post,
    create_user,
    create_user_and_login,
    delete_user_row,
    engine,
    login,
    vote,
)


def test_register_returns_the_public_user(client: TestClient) -> None:
    response = client.post(
        "/users/", json={"email": "ada@example.com", "password": PASSWORD}
    )

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "email", "created_at", "email_verified"}
    assert isinstance(body["id"], int)
    assert body["email"] == "ada@example.com"
    assert body["email_verified"] is False
    created_at = datetime.fromisoformat(body["created_at"])
    assert created_at.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - created_at) < timedelta(minutes=1)


def test_email_is_stored_lower_case(client: TestClient) -> None:
    user = create_user(client, email="Ada.Lovelace@Example.COM")

    assert user["email"] == "ada.lovelace@example.com"
    with Session(engine) as session:
        stored = session.exec(select(User.email).where(User.id == user["id"])).one()
    assert stored == "ada.lovelace@example.com"


@pytest.mark.parametrize(
    "second", ["ada@example.com", "ADA@example.com", "Ada@Example.Com"]
)
def test_same_email_in_any_case_is_a_conflict(client: TestClient, second: str) -> None:
    create_user(client, email="ada@example.com")

    response = client.post("/users/", json={"email": second, "password": PASSWORD})

    assert response.status_code == 409
    assert response.json() == {"detail": "Email already registered"}


@pytest.mark.parametrize("email", ["not-an-email", "ada@", "@example.com", ""])
def test_invalid_email_is_rejected(client: TestClient, email: str) -> None:
    response = client.post("/users/", json={"email": email, "password": PASSWORD})

    assert_invalid(response, ("body", "email"), "email")


def test_password_shorter_than_8_characters_is_rejected(client: TestClient) -> None:
    response = client.post(
        "/users/", json={"email": "ada@example.com", "password": "seven77"}
    )

    assert_invalid(response, ("body", "password"), "at least 8 characters")


# "é" * 37: 37 characters, 74 bytes in UTF-8: short in characters, too long for bcrypt.
@pytest.mark.parametrize("password", ["é" * 37, "x" * 73])
def test_password_over_72_bytes_is_rejected(client: TestClient, password: str) -> None:
    response = client.post(
        "/users/", json={"email": "ada@example.com", "password": password}
    )

    assert_invalid(response, ("body", "password"), "at most 72 bytes in UTF-8")


@pytest.mark.parametrize("password", ["8 chars!", "é" * 36, "x" * 72])
def test_password_at_the_bounds_is_accepted(client: TestClient, password: str) -> None:
    user = create_user(client, email="ada@example.com", password=password)

    assert login(client, user["email"], password)


def test_password_with_nul_is_rejected(client: TestClient) -> None:
    response = client.post(
        "/users/", json={"email": "ada@example.com", "password": "pass\0word123"}
    )
    schemas = client.get("/openapi.json").json()["components"]["schemas"]

    assert_invalid(response, ("body", "password"), "NUL")
    for body in ("UserCreate", "PasswordChange", "PasswordReset"):
        new_password = "password" if body == "UserCreate" else "new_password"
        field = schemas[body]["properties"][new_password]
        assert (field["pattern"], field["maxLength"]) == (NO_NUL, 72), body


@pytest.mark.parametrize("missing", ["email", "password"])
def test_missing_field_is_rejected(client: TestClient, missing: str) -> None:
    body = {"email": "ada@example.com", "password": PASSWORD}
    del body[missing]

    response = client.post("/users/", json=body)

    assert_invalid(response, ("body", missing), "Field required")


def test_server_owned_fields_are_ignored_on_register(client: TestClient) -> None:
    response = client.post(
        "/users/",
        json={
            "email": "ada@example.com",
            "password": PASSWORD,
            "id": 4242,
            "created_at": "2000-01-01T00:00:00Z",
            "password_hash": "not-a-hash",
        },
    )

    assert response.status_code == 201
    body = response.json()
    assert body["id"] != 4242
    assert not body["created_at"].startswith("2000")
    assert login(client, "ada@example.com")


def test_password_and_hash_never_leave_the_server(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    registered = client.post(
        "/users/", json={"email": "ada@example.com", "password": PASSWORD}
    )
    headers = login(client, "ada@example.com")
    client.post("/login", data={"username": "ada@example.com", "password": "wrong!!!"})
    responses = [
        registered,
        client.get("/users/me", headers=headers),
        client.get(f"/users/{registered.json()['id']}", headers=headers),
    ]
    with Session(engine) as session:
        password_hash = session.exec(select(User.password_hash)).one()

    for response in responses:
        assert response.status_code in {200, 201}
        assert "password" not in response.text
        assert PASSWORD not in response.text
        assert password_hash not in response.text
    assert PASSWORD not in caplog.text
    assert password_hash not in caplog.text


def test_a_rejected_body_never_echoes_a_password(client: TestClient) -> None:
    secret = "MyRealPassword1"
    _, headers = create_user_and_login(client)
    rejected = [
        client.post("/users/", json={"email": "not-an-email", "password": secret}),
        client.post("/users/", json={"password": secret}),
        client.put(
            "/users/me/password",
            json={"current_password": secret},
            headers=headers,
        ),
        client.request(
            "DELETE", "/users/me", json={"password": [secret]}, headers=headers
        ),
    ]

    for response in rejected:
        assert response.status_code == 422
        assert response.json()["detail"]
        assert secret not in response.text


def test_read_a_user_by_id(client: TestClient) -> None:
    other = create_user(client)
    _, headers = create_user_and_login(client)

    response = client.get(f"/users/{other['id']}", headers=headers)

    assert response.status_code == 200
    assert response.json() == as_others_see(other)


def test_only_the_user_themselves_sees_their_email(client: TestClient) -> None:
    me, headers = create_user_and_login(client)
    other, theirs = create_user_and_login(client)
    post = create_post(client, theirs)

    own = client.get(f"/users/{me['id']}", headers=headers)
    someone_else = client.get(f"/users/{other['id']}", headers=headers)
    their_post = client.get(f"/posts/{post['id']}", headers=headers)
    listed = client.get("/posts/", headers=headers)

    assert own.status_code == 200 and own.json() == me
    assert someone_else.json() == as_others_see(other)
    assert their_post.json()["owner"] == as_others_see(other)
    assert listed.json()[0]["owner"] == as_others_see(other)
    assert other["email"] not in someone_else.text + their_post.text + listed.text


def test_openapi_shows_emails_only_in_a_users_own_view(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    models, paths = schema["components"]["schemas"], schema["paths"]

    def response_schema(path: str, method: str, code: str) -> dict:
        return paths[path][method]["responses"][code]["content"]["application/json"][
            "schema"
        ]

    assert set(models["UserPublic"]["properties"]) == {"id", "created_at"}
    assert set(models["UserSelf"]["properties"]) == {
        "id",
        "created_at",
        "email",
        "email_verified",
    }
    assert models["PostPublic"]["properties"]["owner"] == {
        "$ref": "#/components/schemas/UserPublic"
    }
    self_ref = {"$ref": "#/components/schemas/UserSelf"}
    assert response_schema("/users", "post", "201") == self_ref
    assert response_schema("/users/me", "get", "200") == self_ref
    one_user = response_schema("/users/{user_id}", "get", "200")
    assert one_user["anyOf"] == [self_ref, {"$ref": "#/components/schemas/UserPublic"}]
    assert "own" in paths["/users/{user_id}"]["get"]["description"]


def test_read_a_missing_user_is_404(client: TestClient) -> None:
    me, headers = create_user_and_login(client)

    response = client.get(f"/users/{me['id'] + 1000}", headers=headers)

    assert response.status_code == 404
    assert response.json() == {"detail": "User not found"}


@pytest.mark.parametrize("user_id", ["0", str(2**31), str(2**63)])
def test_a_user_id_that_cannot_exist_is_rejected(
    client: TestClient, user_id: str
) -> None:
    _, headers = create_user_and_login(client)

    response = client.get(f"/users/{user_id}", headers=headers)

    assert_invalid(response, ("path", "user_id"))


@pytest.mark.parametrize("method", ["GET", "PATCH"])
@pytest.mark.parametrize("user_id", ["abc", "-1", "1.0", "1e3", "me%20"])
def test_a_user_id_that_is_no_number_is_a_path_that_does_not_exist(
    client: TestClient, method: str, user_id: str
) -> None:
    """/users/{user_id} takes digits only (`{user_id:int}`), so anything else is a 404
    like any unknown path, whatever the method."""
    _, headers = create_admin_and_login(client)

    response = client.request(
        method, f"/users/{user_id}", json={"is_active": True}, headers=headers
    )

    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


def test_users_me_is_no_user_id(client: TestClient) -> None:
    """An admin's PATCH /users/{user_id} does not match /users/me: that path has only
    its own methods."""
    _, headers = create_admin_and_login(client)

    response = client.patch("/users/me", json={"is_active": True}, headers=headers)

    assert response.status_code == 405
    assert response.headers["allow"] == "GET, DELETE"
    assert response.json() == {"detail": "Method Not Allowed"}


def test_read_me_returns_the_caller(client: TestClient) -> None:
    create_user(client)
    me, headers = create_user_and_login(client)

    response = client.get("/users/me", headers=headers)

    assert response.status_code == 200
    assert response.json() == me


@pytest.mark.parametrize("path", ["/users/me", "/users/1"])
def test_reading_users_needs_a_token(client: TestClient, path: str) -> None:
    create_user(client)

    assert_unauthorized(client.get(path), "Not authenticated")


def test_user_paths_answer_with_and_without_a_trailing_slash(
    client: TestClient,
) -> None:
    for path in ("/users", "/users/"):
        response = client.post(
            path,
            json={"email": f"ada{len(path)}@example.com", "password": PASSWORD},
            follow_redirects=False,
        )
        assert response.status_code == 201, path
    headers = login(client, "ada6@example.com")
    me = client.get("/users/me", headers=headers).json()
    for path in (
        "/users/me",
        "/users/me/",
        f"/users/{me['id']}",
        f"/users/{me['id']}/",
    ):
        response = client.get(path, headers=headers, follow_redirects=False)
        assert response.status_code == 200, path
        assert response.json() == me


def test_removing_a_user_removes_their_posts_and_votes(client: TestClient) -> None:
    gone, gone_headers = create_user_and_login(client)
    stays, headers = create_user_and_login(client)
    their_post = create_post(client, gone_headers)
    my_post = create_post(client, headers)
    assert vote(client, gone_headers, my_post["id"]).status_code == 201
    assert vote(client, headers, their_post["id"]).status_code == 201

    delete_user_row(gone["id"])

    assert [post["id"] for post in client.get("/posts/", headers=headers).json()] == [
        my_post["id"]
    ]
    assert count_vote_rows(their_post["id"]) == 0
    assert count_vote_rows(my_post["id"]) == 0
    assert client.get(f"/users/{stays['id']}", headers=headers).status_code == 200


def test_an_admin_sees_any_users_email(client: TestClient) -> None:
    other, _ = create_user_and_login(client)
    _, admin = create_admin_and_login(client)

    response = client.get(f"/users/{other['id']}", headers=admin)

    assert response.status_code == 200
    assert response.json() == other
