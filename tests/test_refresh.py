"""Refresh tokens (blogapi.login_sessions): rotation, reuse detection, expiry, and what
ends a login session; POST /login's refresh grant and POST /logout's refresh token."""

import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, func, select, update

from blogapi import login_sessions
from blogapi.config import settings
from blogapi.login_sessions import LoginSession, RefreshToken
from blogapi.model_base import utc_now
from blogapi.security import token_hash
from tests.factories import (
    PASSWORD,
    assert_unauthorized,
    bearer,
    blogapi_log,
    create_user,
    engine,
    log_in,
    make_token,
)
from tests.servers import requires_postgres, running_server, scratch_database
from tests.test_query_counts import recorded_statements
from tests.test_security import change_password, delete_account

INVALID_GRANT = "The refresh token is invalid, expired or revoked; log in again"


def refresh(client: httpx.Client, refresh_token: str) -> httpx.Response:
    return client.post(
        "/login", data={"grant_type": "refresh_token", "refresh_token": refresh_token}
    )


def refreshed(client: httpx.Client, tokens: dict[str, Any]) -> dict[str, Any]:
    """The next tokens of a login session."""
    response = refresh(client, tokens["refresh_token"])
    assert response.status_code == 200, response.text
    return response.json()


def assert_oauth_error(
    response: httpx.Response, error: str, description: str | None = None
) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == {"error", "error_description"}
    assert body["error"] == error
    if description is not None:
        assert body["error_description"] == description
    assert response.headers["cache-control"] == "no-store"


def assert_invalid_grant(response: httpx.Response) -> None:
    assert_oauth_error(response, "invalid_grant", INVALID_GRANT)


def works(client: httpx.Client, tokens: dict[str, Any]) -> bool:
    """Whether the access token of `tokens` is still accepted (else it is a 401)."""
    response = client.get("/users/me", headers=bearer(tokens["access_token"]))
    if response.status_code == 401:
        assert_unauthorized(response)
        return False
    assert response.status_code == 200, response.text
    return True


def sid(tokens: dict[str, Any]) -> str:
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    session_id: str = claims["sid"]
    return session_id


def session_row(session_id: str) -> LoginSession | None:
    with Session(engine) as session:
        return session.get(LoginSession, session_id)


def rows(table: type[LoginSession] | type[RefreshToken]) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(table)).one()


# Rotation


def test_a_refresh_answers_new_tokens_and_spends_the_old_one(
    client: TestClient,
) -> None:
    user = create_user(client)
    first = log_in(client, user["email"])

    response = refresh(client, first["refresh_token"])

    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    second = response.json()
    assert set(second) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert second["token_type"] == "bearer"
    assert second["expires_in"] == settings.access_token_expire_minutes * 60
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    assert sid(second) == sid(first)
    me = client.get("/users/me", headers=bearer(second["access_token"]))
    assert me.json() == user
    third = refreshed(client, second)
    fourth = refreshed(client, third)
    assert all(works(client, tokens) for tokens in (first, second, third, fourth))


def test_refresh_tokens_are_random_and_stored_only_as_sha256(
    client: TestClient,
) -> None:
    user = create_user(client)
    tokens = [log_in(client, user["email"]) for _ in range(3)]
    tokens.append(refreshed(client, tokens[0]))

    with Session(engine) as session:
        stored = set(session.exec(select(RefreshToken.token_hash)).all())

    secrets = [t["refresh_token"] for t in tokens]
    assert len(set(secrets)) == 4
    assert all(len(secret) == 43 for secret in secrets)  # 256 bits in base64url
    assert stored == {token_hash(secret) for secret in secrets}
    assert not stored & set(secrets)


def test_the_refresh_grant_runs_three_statements(client: TestClient) -> None:
    """Spend the token, extend its session, store the next token: no more."""
    user = create_user(client)
    tokens = log_in(client, user["email"])

    with recorded_statements(client) as statements:
        refreshed(client, tokens)

    assert [s.split()[0].upper() for s in statements] == ["UPDATE", "UPDATE", "INSERT"]


def test_a_refresh_whose_answer_failed_may_be_sent_again(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spending a token and storing the next are one transaction: when storing fails
    (here, the next token's hash is taken), the spend is undone, and the same token
    sent again is no reuse."""
    user = create_user(client)
    tokens = log_in(client, user["email"])
    taken = log_in(client, user["email"])["refresh_token"]
    monkeypatch.setattr(login_sessions, "opaque_token", lambda: taken)

    assert_invalid_grant(refresh(client, tokens["refresh_token"]))

    monkeypatch.undo()
    assert works(client, refreshed(client, tokens))


# Reuse


def test_a_spent_token_sent_again_ends_its_whole_session(client: TestClient) -> None:
    user = create_user(client)
    first = log_in(client, user["email"])
    second = refreshed(client, first)
    third = refreshed(client, second)
    other_login = log_in(client, user["email"])

    assert_invalid_grant(refresh(client, first["refresh_token"]))

    for tokens in (first, second, third):
        assert not works(client, tokens)
    assert_invalid_grant(refresh(client, third["refresh_token"]))
    assert_invalid_grant(refresh(client, second["refresh_token"]))
    assert works(client, other_login)
    assert works(client, refreshed(client, other_login))
    assert works(client, log_in(client, user["email"]))


def test_reuse_is_logged_with_the_session_and_user_never_the_token(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    user = create_user(client)
    first = log_in(client, user["email"])
    refreshed(client, first)

    with blogapi_log(caplog), caplog.at_level(logging.WARNING, logger="blogapi"):
        assert_invalid_grant(refresh(client, first["refresh_token"]))
        assert_invalid_grant(refresh(client, first["refresh_token"]))

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"a spent refresh token came back: ended login session {sid(first)} of user "
        + str(user["id"])
    ]
    assert first["refresh_token"] not in caplog.text


def race(send: Callable[[], httpx.Response], senders: int) -> list[httpx.Response]:
    """`send` from `senders` threads, released together."""
    start = threading.Barrier(senders)
    responses: list[httpx.Response] = []

    def sender() -> None:
        start.wait(timeout=60)
        responses.append(send())

    threads = [threading.Thread(target=sender) for _ in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(responses) == senders
    return responses


def assert_one_winner_and_the_session_ended(
    client: httpx.Client, responses: list[httpx.Response], other_login: dict
) -> None:
    """Exactly one 200; every other answer invalid_grant; and the session is over,
    the winner's new tokens included: one of the senders reused a spent token."""
    winners = [r for r in responses if r.status_code == 200]
    assert len(winners) == 1, [r.text for r in responses]
    for response in responses:
        if response is not winners[0]:
            assert_invalid_grant(response)
    won = winners[0].json()
    assert not works(client, won)
    assert_invalid_grant(refresh(client, won["refresh_token"]))
    assert works(client, other_login)


@pytest.mark.parametrize("senders", [2, 6])
def test_concurrent_refreshes_with_one_token_have_one_winner_and_end_the_session(
    client: TestClient, senders: int
) -> None:
    user = create_user(client)
    tokens = log_in(client, user["email"])
    other_login = log_in(client, user["email"])

    responses = race(lambda: refresh(client, tokens["refresh_token"]), senders)

    assert_one_winner_and_the_session_ended(client, responses, other_login)
    assert session_row(sid(tokens)).revoked is True


@requires_postgres("server processes racing on one PostgreSQL database")
def test_refreshes_racing_across_server_processes_have_one_winner() -> None:
    """Two gunicorn workers, each with its own connections, get the same token at once."""
    with (
        scratch_database("refresh") as url,
        running_server(url, workers=2) as server,
        server.client(timeout=60) as client,
    ):
        user = create_user(client)
        tokens = log_in(client, user["email"])
        other_login = log_in(client, user["email"])

        def send() -> httpx.Response:
            with server.client(timeout=60) as own:
                return refresh(own, tokens["refresh_token"])

        responses = race(send, 8)

        assert_one_winner_and_the_session_ended(client, responses, other_login)


# Expiry


def expire(refresh_token: str | None = None, session_id: str | None = None) -> None:
    """Backdate a refresh token, or a login session, to a second ago."""
    past = utc_now() - timedelta(seconds=1)
    with Session(engine) as session:
        if refresh_token is not None:
            session.exec(
                update(RefreshToken)
                .where(col(RefreshToken.token_hash) == token_hash(refresh_token))
                .values(expires_at=past)
            )
        if session_id is not None:
            session.exec(
                update(LoginSession)
                .where(col(LoginSession.id) == session_id)
                .values(expires_at=past)
            )
        session.commit()


def test_an_expired_refresh_token_is_invalid_grant_and_ends_nothing(
    client: TestClient,
) -> None:
    user = create_user(client)
    tokens = log_in(client, user["email"])

    expire(tokens["refresh_token"])

    assert_invalid_grant(refresh(client, tokens["refresh_token"]))
    assert works(client, tokens)
    assert session_row(sid(tokens)).revoked is False


def test_a_spent_token_past_its_time_ends_nothing(client: TestClient) -> None:
    user = create_user(client)
    first = log_in(client, user["email"])
    second = refreshed(client, first)

    expire(first["refresh_token"])

    assert_invalid_grant(refresh(client, first["refresh_token"]))
    assert works(client, refreshed(client, second))


@pytest.mark.parametrize("days", [1, 30])
def test_refresh_tokens_live_refresh_token_expire_days(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, days: int
) -> None:
    monkeypatch.setattr(settings, "refresh_token_expire_days", days)
    user = create_user(client)
    before = utc_now()

    tokens = refreshed(client, log_in(client, user["email"]))

    after = utc_now()
    with Session(engine) as session:
        stored = session.exec(
            select(RefreshToken).where(
                col(RefreshToken.token_hash) == token_hash(tokens["refresh_token"])
            )
        ).one()
    row = session_row(sid(tokens))
    assert row is not None
    lifetime = timedelta(days=days)
    assert before + lifetime <= stored.expires_at <= after + lifetime
    assert before + lifetime <= row.expires_at <= after + lifetime


def test_a_session_outlives_the_access_tokens_issued_in_it(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Access tokens longer-lived than refresh tokens (odd, but allowed) keep working
    while they last: their session is kept as long."""
    monkeypatch.setattr(settings, "access_token_expire_minutes", 3 * 24 * 60)
    monkeypatch.setattr(settings, "refresh_token_expire_days", 1)
    user = create_user(client)

    tokens = log_in(client, user["email"])

    row = session_row(sid(tokens))
    assert row is not None
    assert row.expires_at >= utc_now() + timedelta(days=3) - timedelta(minutes=1)


def test_expired_rows_are_cleaned_up_at_the_next_login(client: TestClient) -> None:
    user = create_user(client)
    spent = log_in(client, user["email"])
    kept = refreshed(client, spent)
    gone = log_in(client, user["email"])
    expire(spent["refresh_token"])
    expire(gone["refresh_token"], session_id=sid(gone))
    assert (rows(LoginSession), rows(RefreshToken)) == (2, 3)

    newest = log_in(client, user["email"])

    assert session_row(sid(gone)) is None
    assert (rows(LoginSession), rows(RefreshToken)) == (2, 2)
    assert works(client, refreshed(client, kept))
    assert works(client, newest)


# What else ends a session


def test_a_password_change_ends_every_session_of_the_user(client: TestClient) -> None:
    user = create_user(client)
    first, second = log_in(client, user["email"]), log_in(client, user["email"])
    bystander = log_in(client, create_user(client)["email"])

    response = change_password(
        client, bearer(first["access_token"]), PASSWORD, "a brand new password"
    )

    assert response.status_code == 204
    for tokens in (first, second):
        assert_invalid_grant(refresh(client, tokens["refresh_token"]))
    assert works(client, refreshed(client, bystander))
    fresh = log_in(client, user["email"], "a brand new password")
    assert works(client, refreshed(client, fresh))


def test_deleting_the_account_deletes_its_sessions_and_tokens(
    client: TestClient,
) -> None:
    user = create_user(client)
    tokens = refreshed(client, log_in(client, user["email"]))
    bystander = log_in(client, create_user(client)["email"])

    response = delete_account(client, bearer(tokens["access_token"]), PASSWORD)

    assert response.status_code == 204
    assert_invalid_grant(refresh(client, tokens["refresh_token"]))
    assert (rows(LoginSession), rows(RefreshToken)) == (1, 1)
    assert works(client, refreshed(client, bystander))


def test_an_access_token_naming_another_users_session_is_401(
    client: TestClient,
) -> None:
    """Only the key's holder signs tokens; still, a session belongs to one user."""
    victim = create_user(client)
    attacker = create_user(client)
    victims_session = sid(log_in(client, victim["email"]))

    token = make_token(str(attacker["id"]), sid=victims_session)

    assert_unauthorized(client.get("/users/me", headers=bearer(token)))


# Logout


def logout(
    client: httpx.Client,
    access: dict[str, Any] | None = None,
    refresh_token: str | None = None,
) -> httpx.Response:
    return client.post(
        "/logout",
        headers=bearer(access["access_token"]) if access else {},
        json={"refresh_token": refresh_token} if refresh_token else None,
    )


def test_logout_with_a_bearer_token_ends_its_session(client: TestClient) -> None:
    user = create_user(client)
    first = log_in(client, user["email"])
    second = refreshed(client, first)
    other_login = log_in(client, user["email"])

    response = logout(client, first)

    assert response.status_code == 204
    assert response.content == b""
    assert not works(client, first)
    assert not works(client, second)
    assert_invalid_grant(refresh(client, second["refresh_token"]))
    assert works(client, other_login)
    assert works(client, refreshed(client, other_login))


def test_logout_with_a_bearer_token_and_a_refresh_token_ends_both_sessions(
    client: TestClient,
) -> None:
    user = create_user(client)
    one, two, three = (log_in(client, user["email"]) for _ in range(3))

    assert logout(client, one, two["refresh_token"]).status_code == 204

    assert not works(client, one)
    assert not works(client, two)
    assert_invalid_grant(refresh(client, one["refresh_token"]))
    assert_invalid_grant(refresh(client, two["refresh_token"]))
    assert works(client, refreshed(client, three))


def test_logout_with_only_a_refresh_token_ends_its_session(client: TestClient) -> None:
    """An access token that ran out is no obstacle: the refresh token alone will do."""
    user = create_user(client)
    first = log_in(client, user["email"])
    second = refreshed(client, first)
    other_login = log_in(client, user["email"])

    response = logout(client, refresh_token=second["refresh_token"])

    assert response.status_code == 204
    assert response.content == b""
    assert not works(client, first)
    assert not works(client, second)
    assert_invalid_grant(refresh(client, second["refresh_token"]))
    assert works(client, refreshed(client, other_login))


def test_logout_with_a_spent_refresh_token_ends_its_session(
    client: TestClient,
) -> None:
    user = create_user(client)
    first = log_in(client, user["email"])
    second = refreshed(client, first)

    assert logout(client, refresh_token=first["refresh_token"]).status_code == 204

    assert not works(client, second)
    assert_invalid_grant(refresh(client, second["refresh_token"]))


def test_anyone_holding_a_refresh_token_may_end_its_session(
    client: TestClient,
) -> None:
    """A refresh token is a bearer credential: sent by another user's login, or by
    nobody's, it still ends the session it belongs to (and only that one)."""
    victim, finder = create_user(client), create_user(client)
    leaked, kept = log_in(client, victim["email"]), log_in(client, victim["email"])
    finders = log_in(client, finder["email"])

    assert logout(client, finders, leaked["refresh_token"]).status_code == 204

    assert not works(client, leaked)
    assert_invalid_grant(refresh(client, leaked["refresh_token"]))
    assert works(client, refreshed(client, kept))
    assert works(client, log_in(client, finder["email"]))


@pytest.mark.parametrize("refresh_token", ["not-a-token", "x" * 128, "\0", "é" * 43])
def test_logout_with_an_unknown_refresh_token_ends_nothing(
    client: TestClient, refresh_token: str
) -> None:
    user = create_user(client)
    tokens = log_in(client, user["email"])

    assert logout(client, refresh_token=refresh_token).status_code == 204

    assert works(client, refreshed(client, tokens))


def test_logout_with_neither_token_is_401(client: TestClient) -> None:
    assert_unauthorized(logout(client), "Not authenticated")
    assert_unauthorized(client.post("/logout", json=None), "Not authenticated")


def test_logout_with_a_bad_bearer_token_ends_nothing(client: TestClient) -> None:
    user = create_user(client)
    tokens = log_in(client, user["email"])

    response = client.post(
        "/logout",
        headers=bearer("a.b.c"),
        json={"refresh_token": tokens["refresh_token"]},
    )

    assert_unauthorized(response)
    assert works(client, refreshed(client, tokens))


@pytest.mark.parametrize(
    "body", [{}, {"refresh_token": 5}, {"refresh_token": "x" * 129}]
)
def test_logout_with_a_malformed_body_is_422(
    client: TestClient, body: dict[str, Any]
) -> None:
    user = create_user(client)
    tokens = log_in(client, user["email"])

    response = client.post("/logout", json=body, headers=bearer(tokens["access_token"]))

    assert response.status_code == 422, response.text
    assert works(client, tokens)


# The grant's errors


def test_an_unknown_refresh_token_is_invalid_grant(client: TestClient) -> None:
    user = create_user(client)
    tokens = log_in(client, user["email"])

    for token in ["x" * 43, tokens["access_token"], "x" * 10_000]:
        assert_invalid_grant(refresh(client, token))

    assert works(client, refreshed(client, tokens))


def test_an_unsupported_grant_type_is_400(client: TestClient) -> None:
    user = create_user(client)
    form = {"username": user["email"], "password": PASSWORD}

    for grant_type in ["client_credentials", "authorization_code", "PASSWORD"]:
        response = client.post("/login", data={**form, "grant_type": grant_type})
        assert_oauth_error(
            response,
            "unsupported_grant_type",
            "grant_type must be password or refresh_token",
        )


def test_the_refresh_grant_without_a_refresh_token_is_invalid_request(
    client: TestClient,
) -> None:
    user = create_user(client)

    response = client.post(
        "/login",
        data={
            "grant_type": "refresh_token",
            "username": user["email"],
            "password": PASSWORD,
        },
    )

    assert_oauth_error(
        response, "invalid_request", "grant_type=refresh_token needs a refresh_token"
    )


def test_the_password_grant_named_or_not_is_the_same_login(client: TestClient) -> None:
    user = create_user(client)
    form = {"username": user["email"], "password": PASSWORD}

    for grant in ({}, {"grant_type": "password"}, {"grant_type": ""}):
        response = client.post("/login", data={**form, **grant})
        assert response.status_code == 200, response.text
        assert works(client, response.json())
    wrong = client.post(
        "/login", data={**form, "password": "wrong!!!", "grant_type": "password"}
    )
    assert wrong.status_code == 403
    assert wrong.json() == {"detail": "Invalid Credentials"}
    missing = client.post("/login", data={"grant_type": "password"})
    assert missing.status_code == 422
    assert [error["loc"] for error in missing.json()["detail"]] == [
        ["body", "username"],
        ["body", "password"],
    ]


# The OpenAPI document


def test_the_token_endpoint_documents_its_oauth_errors(client: TestClient) -> None:
    openapi = client.get("/openapi.json").json()
    login = openapi["paths"]["/login"]["post"]
    (scheme,) = openapi["components"]["securitySchemes"].values()

    assert scheme["flows"]["password"]["refreshUrl"] == "login"
    assert login["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OAuthErrorMessage"
    }
    error = openapi["components"]["schemas"]["OAuthErrorMessage"]["properties"]
    assert set(error["error"]["enum"]) == {
        "invalid_request",
        "invalid_grant",
        "unsupported_grant_type",
    }
    token = openapi["components"]["schemas"]["Token"]
    assert set(token["required"]) >= {"access_token", "expires_in", "refresh_token"}
    form = login["requestBody"]["content"]["application/x-www-form-urlencoded"]
    fields = openapi["components"]["schemas"][form["schema"]["$ref"].split("/")[-1]]
    assert set(fields["properties"]) == {
        "grant_type",
        "scope",
        "username",
        "password",
        "refresh_token",
    }
    assert fields["properties"]["grant_type"]["enum"] == ["password", "refresh_token"]
    logout = openapi["paths"]["/logout"]["post"]
    assert {} in logout["security"]
