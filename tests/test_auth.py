"""/login and the access token rules that every protected route shares."""

import re
from datetime import timedelta
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from blogapi import security
from blogapi.config import settings
from blogapi.security import PasswordWork, observing_password_work
from blogapi.users import User
from tests.factories import (
    PASSWORD,
    assert_invalid,
    assert_unauthorized,
    bearer,
    connections_held_during,
    create_user,
    create_user_and_login,
    delete_user_row,
    engine,
    login,
    make_token,
    unsigned_token,
)


def test_login_returns_a_bearer_token(client: TestClient) -> None:
    user = create_user(client)

    response = client.post(
        "/login", data={"username": user["email"], "password": PASSWORD}
    )

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == settings.access_token_expire_minutes * 60 == 15 * 60
    assert response.headers["cache-control"] == "no-store"
    me = client.get("/users/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.json() == user


def test_token_is_hs256_with_sub_sid_iat_and_exp_from_settings(
    client: TestClient,
) -> None:
    user = create_user(client)
    token = client.post(
        "/login", data={"username": user["email"], "password": PASSWORD}
    ).json()["access_token"]

    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, settings.secret_key, algorithms=["HS256"])
    assert claims["sub"] == str(user["id"])
    assert re.fullmatch("[0-9a-f]{32}", claims["sid"])
    lifetime = claims["exp"] - claims["iat"]
    assert lifetime == settings.access_token_expire_minutes * 60 == 15 * 60


def test_login_holds_no_database_slot_while_bcrypt_runs(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst of logins must not keep other requests from the database."""
    user = create_user(client)

    with connections_held_during(client, "verify") as held_while_hashing:
        response = client.post(
            "/login", data={"username": user["email"], "password": PASSWORD}
        )

    assert response.status_code == 200
    assert held_while_hashing == [0]


def test_login_email_is_case_insensitive(client: TestClient) -> None:
    create_user(client, email="ada@example.com")

    response = client.post(
        "/login", data={"username": "ADA@Example.com", "password": PASSWORD}
    )

    assert response.status_code == 200
    assert response.json()["token_type"] == "bearer"


@pytest.mark.parametrize(
    "typed", ["  ada@example.com ", "ADA@EXAMPLE.COM", "Ada Lovelace <ada@example.com>"]
)
def test_login_finds_the_email_however_registration_would_store_it(
    client: TestClient, typed: str
) -> None:
    create_user(client, email=typed)

    response = client.post("/login", data={"username": typed, "password": PASSWORD})

    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("ada@example.com", "wrong password"),
        ("nobody@example.com", PASSWORD),
        ("ada@example.com", PASSWORD.upper()),
        ("ada@example.com", "x" * 100),
        ("ada@example.com", "nul\0inside"),
        ("ada\0@example.com", PASSWORD),
    ],
)
def test_bad_credentials_are_403_and_alike(
    client: TestClient, username: str, password: str
) -> None:
    create_user(client, email="ada@example.com")

    response = client.post("/login", data={"username": username, "password": password})

    assert response.status_code == 403
    assert response.json() == {"detail": "Invalid Credentials"}
    assert "www-authenticate" not in response.headers


@pytest.mark.parametrize("email", ["ada@example.com", "nobody@example.com"])
def test_unknown_email_costs_one_hash_check_like_a_wrong_password(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, email: str
) -> None:
    create_user(client, email="ada@example.com")
    work: list[PasswordWork] = []

    with observing_password_work(work.append):
        response = client.post(
            "/login", data={"username": email, "password": "wrong!!!"}
        )

    assert response.status_code == 403
    assert response.json() == {"detail": "Invalid Credentials"}
    assert work == ["verify"]


@pytest.mark.parametrize("missing", ["username", "password"])
def test_login_with_a_missing_field_is_422(client: TestClient, missing: str) -> None:
    form = {"username": "ada@example.com", "password": PASSWORD}
    del form[missing]

    response = client.post("/login", data=form)

    assert_invalid(response, ("body", missing), "Field required")


@pytest.mark.parametrize("empty", ["username", "password"])
def test_login_with_an_empty_field_is_422_as_its_schema_says(
    client: TestClient, empty: str
) -> None:
    """A form's empty field counts as a missing one, so the schema asks for at least one
    character: a client generated from it never sends the form that is refused."""
    form = {"username": "ada@example.com", "password": PASSWORD, empty: ""}
    fields = client.get("/openapi.json").json()["components"]["schemas"]["TokenRequest"]

    response = client.post("/login", data=form)

    assert_invalid(response, ("body", empty), "Field required")
    assert fields["properties"][empty]["minLength"] == 1


@pytest.mark.parametrize(
    ("grant_type", "status"), [("password", 200), ("", 200), ("null", 400)]
)
def test_login_grant_type_is_password_refresh_token_or_left_out(
    client: TestClient, grant_type: str, status: int
) -> None:
    """A form can't carry null: the schema has no nullable field, and `grant_type` is
    `password` (the OAuth2 password grant), `refresh_token`, or not sent; any other is
    OAuth's 400 `unsupported_grant_type`."""
    create_user(client, email="ada@example.com")
    form = {"grant_type": grant_type, "username": "ada@example.com"}
    fields = client.get("/openapi.json").json()["components"]["schemas"]["TokenRequest"]

    response = client.post("/login", data={**form, "password": PASSWORD})

    assert response.status_code == status, response.text
    assert fields["properties"]["grant_type"]["enum"] == ["password", "refresh_token"]
    assert [field.get("type") for field in fields["properties"].values()] == [
        "string"
    ] * len(fields["properties"])


def test_login_answers_with_and_without_a_trailing_slash(client: TestClient) -> None:
    create_user(client, email="ada@example.com")

    for path in ("/login", "/login/"):
        response = client.post(
            path,
            data={"username": "ada@example.com", "password": PASSWORD},
            follow_redirects=False,
        )
        assert response.status_code == 200, path


def test_swagger_authorize_points_at_login(client: TestClient) -> None:
    schemes = client.get("/openapi.json").json()["components"]["securitySchemes"]

    (scheme,) = schemes.values()
    assert scheme["type"] == "oauth2"
    token_url = scheme["flows"]["password"]["tokenUrl"]
    assert scheme["flows"]["password"]["refreshUrl"] == token_url == "login"
    create_user(client, email="ada@example.com")
    # Swagger UI resolves tokenUrl against the docs page and posts the form there.
    response = client.post(
        f"/{token_url.lstrip('/')}",
        data={
            "grant_type": "password",
            "username": "ada@example.com",
            "password": PASSWORD,
            "scope": "",
        },
    )
    assert response.status_code == 200
    assert response.json()["token_type"] == "bearer"


# Every protected route answers a bad token the same way; /users/me stands for them all.


def test_missing_token_is_401(client: TestClient) -> None:
    assert_unauthorized(client.get("/users/me"), "Not authenticated")


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic YWRhOnNlY3JldA==",
        "Token abc.def.ghi",
        "abc.def.ghi",
    ],
)
def test_authorization_that_is_not_a_bearer_token_is_401(
    client: TestClient, authorization: str
) -> None:
    response = client.get("/users/me", headers={"Authorization": authorization})

    assert_unauthorized(response, "Not authenticated")


@pytest.mark.parametrize(
    "token",
    ["", "garbage", "a.b.c", "a.b", "...", "eyJhbGciOiJIUzI1NiJ9.e30.", "é" * 20],
)
def test_malformed_token_is_401(client: TestClient, token: str) -> None:
    create_user(client)
    authorization = f"Bearer {token}".encode()

    response = client.get("/users/me", headers={"Authorization": authorization})

    assert_unauthorized(response)


def test_tampered_token_is_401(client: TestClient) -> None:
    victim = create_user(client)
    attacker = create_user(client)
    header, _, signature = make_token(str(attacker["id"])).split(".")
    forged_payload = make_token(str(victim["id"])).split(".")[1]

    response = client.get(
        "/users/me", headers=bearer(f"{header}.{forged_payload}.{signature}")
    )

    assert_unauthorized(response)


def test_token_signed_with_another_key_is_401(client: TestClient) -> None:
    user = create_user(client)
    token = make_token(str(user["id"]), key="another-key-that-is-long-enough-1234")

    assert_unauthorized(client.get("/users/me", headers=bearer(token)))


def test_registration_holds_no_database_slot_while_bcrypt_runs(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sign-ups are anonymous: a burst of them must not keep others from the database."""
    with connections_held_during(client, "hash") as held_while_hashing:
        response = client.post(
            "/users/", json={"email": "ada@example.com", "password": PASSWORD}
        )

    assert response.status_code == 201
    assert held_while_hashing == [0]


def test_only_valid_tokens_are_remembered(client: TestClient) -> None:
    """Junk tokens, short or huge, cost nothing to keep: they are never cached."""
    _, headers = create_user_and_login(client)
    security._verified_claims.cache_clear()
    junk = [f"junk.{i}.token" for i in range(50)] + ["x" * 100_000]

    for token in junk:
        assert_unauthorized(client.get("/users/me", headers=bearer(token)))
    assert client.get("/users/me", headers=headers).status_code == 200

    assert security._verified_claims.cache_info().currsize == 1


def test_expired_token_is_401(client: TestClient) -> None:
    user = create_user(client)
    token = make_token(str(user["id"]), lifetime=timedelta(seconds=-1))

    assert_unauthorized(client.get("/users/me", headers=bearer(token)))


def test_alg_none_token_is_401(client: TestClient) -> None:
    user = create_user(client)

    response = client.get("/users/me", headers=bearer(unsigned_token(str(user["id"]))))

    assert_unauthorized(response)


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_token_with_another_algorithm_is_401(
    client: TestClient, algorithm: str
) -> None:
    user = create_user(client)
    token = make_token(str(user["id"]), algorithm=algorithm)

    assert_unauthorized(client.get("/users/me", headers=bearer(token)))


@pytest.mark.parametrize("claim", ["sub", "jti", "ver", "sid", "exp", "iat"])
def test_token_missing_a_required_claim_is_401(client: TestClient, claim: str) -> None:
    user = create_user(client)
    claims: dict[str, Any] = {"sub": str(user["id"]), claim: None}

    token = make_token(**claims)

    assert_unauthorized(client.get("/users/me", headers=bearer(token)))


@pytest.mark.parametrize(
    "sub", ["abc", "", "0", "-1", "1.5", str(2**31), str(2**63), str(10**30)]
)
def test_token_naming_no_possible_user_is_401(client: TestClient, sub: str) -> None:
    create_user(client)

    response = client.get("/users/me", headers=bearer(make_token(sub)))

    assert_unauthorized(response)


@pytest.mark.parametrize(
    "claims",
    [
        {"ver": -1},
        {"ver": 2**31},
        {"ver": 2**70},
        {"jti": ""},
        {"jti": "x" * 65},
        {"jti": "nul\0inside"},
        {"sid": ""},
        {"sid": "x" * 33},
        {"sid": "nul\0inside"},
    ],
)
@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/users/me"), ("POST", "/logout")]
)
def test_a_signed_token_with_a_claim_out_of_range_is_401(
    client: TestClient, claims: dict[str, Any], method: str, path: str
) -> None:
    """Only the key's holder could sign one; it must still fail as a token, not as SQL."""
    user = create_user(client)
    token = make_token(str(user["id"]), **claims)

    assert_unauthorized(client.request(method, path, headers=bearer(token)))


@pytest.mark.parametrize("path", ["/users/me", "/posts/"])
def test_token_of_a_deleted_user_is_401(client: TestClient, path: str) -> None:
    user = create_user(client)
    token = make_token(str(user["id"]))
    assert client.get(path, headers=bearer(token)).status_code == 200

    delete_user_row(user["id"])

    assert_unauthorized(client.get(path, headers=bearer(token)))


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/users/me"),
        ("GET", "/users/1"),
        ("GET", "/posts/"),
        ("POST", "/posts/"),
        ("GET", "/posts/1"),
        ("PUT", "/posts/1"),
        ("PATCH", "/posts/1"),
        ("DELETE", "/posts/1"),
        ("POST", "/vote/"),
    ],
)
def test_every_protected_route_rejects_a_bad_token(
    client: TestClient, method: str, path: str
) -> None:
    response = client.request(method, path, headers=bearer("a.b.c"))

    assert_unauthorized(response)


def stored_hash(user_id: int) -> str:
    with Session(engine) as session:
        return session.exec(select(User.password_hash).where(User.id == user_id)).one()


def test_login_upgrades_a_hash_of_a_lower_cost_and_keeps_a_higher_one(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Raising BCRYPT_ROUNDS reaches old accounts as their owners log in."""
    user = create_user(client)
    cheap = stored_hash(user["id"])
    assert cheap.startswith(f"$2b${settings.bcrypt_rounds:02d}$")
    monkeypatch.setattr(settings, "bcrypt_rounds", settings.bcrypt_rounds + 1)

    work: list[PasswordWork] = []
    with observing_password_work(work.append):
        headers = login(client, user["email"])

    upgraded = stored_hash(user["id"])
    assert upgraded.startswith(f"$2b${settings.bcrypt_rounds:02d}$")
    assert work == ["verify"]  # the new hash comes from the check itself
    assert client.get("/users/me", headers=headers).status_code == 200
    assert login(client, user["email"])["Authorization"].startswith("Bearer ")
    assert stored_hash(user["id"]) == upgraded

    monkeypatch.setattr(settings, "bcrypt_rounds", settings.bcrypt_rounds - 1)
    login(client, user["email"])

    assert stored_hash(user["id"]) == upgraded
    wrong = {"username": user["email"], "password": "not the password"}
    assert client.post("/login", data=wrong).status_code == 403
