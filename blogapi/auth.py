"""Authentication, in one place: the bearer scheme and its token's claims, the condition
that a token is still current, the `CurrentUser` and `CurrentAdmin` dependencies, the
401 and 403 answers, checking a user's password, and the /login and /logout routes
(the OAuth2 password flow and token revocation).

JWT encoding and password hashing are below, in blogapi.security.
"""

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import OAuth2PasswordBearer, OAuth2PasswordRequestForm
from sqlalchemy import Integer, and_, bindparam
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import load_only
from sqlmodel import Field, SQLModel, col, delete, exists, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from blogapi.db import SessionDep
from blogapi.errors import (
    Forbidden,
    InvalidCredentials,
    TooManyAttempts,
    WrongLogin,
    error_responses,
)
from blogapi.http_metrics import MeteredRoute
from blogapi.model_base import UTCDateTime, attribute, utc_now
from blogapi.resources import Resources
from blogapi.security import (
    TOKEN_ID_MAX_CHARS,
    AccessClaims,
    check_password,
    create_access_token,
    read_access_token,
)
from blogapi.throttle import client_address
from blogapi.users import EMAIL_MAX_CHARS, WITHOUT_PASSWORD_HASH, User, normal_email

ACCOUNT_DISABLED = "This account is disabled; ask an administrator to enable it"
ONLY_ADMINS = "Only admins may do this"


class RevokedToken(SQLModel, table=True):
    """Access tokens refused before they expire (POST /logout)."""

    __tablename__ = "revoked_tokens"

    token_id: str = Field(primary_key=True, max_length=TOKEN_ID_MAX_CHARS)
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)


class Token(SQLModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"


oauth2_scheme = OAuth2PasswordBearer(tokenUrl="login")


async def get_token_claims(
    token: Annotated[str, Depends(oauth2_scheme)],
) -> AccessClaims:
    claims = read_access_token(token)
    if claims is None:
        raise InvalidCredentials()
    return claims


TokenClaims = Annotated[AccessClaims, Depends(get_token_claims)]


TOKEN_IS_CURRENT = and_(
    col(User.id) == bindparam("user_id", type_=Integer),
    col(User.is_active),
    col(User.token_version) == bindparam("version", type_=Integer),
    ~exists().where(col(RevokedToken.token_id) == bindparam("token_id")),
)
"""A users-table condition that holds for the token's user alone, while the account is
active and the token neither revoked nor outdated by a password change; bind it with
`token_params`. Writes on the user's own row repeat it, so a token revoked meanwhile
changes nothing."""


def token_params(claims: AccessClaims) -> dict[str, Any]:
    return {
        "user_id": claims.user_id,
        "version": claims.version,
        "token_id": claims.token_id,
    }


_TOKEN_USER = select(User).where(TOKEN_IS_CURRENT).options(WITHOUT_PASSWORD_HASH)
"""Built once: every authenticated request runs it."""


async def get_current_user(claims: TokenClaims, session: SessionDep) -> User:
    """The token's user, in one indexed query that also refuses revoked tokens."""
    found = await session.exec(_TOKEN_USER, params=token_params(claims))
    user = found.first()
    if user is None:
        raise InvalidCredentials()
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_current_admin(user: CurrentUser) -> User:
    if not user.is_admin:
        raise Forbidden(ONLY_ADMINS)
    return user


CurrentAdmin = Annotated[User, Depends(get_current_admin)]

_PASSWORD_HASH = select(User.password_hash).where(
    User.id == bindparam("user_id", type_=Integer)
)


async def confirm_password(session: AsyncSession, user: User, password: str) -> None:
    """Refuse (WrongLogin) unless `password` is the signed-in user's.

    bcrypt runs after the session has given its connection back to the pool, so a burst
    of these requests does not keep others from the database. The write that follows
    checks the token again (TOKEN_IS_CURRENT), in the statement that changes the row.
    """
    found = await session.exec(_PASSWORD_HASH, params={"user_id": user.id})
    password_hash = found.first()
    await session.close()
    if password_hash is None:
        raise InvalidCredentials()  # the account was deleted meanwhile
    if not (await run_in_threadpool(check_password, password, password_hash)).matches:
        raise WrongLogin()


_LOGIN = (
    select(User)
    .options(
        load_only(
            *map(attribute, (User.password_hash, User.token_version, User.is_active)),
            raiseload=True,
        )
    )
    .where(User.email == bindparam("email"))
)
_REHASH = (
    update(User)
    .where(col(User.id) == bindparam("user_id"))
    .where(col(User.password_hash) == bindparam("old_hash"))
    .values(password_hash=bindparam("new_hash"))
)
"""Unless the password changed meanwhile."""

router = APIRouter(tags=["authentication"], route_class=MeteredRoute)


@router.post(
    "/login",
    summary="Log in for an access token",
    responses=error_responses(WrongLogin, Forbidden, TooManyAttempts),
)
async def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    request: Request,
    response: Response,
    resources: Resources,
    session: SessionDep,
) -> Token:
    if len(form.username) > EMAIL_MAX_CHARS or "\0" in form.username:
        raise WrongLogin()
    email = normal_email(form.username)
    address = client_address(request)
    throttle = resources.login_throttle
    await throttle.check(email, address, "Too many failed logins")
    found = await session.exec(_LOGIN, params={"email": email})
    account = found.first()
    await session.close()  # the connection goes back to the pool before bcrypt runs
    password_hash = account.password_hash if account else None
    # An unknown email costs the same bcrypt time as a wrong password.
    checked = await run_in_threadpool(check_password, form.password, password_hash)
    if account is None or account.id is None or not checked.matches:
        raise WrongLogin()
    if not account.is_active:
        raise Forbidden(ACCOUNT_DISABLED)  # told only to someone who knows the password
    if checked.new_hash is not None:
        await session.exec(
            _REHASH,
            params={
                "user_id": account.id,
                "old_hash": password_hash,
                "new_hash": checked.new_hash,
            },
        )
        await session.commit()
    await throttle.succeeded(email, address)
    response.headers["Cache-Control"] = "no-store"  # RFC 6749 5.1: never cache a token
    return Token(access_token=create_access_token(account.id, account.token_version))


_FORGET_EXPIRED = (
    delete(RevokedToken)
    .where(col(RevokedToken.expires_at) < bindparam("now", type_=UTCDateTime))
    .execution_options(synchronize_session=False)
)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke the access token this request carries",
    responses=error_responses(InvalidCredentials),
)
async def logout(_: CurrentUser, claims: TokenClaims, session: SessionDep) -> None:
    await session.exec(_FORGET_EXPIRED, params={"now": utc_now()})
    session.add(RevokedToken(token_id=claims.token_id, expires_at=claims.expires_at))
    try:
        await session.commit()
    except IntegrityError:
        # A concurrent logout with the same token revoked it first.
        await session.rollback()
