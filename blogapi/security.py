"""Password hashing and access tokens: pure functions, no FastAPI."""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache

import jwt
from passlib.context import CryptContext

from blogapi.config import settings
from blogapi.db import MAX_ID, utc_now
from blogapi.tokens import TOKEN_ID_MAX_CHARS

ALGORITHM = "HS256"
BCRYPT_MAX_BYTES = 72
VERIFIED_TOKENS_CACHED = 4096
TOKEN_MAX_CHARS = 1024
"""Ours are about 250; anything much longer is not one of them."""

_passwords = CryptContext(schemes=["bcrypt"], bcrypt__rounds=settings.bcrypt_rounds)


@cache
def _dummy_hash() -> str:
    """Hashed on first use, not at import: importing blogapi hashes no password."""
    return _passwords.hash("not a real password")


def hash_password(password: str) -> str:
    return _passwords.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    """Check a password; with no hash, spend the same time and fail, so emails can't be probed."""
    hashable = "\0" not in password and len(password.encode()) <= BCRYPT_MAX_BYTES
    matches = _passwords.verify(
        password if hashable else "", password_hash or _dummy_hash()
    )
    return hashable and password_hash is not None and matches


@dataclass(frozen=True)
class AccessClaims:
    """What a valid access token says: whose it is, its id, and the user's token version."""

    user_id: int
    token_id: str
    version: int
    expires_at: datetime


def create_access_token(user_id: int, version: int) -> str:
    now = utc_now()
    expires = now + timedelta(minutes=settings.access_token_expire_minutes)
    claims = {
        "sub": str(user_id),
        "jti": uuid.uuid4().hex,
        "ver": version,
        "iat": now,
        "exp": expires,
    }
    return jwt.encode(claims, settings.secret_key, algorithm=ALGORITHM)


def read_access_token(token: str) -> AccessClaims | None:
    """The claims of a valid token, or None for any invalid, expired or forged token."""
    if len(token) > TOKEN_MAX_CHARS:
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
            "require": ["sub", "jti", "ver", "exp", "iat"],
            "verify_exp": False,
            "verify_iat": False,
        },
    )
    verified = AccessClaims(
        user_id=int(claims["sub"]),
        token_id=str(claims["jti"]),
        version=int(claims["ver"]),
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
    )
    # Values the database could not take would fail the query instead of the token.
    if not (
        0 < verified.user_id <= MAX_ID
        and 0 <= verified.version <= MAX_ID
        and 0 < len(verified.token_id) <= TOKEN_ID_MAX_CHARS
        and "\0" not in verified.token_id
    ):
        raise ValueError("a claim is out of range")
    return verified
