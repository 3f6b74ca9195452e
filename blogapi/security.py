"""Password hashing, access tokens and opaque tokens: pure functions, no FastAPI."""

import hashlib
import secrets
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from typing import Literal

import jwt
from passlib.context import CryptContext

from blogapi.config import settings
from blogapi.model_base import MAX_ID, utc_now

ALGORITHM = "HS256"
BCRYPT_MAX_BYTES = 72
VERIFIED_TOKENS_CACHED = 4096
ACCESS_TOKEN_MAX_CHARS = 1024
"""Ours are about 250; anything much longer is not one of them."""
TOKEN_ID_MAX_CHARS = 64
"""A token's `jti`: ours are 32 hex digits (a uuid4)."""
SESSION_ID_CHARS = 32
"""A login session's id, the `sid` of its access tokens: 32 hex digits."""
OPAQUE_TOKEN_BYTES = 32
"""Refresh tokens and reset tokens: 256 random bits, 43 characters of base64url."""
SHA256_HEX_CHARS = 64

PasswordWork = Literal["hash", "verify"]
_observers: list[Callable[[PasswordWork], None]] = []


@contextmanager
def observing_password_work(observer: Callable[[PasswordWork], None]) -> Iterator[None]:
    """Call `observer` before each bcrypt hash or check, in the thread that runs it.

    The seam for tests that count password work or act while it runs; nothing else uses it.
    """
    _observers.append(observer)
    try:
        yield
    finally:
        _observers.remove(observer)


@cache
def _context(rounds: int) -> CryptContext:
    """Hashes at BCRYPT_ROUNDS; on login, a hash of a lower cost (or an older scheme) is
    replaced, one of a higher cost kept."""
    return CryptContext(
        schemes=["bcrypt"], bcrypt__default_rounds=rounds, bcrypt__min_rounds=rounds
    )


def _passwords(work: PasswordWork) -> CryptContext:
    for observer in _observers:
        observer(work)
    return _context(settings.bcrypt_rounds)


@cache
def dummy_hash() -> str:
    """A hash to check against when there is no account, so an unknown email costs the
    same bcrypt time as a wrong password. Made at start-up, not at import."""
    return _context(settings.bcrypt_rounds).hash("not a real password")


def hash_password(password: str) -> str:
    return _passwords("hash").hash(password)


@dataclass(frozen=True)
class PasswordCheck:
    matches: bool
    new_hash: str | None = None
    """A replacement hash when the stored one has an older scheme or cost than BCRYPT_ROUNDS."""


def check_password(password: str, password_hash: str | None) -> PasswordCheck:
    """Check a password; with no hash, spend the same time and fail, so emails can't be
    probed. A match on an outdated hash comes with its replacement."""
    hashable = "\0" not in password and len(password.encode()) <= BCRYPT_MAX_BYTES
    matches, new_hash = _passwords("verify").verify_and_update(
        password if hashable else "", password_hash or dummy_hash()
    )
    if not (hashable and password_hash is not None and matches):
        return PasswordCheck(matches=False)
    return PasswordCheck(matches=True, new_hash=new_hash)


def new_session_id() -> str:
    return secrets.token_hex(SESSION_ID_CHARS // 2)


def opaque_token() -> str:
    """A token that says nothing: random, to be looked up by its `token_hash`."""
    return secrets.token_urlsafe(OPAQUE_TOKEN_BYTES)


def token_hash(token: str) -> str:
    """What the database keeps of an opaque token: whoever reads the table can't use it.
    256 random bits need no salt or slow hash."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class AccessClaims:
    """What a valid access token says: whose it is, its id, the user's token version,
    and the login session (refresh token family) it was issued in."""

    user_id: int
    token_id: str
    version: int
    session_id: str
    expires_at: datetime


def access_token_lifetime() -> timedelta:
    return timedelta(minutes=settings.access_token_expire_minutes)


def create_access_token(user_id: int, version: int, session_id: str) -> str:
    now = utc_now()
    claims = {
        "sub": str(user_id),
        "jti": uuid.uuid4().hex,
        "ver": version,
        "sid": session_id,
        "iat": now,
        "exp": now + access_token_lifetime(),
    }
    return jwt.encode(claims, settings.secret_key, algorithm=ALGORITHM)


def read_access_token(token: str) -> AccessClaims | None:
    """The claims of a valid token, or None for any invalid, expired or forged token."""
    if len(token) > ACCESS_TOKEN_MAX_CHARS:
        return None
    try:
        claims = _verified_claims(token)
    except (jwt.InvalidTokenError, ValueError, TypeError, OverflowError):
        return None
    if claims.expires_at <= utc_now():
        return None
    return claims


@lru_cache(maxsize=VERIFIED_TOKENS_CACHED)
def _verified_claims(token: str) -> AccessClaims:
    """A token's claims if its signature and form are right, whatever the time; raises
    otherwise, so only valid tokens are cached.

    A function of the token alone, so a client's repeated requests check the signature
    once; expiry is checked on every use by the caller.
    """
    claims = jwt.decode(
        token,
        settings.secret_key,
        algorithms=[ALGORITHM],
        options={
            "require": ["sub", "jti", "ver", "sid", "exp", "iat"],
            "verify_exp": False,
            "verify_iat": False,
        },
    )
    verified = AccessClaims(
        user_id=int(claims["sub"]),
        token_id=str(claims["jti"]),
        version=int(claims["ver"]),
        session_id=str(claims["sid"]),
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
    )
    # Values the database could not take would fail the query instead of the token.
    if not (
        0 < verified.user_id <= MAX_ID
        and 0 <= verified.version <= MAX_ID
        and all(
            0 < len(text) <= limit and "\0" not in text
            for text, limit in (
                (verified.token_id, TOKEN_ID_MAX_CHARS),
                (verified.session_id, SESSION_ID_CHARS),
            )
        )
    ):
        raise ValueError("a claim is out of range")
    return verified
