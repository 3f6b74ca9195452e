"""Login sessions and their refresh tokens (RFC 6749 sections 1.5 and 6, RFC 9700
section 4.14): what POST /login hands out, and what ends a login.

A password login starts a login session: a family of refresh tokens, each of which
works once. Spending one (grant_type=refresh_token) hands out a new access token and
the family's next refresh token. A spent token presented again means that someone else
holds a copy, and nobody can tell which of the two is the rightful client: the whole
family ends, its access tokens included (their `sid` names the session, and every
authenticated request checks it: blogapi.auth.TOKEN_IS_CURRENT).

A refresh token is 256 random bits, so the database keeps only its SHA-256. Each is
valid for REFRESH_TOKEN_EXPIRE_DAYS; a session lasts until the last token issued in it
expires, and a spent token is kept until then, to be recognised if it comes back.

A session also ends when its user's token_version moves on (a password change or
reset, the account disabled: the session keeps the version it started with) and with
its user (ON DELETE CASCADE).
"""

import logging
from datetime import datetime, timedelta
from typing import Literal

import sqlalchemy
from sqlalchemy import Integer, String, bindparam, false, insert, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel, col, delete, exists, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from blogapi.config import settings
from blogapi.db import begin_transaction
from blogapi.errors import InvalidGrant
from blogapi.model_base import UTCDateTime, example, utc_now
from blogapi.security import (
    SESSION_ID_CHARS,
    SHA256_HEX_CHARS,
    access_token_lifetime,
    create_access_token,
    new_session_id,
    opaque_token,
    token_hash,
)
from blogapi.users import User

log = logging.getLogger("blogapi")

REFRESH_TOKEN_MAX_CHARS = 128
"""Ours are 43 characters."""


class LoginSession(SQLModel, table=True):
    """One login: the family of refresh tokens descended from it."""

    __tablename__ = "login_sessions"

    id: str = Field(primary_key=True, max_length=SESSION_ID_CHARS)
    user_id: int = Field(foreign_key="users.id", ondelete="CASCADE", index=True)
    token_version: int = Field(description="The user's token_version at the login")
    revoked: bool = Field(default=False, description="Ended: logout, or a token reused")
    created_at: datetime = Field(
        default_factory=utc_now, sa_type=UTCDateTime, nullable=False
    )
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)
    """When the last token issued in the session expires."""


class RefreshToken(SQLModel, table=True):
    __tablename__ = "refresh_tokens"

    token_hash: str = Field(primary_key=True, max_length=SHA256_HEX_CHARS)
    session_id: str = Field(
        foreign_key="login_sessions.id",
        ondelete="CASCADE",
        index=True,
        max_length=SESSION_ID_CHARS,
    )
    spent: bool = False
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)


EXAMPLE_TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIiwianRpIjoiM2YyYjljMWU4ZDdhNGI2Z"
    "jllMGMxZDJhM2I0YzVkNmUiLCJ2ZXIiOjAsImlhdCI6MTc5NjM3NjY2MCwiZXhwIjoxNzk2Mzc4NDYwfQ."
    "p-b7jyxcCyecxA1ix9-N3B5bj9jRTCaaI3RuC9BXhYU"
)
"""A token of the shape ours have, signed with a key no server has."""
EXAMPLE_REFRESH_TOKEN = "Xq3v9bN2kR7tY1wE5uI8oP4aS6dF0gH2jK7lZ3xC9vB"
"""A refresh token of the shape ours have (256 random bits), that no server issued."""


class Token(SQLModel):
    """The token endpoint's answer (RFC 6749 section 5.1)."""

    access_token: str = Field(schema_extra=example(EXAMPLE_TOKEN))
    token_type: Literal["bearer"] = Field(
        default="bearer", schema_extra=example("bearer")
    )
    expires_in: int = Field(
        description="Seconds the access token is valid for", schema_extra=example(900)
    )
    refresh_token: str = Field(
        description="Send it to `POST /login` with `grant_type=refresh_token` for new "
        "tokens before REFRESH_TOKEN_EXPIRE_DAYS pass; it works once",
        schema_extra=example(EXAMPLE_REFRESH_TOKEN),
    )


_NOW = bindparam("now", type_=UTCDateTime)
_HASH = bindparam("hashed_token", type_=String)
_SESSION_EXPIRES_AT = bindparam("session_expires_at", type_=UTCDateTime)
_NO_SYNC = {"synchronize_session": False}
_sessions = LoginSession.metadata.tables["login_sessions"]

_START = (
    insert(_sessions)
    .from_select(
        ["id", "user_id", "token_version", "revoked", "created_at", "expires_at"],
        # SQLAlchemy's own select: SQLModel's has types for at most four columns.
        sqlalchemy.select(
            bindparam("session_id", type_=String),
            col(User.id),
            col(User.token_version),
            false(),
            _NOW,
            _SESSION_EXPIRES_AT,
        ).where(
            col(User.id) == bindparam("user_id", type_=Integer),
            col(User.is_active),
            col(User.token_version) == bindparam("version", type_=Integer),
        ),
    )
    .returning(_sessions.c.id)
)
"""A session for the account as the login found it: still there, active, and with
the token version the password was checked under."""
_ISSUE = insert(RefreshToken).values(
    token_hash=_HASH,
    session_id=bindparam("in_session"),
    spent=False,
    expires_at=bindparam("token_expires_at", type_=UTCDateTime),
)
_SPEND = (
    update(RefreshToken)
    .where(
        col(RefreshToken.token_hash) == _HASH,
        ~col(RefreshToken.spent),
        col(RefreshToken.expires_at) > _NOW,
        exists().where(
            col(LoginSession.id) == col(RefreshToken.session_id),
            ~col(LoginSession.revoked),
            col(User.id) == col(LoginSession.user_id),
            col(User.is_active),
            col(User.token_version) == col(LoginSession.token_version),
        ),
    )
    .values(spent=True)
    .returning(col(RefreshToken.session_id))
    .execution_options(**_NO_SYNC)
)
"""Whoever runs this first for a token has it: a concurrent second use finds it spent."""
_END_FAMILY_OF_SPENT = (
    update(LoginSession)
    .where(
        col(LoginSession.id).in_(
            select(RefreshToken.session_id).where(
                col(RefreshToken.token_hash) == _HASH,
                col(RefreshToken.spent),
                col(RefreshToken.expires_at) > _NOW,
            )
        ),
        ~col(LoginSession.revoked),
    )
    .values(revoked=True)
    .returning(col(LoginSession.id), col(LoginSession.user_id))
    .execution_options(**_NO_SYNC)
)
_EXTEND = (
    update(LoginSession)
    .where(col(LoginSession.id) == bindparam("session_id"))
    .values(expires_at=_SESSION_EXPIRES_AT)
    .returning(col(LoginSession.user_id), col(LoginSession.token_version))
    .execution_options(**_NO_SYNC)
)
_END = (
    update(LoginSession)
    .where(
        or_(
            col(LoginSession.id) == bindparam("session_id"),
            col(LoginSession.id).in_(
                select(RefreshToken.session_id).where(
                    col(RefreshToken.token_hash) == _HASH
                )
            ),
        )
    )
    .values(revoked=True)
    .execution_options(**_NO_SYNC)
)
_FORGET_EXPIRED = (
    delete(RefreshToken)
    .where(col(RefreshToken.expires_at) < _NOW)
    .execution_options(**_NO_SYNC),
    delete(LoginSession)
    .where(col(LoginSession.expires_at) < _NOW)
    .execution_options(**_NO_SYNC),
)
"""Spent and unused tokens past their time, then sessions with nothing valid left
(their tokens go with them)."""


def _lifetimes(now: datetime) -> dict[str, datetime]:
    """When a refresh token issued now expires, and its session: not before the access
    token issued with it, whose `sid` must name a session to the end."""
    refresh = timedelta(days=settings.refresh_token_expire_days)
    return {
        "token_expires_at": now + refresh,
        "session_expires_at": now + max(refresh, access_token_lifetime()),
    }


async def _issue(
    session: AsyncSession, session_id: str, user_id: int, version: int, now: datetime
) -> Token | None:
    """The session's next refresh token, with an access token; None when the session
    was deleted meanwhile (with its user)."""
    refresh_token = opaque_token()
    try:
        await session.exec(
            _ISSUE,
            params={
                "hashed_token": token_hash(refresh_token),
                "in_session": session_id,
                "token_expires_at": _lifetimes(now)["token_expires_at"],
            },
        )
    except IntegrityError:
        await session.rollback()
        return None
    return Token(
        access_token=create_access_token(user_id, version, session_id),
        expires_in=int(access_token_lifetime().total_seconds()),
        refresh_token=refresh_token,
    )


async def start_session(
    session: AsyncSession, user_id: int, version: int
) -> Token | None:
    """A new login session and its first tokens, for the account whose password was
    just checked; None when it was deleted, disabled or its password changed since."""
    now = utc_now()
    for statement in _FORGET_EXPIRED:
        await session.exec(statement, params={"now": now})
    started = await session.exec(
        _START,
        params={
            "session_id": new_session_id(),
            "user_id": user_id,
            "version": version,
            "now": now,
            "session_expires_at": _lifetimes(now)["session_expires_at"],
        },
    )
    session_id = started.scalar()
    if session_id is None:
        return None
    return await _issue(session, session_id, user_id, version, now)


async def refresh(session: AsyncSession, refresh_token: str) -> Token:
    """Spend a refresh token for the next ones (InvalidGrant if it can't be).

    Spending it and storing the next are one transaction: an answer that fails (the
    database unavailable halfway) spends nothing, and the client may try again. A
    token already spent ends its session, for good, before InvalidGrant.
    """
    if not 0 < len(refresh_token) <= REFRESH_TOKEN_MAX_CHARS:
        raise InvalidGrant()
    now = utc_now()
    params = {"hashed_token": token_hash(refresh_token), "now": now}
    await begin_transaction(session)
    spent = await session.exec(_SPEND, params=params)
    session_id = spent.scalar()
    if session_id is None:
        ended = (await session.exec(_END_FAMILY_OF_SPENT, params=params)).first()
        await session.commit()
        if ended is not None:
            log.warning(
                "a spent refresh token came back: ended login session %s of user %d",
                ended.id,
                ended.user_id,
            )
        raise InvalidGrant()
    extended = await session.exec(
        _EXTEND,
        params={
            "session_id": session_id,
            "session_expires_at": _lifetimes(now)["session_expires_at"],
        },
    )
    owner = extended.first()
    if owner is None:
        raise InvalidGrant()  # the account was deleted meanwhile: nothing is kept
    tokens = await _issue(session, session_id, owner.user_id, owner.token_version, now)
    if tokens is None:
        raise InvalidGrant()
    await session.commit()
    return tokens


async def end_sessions(
    session: AsyncSession, session_id: str | None, refresh_token: str | None
) -> None:
    """End the session with this id and the one this refresh token belongs to (a
    refresh token is a bearer credential: whoever holds it may end its session)."""
    await session.exec(
        _END,
        params={
            "session_id": session_id,
            "hashed_token": token_hash(refresh_token) if refresh_token else None,
        },
    )
