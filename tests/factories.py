"""Factories for users, tokens, posts and votes, made through the API itself.

Each takes a TestClient, or an httpx.Client pointed at a live server.

The few helpers that reach past the API (forging tokens, deleting a user, revoking a
user's tokens, backdating a post, counting vote rows) go straight to the test database
through `engine` below; `free_slots_during` watches the app's database slots.
"""

import base64
import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient
from httpx import Client, Response
from sqlalchemy import Engine, text
from sqlmodel import Session, col, delete, func, select, update

from blogapi import metrics
from blogapi.auth import RevokedToken
from blogapi.config import settings
from blogapi.db import build_sync_engine
from blogapi.login_sessions import LoginSession
from blogapi.model_base import MAX_ID, utc_now
from blogapi.posts import Post
from blogapi.resources import resources_of
from blogapi.security import PasswordWork, observing_password_work
from blogapi.users import User
from blogapi.votes import Vote

PASSWORD = "correct horse battery"

engine = build_sync_engine(settings.database_url)
"""The tests' own way into the database, beside the app's async engine."""
_serial = count(1)
TABLES = (
    "votes",
    "posts",
    "password_reset_tokens",
    "email_verification_tokens",
    "refresh_tokens",
    "login_sessions",
    "users",
    "revoked_tokens",
)


def empty_tables(database: Engine = engine) -> None:
    """Empty the tests' database, or another one, and restart its ids at 1."""
    with database.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
            )
        else:
            for table in TABLES:
                connection.execute(text(f"DELETE FROM {table}"))
            connection.execute(text("DELETE FROM sqlite_sequence"))


def create_user(
    client: Client, email: str | None = None, password: str = PASSWORD
) -> dict:
    email = email or f"user{next(_serial)}@example.com"
    response = client.post("/users/", json={"email": email, "password": password})
    assert response.status_code == 201, response.text
    return response.json()


def as_others_see(user: dict) -> dict:
    """A registered user as other users and every post's `owner` show them: no email."""
    return {"id": user["id"], "created_at": user["created_at"]}


def log_in(client: Client, email: str, password: str = PASSWORD) -> dict[str, Any]:
    """The whole answer of a password login: access and refresh tokens."""
    response = client.post("/login", data={"username": email, "password": password})
    assert response.status_code == 200, response.text
    return response.json()


def login(client: Client, email: str, password: str = PASSWORD) -> dict[str, str]:
    return bearer(log_in(client, email, password)["access_token"])


def create_user_and_login(client: Client) -> tuple[dict, dict[str, str]]:
    user = create_user(client)
    return user, login(client, user["email"])


def create_post(client: Client, headers: dict[str, str], **fields: Any) -> dict:
    body = {"title": f"Post {next(_serial)}", "content": "Some content", **fields}
    response = client.post("/posts/", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def vote(
    client: Client, headers: dict[str, str], post_id: int, direction: int = 1
) -> Response:
    return client.post(
        "/vote/", json={"post_id": post_id, "dir": direction}, headers=headers
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login_session_of(sub: Any) -> str:
    """The `sid` for a forged token of `sub`: a login session started for that user
    straight in the database, when `sub` names one, so that the token is refused only
    for what a test changes in it; otherwise an id that names no session."""
    session_id = uuid.uuid4().hex
    if not (isinstance(sub, str) and sub.isdigit() and int(sub) <= MAX_ID):
        return session_id
    with Session(engine) as session:
        user = session.get(User, int(sub))
        if user is None or user.id is None:
            return session_id
        session.add(
            LoginSession(
                id=session_id,
                user_id=user.id,
                token_version=user.token_version,
                expires_at=utc_now() + timedelta(days=1),
            )
        )
        session.commit()
    return session_id


def make_token(
    sub: Any,
    *,
    key: str | None = None,
    algorithm: str = "HS256",
    lifetime: timedelta = timedelta(minutes=5),
    **claims: Any,
) -> str:
    """A JWT like the app's own, signed with the app's key unless told otherwise, in a
    login session of the user `sub` names (see `login_session_of`).

    Pass a claim as None to leave it out of the token.
    """
    now = utc_now()
    payload = {
        "sub": sub,
        "jti": uuid.uuid4().hex,
        "ver": 0,
        "sid": claims.get("sid") or login_session_of(sub),
        "iat": now,
        "exp": now + lifetime,
        **claims,
    }
    payload = {name: value for name, value in payload.items() if value is not None}
    return jwt.encode(payload, key or settings.secret_key, algorithm=algorithm)


def unsigned_token(sub: Any) -> str:
    """A token that claims `alg: none` and carries no signature."""
    now = int(utc_now().timestamp())
    header = {"alg": "none", "typ": "JWT"}
    payload = {
        "sub": sub,
        "jti": uuid.uuid4().hex,
        "ver": 0,
        "sid": login_session_of(sub),
        "iat": now,
        "exp": now + 300,
    }
    return ".".join([_b64(header), _b64(payload), ""])


def _b64(part: dict) -> str:
    raw = json.dumps(part, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def delete_user_row(user_id: int) -> None:
    """Remove a user straight from the database (the API has no such route)."""
    with Session(engine) as session:
        session.exec(delete(User).where(col(User.id) == user_id))
        session.commit()


def log_out_directly(headers: dict[str, str]) -> None:
    """Revoke the token in `headers` as POST /logout would, without the API."""
    token = headers["Authorization"].removeprefix("Bearer ")
    claims = jwt.decode(token, options={"verify_signature": False})
    with Session(engine) as session:
        session.add(
            RevokedToken(
                token_id=claims["jti"],
                expires_at=datetime.fromtimestamp(claims["exp"], UTC),
            )
        )
        session.commit()


def revoke_tokens(user_id: int) -> None:
    """Raise a user's token version, as a password change elsewhere would."""
    with Session(engine) as session:
        session.exec(
            update(User)
            .where(col(User.id) == user_id)
            .values(token_version=User.token_version + 1)
        )
        session.commit()


@contextmanager
def connections_held_during(
    client: TestClient, work: PasswordWork
) -> Iterator[list[int]]:
    """Note, at each bcrypt hash or check of kind `work`, how many of the app's pooled
    connections are checked out."""
    pool, held = resources_of(client.app).engine.sync_engine.pool, []

    def noting(kind: PasswordWork) -> None:
        if kind == work:
            held.append(pool.checkedout())

    with observing_password_work(noting):
        yield held


def metric_value(sample: str, **labels: str) -> float:
    """A sample's value in this process's metrics (the tests run no gunicorn), 0 if it
    has none yet: `metric_value("blogapi_emails_total", kind=..., outcome="sent")`."""
    return metrics.REGISTRY.get_sample_value(sample, labels) or 0.0


def set_created_at(post_ids: list[int], when: datetime) -> None:
    """Backdate posts, since clients can't set `created_at`."""
    with Session(engine) as session:
        session.exec(
            update(Post).where(col(Post.id).in_(post_ids)).values(created_at=when)
        )
        session.commit()


def count_vote_rows(post_id: int) -> int:
    with Session(engine) as session:
        query = select(func.count()).select_from(Vote).where(Vote.post_id == post_id)
        return session.exec(query).one()


def assert_invalid(response: Response, loc: tuple, message: str = "") -> None:
    """A 422 whose `detail` names the field at `loc`, with `message` in its text."""
    assert response.status_code == 422, response.text
    errors = [
        error["msg"]
        for error in response.json()["detail"]
        if tuple(error["loc"]) == loc
    ]
    assert errors, f"no error at {loc}: {response.json()['detail']}"
    assert any(message in error for error in errors), errors


def assert_unauthorized(
    response: Response, detail: str = "Could not validate credentials"
) -> None:
    """A 401 with the Bearer challenge, as every bad or missing token gets."""
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"detail": detail}


def set_admin(user_id: int, is_admin: bool = True) -> None:
    """Make a user an admin, as `python -m blogapi make-admin` does."""
    with Session(engine) as session:
        session.exec(
            update(User).where(col(User.id) == user_id).values(is_admin=is_admin)
        )
        session.commit()


def create_admin_and_login(client: Client) -> tuple[dict, dict[str, str]]:
    user = create_user(client)
    set_admin(user["id"])
    return user, login(client, user["email"])


@contextmanager
def blogapi_log(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Let caplog see what blogapi logs: its logger does not propagate to the root's."""
    logger = logging.getLogger("blogapi")
    logger.addHandler(caplog.handler)
    try:
        yield
    finally:
        logger.removeHandler(caplog.handler)
