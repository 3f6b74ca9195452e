"""Authentication, in one place: the bearer scheme and its token's claims, the condition
that a token is still current, the `CurrentUser`, `CurrentAdmin` and `VerifiedUser`
dependencies, the 401 and 403 answers, checking a user's password, and the /login and /logout routes
(the OAuth2 token endpoint: the password and refresh token grants; ending a login).

JWT encoding and password hashing are below, in blogapi.security; login sessions and
their refresh tokens in blogapi.login_sessions.
"""

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import Integer, and_, bindparam
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import load_only
from sqlmodel import Field, SQLModel, col, delete, exists, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from blogapi import login_sessions
from blogapi.config import settings
from blogapi.db import SessionDep
from blogapi.errors import (
    EmailNotVerified,
    Forbidden,
    InvalidCredentials,
    InvalidGrant,
    InvalidTokenRequest,
    MalformedBody,
    TooManyAttempts,
    UnsupportedGrantType,
    WrongLogin,
    error_responses,
)
from blogapi.http_metrics import MeteredRoute
from blogapi.json_body import is_json
from blogapi.login_sessions import (
    EXAMPLE_REFRESH_TOKEN,
    REFRESH_TOKEN_MAX_CHARS,
    LoginSession,
    Token,
)
from blogapi.model_base import RequestBody, UTCDateTime, attribute, example, utc_now
from blogapi.resources import Resources
from blogapi.security import (
    TOKEN_ID_MAX_CHARS,
    AccessClaims,
    check_password,
    read_access_token,
)
from blogapi.throttle import client_address
from blogapi.users import (
    EMAIL_MAX_CHARS,
    EXAMPLE_EMAIL,
    EXAMPLE_PASSWORD,
    WITHOUT_PASSWORD_HASH,
    User,
    normal_email,
)

ACCOUNT_DISABLED = "This account is disabled; ask an administrator to enable it"
ONLY_ADMINS = "Only admins may do this"
TOO_MANY_LOGINS = "Too many failed logins"
LOGIN_TAKES_A_FORM = (
    "The login takes the OAuth2 password form, not JSON: `username` and `password`, "
    "form-encoded (Content-Type: application/x-www-form-urlencoded)"
)


class RevokedToken(SQLModel, table=True):
    """Access tokens refused before they expire (POST /logout)."""

    __tablename__ = "revoked_tokens"

    token_id: str = Field(primary_key=True, max_length=TOKEN_ID_MAX_CHARS)
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)


oauth2_scheme = OAuth2PasswordBearer(tokenUrl="login", refreshUrl="login")
optional_bearer = OAuth2PasswordBearer(
    tokenUrl="login", refreshUrl="login", auto_error=False
)
"""The same scheme, for the one route a bearer token is optional on (/logout)."""


def _claims(token: str) -> AccessClaims:
    claims = read_access_token(token)
    if claims is None:
        raise InvalidCredentials()
    return claims


async def get_token_claims(
    token: Annotated[str, Depends(oauth2_scheme)],
) -> AccessClaims:
    return _claims(token)


async def get_optional_token_claims(
    token: Annotated[str | None, Depends(optional_bearer)],
) -> AccessClaims | None:
    """None without a bearer token; 401 for a bad one, as everywhere."""
    return None if token is None else _claims(token)


TokenClaims = Annotated[AccessClaims, Depends(get_token_claims)]
OptionalTokenClaims = Annotated[AccessClaims | None, Depends(get_optional_token_claims)]


TOKEN_IS_CURRENT = and_(
    col(User.id) == bindparam("user_id", type_=Integer),
    col(User.is_active),
    col(User.token_version) == bindparam("version", type_=Integer),
    exists().where(
        col(LoginSession.id) == bindparam("session_id"),
        col(LoginSession.user_id) == col(User.id),
        ~col(LoginSession.revoked),
    ),
    ~exists().where(col(RevokedToken.token_id) == bindparam("token_id")),
)
"""A users-table condition that holds for the token's user alone, while the account is
active, the token's login session (its refresh token family) not ended, and the token
neither revoked nor outdated by a password change; bind it with `token_params`. Writes
on the user's own row repeat it, so a token revoked meanwhile changes nothing."""


def token_params(claims: AccessClaims) -> dict[str, Any]:
    return {
        "user_id": claims.user_id,
        "version": claims.version,
        "session_id": claims.session_id,
        "token_id": claims.token_id,
    }


_TOKEN_USER = select(User).where(TOKEN_IS_CURRENT).options(WITHOUT_PASSWORD_HASH)
"""Built once: every authenticated request runs it."""


async def _token_user(claims: AccessClaims, session: AsyncSession) -> User:
    found = await session.exec(_TOKEN_USER, params=token_params(claims))
    user = found.first()
    if user is None:
        raise InvalidCredentials()
    return user


async def get_current_user(claims: TokenClaims, session: SessionDep) -> User:
    """The token's user, in one indexed query that also refuses revoked tokens."""
    return await _token_user(claims, session)


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_current_admin(user: CurrentUser) -> User:
    if not user.is_admin:
        raise Forbidden(ONLY_ADMINS)
    return user


CurrentAdmin = Annotated[User, Depends(get_current_admin)]


async def get_verified_user(user: CurrentUser) -> User:
    """The signed-in user, unless REQUIRE_EMAIL_VERIFICATION is on and their email is
    not verified yet (blogapi.email_verification): for posting, editing and voting."""
    if settings.require_email_verification and not user.email_verified:
        raise EmailNotVerified()
    return user


VerifiedUser = Annotated[User, Depends(get_verified_user)]

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


async def refuse_json(request: Request) -> None:
    """A JSON login gets a 422 that says what the login takes, instead of "Field
    required" for `username` and `password`."""
    if is_json(request.headers.get("content-type")):
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body",), "msg": LOGIN_TAKES_A_FORM}]
        )


GRANT_TYPES = ("password", "refresh_token")


class TokenRequest(SQLModel):
    """The token endpoint's form (RFC 6749 sections 4.3.2 and 6), as Swagger UI's
    Authorize sends it for the password grant. A form can't carry null, and an empty
    field counts as a missing one, so no field is nullable and none may be empty. Which
    fields a grant needs is in their descriptions: a form's schema can't tie them to
    `grant_type` (schemathesis.toml lists that 422). `scope` and `client_id` are
    ignored."""

    grant_type: str = Field(
        default="password",
        description="`password` (the default): log in with `username` and `password`; "
        "`refresh_token`: spend a `refresh_token` for new tokens",
        schema_extra={
            "json_schema_extra": {"enum": list(GRANT_TYPES), "examples": ["password"]}
        },
    )
    username: str = Field(
        default=None,
        min_length=1,
        description="Your email (the password grant)",
        schema_extra={"examples": [EXAMPLE_EMAIL]},
    )
    password: str = Field(
        default=None,
        min_length=1,
        description="Your password (the password grant)",
        schema_extra={
            "json_schema_extra": {"examples": [EXAMPLE_PASSWORD], "format": "password"}
        },
    )
    refresh_token: str = Field(
        default=None,
        min_length=1,
        description="The refresh token of the last answer (the refresh_token grant)",
        schema_extra={"examples": [EXAMPLE_REFRESH_TOKEN]},
    )
    scope: str = Field(
        default="", description="Not used", schema_extra={"examples": [""]}
    )


def _missing(form: TokenRequest, *names: str) -> RequestValidationError:
    """The 422 FastAPI answers when required form fields are missing."""
    return RequestValidationError(
        [
            {"type": "missing", "loc": ("body", name), "msg": "Field required"}
            for name in names
            if not getattr(form, name)
        ]
    )


router = APIRouter(tags=["authentication"], route_class=MeteredRoute)


@router.post(
    "/login",
    summary="Log in, or refresh, for an access token and a refresh token",
    description="The OAuth2 token endpoint; it takes a form "
    "(`application/x-www-form-urlencoded`), not JSON. `grant_type=password` (or none): "
    "`username` (your email) and `password`. `grant_type=refresh_token`: the last "
    "`refresh_token`, which then is spent; the answer carries the next one. A spent "
    "refresh token sent again ends its login: every token issued in it stops working. "
    "Refusals of a refresh are 400 with an OAuth `error` code (RFC 6749 section 5.2).",
    dependencies=[Depends(refuse_json)],
    responses=error_responses(
        InvalidGrant,
        InvalidTokenRequest,
        UnsupportedGrantType,
        WrongLogin,
        Forbidden(ACCOUNT_DISABLED),
        TooManyAttempts(TOO_MANY_LOGINS, 60),
    ),
)
async def login(
    form: Annotated[TokenRequest, Form()],
    request: Request,
    response: Response,
    resources: Resources,
    session: SessionDep,
) -> Token:
    response.headers["Cache-Control"] = "no-store"  # RFC 6749 5.1: never cache a token
    if form.grant_type == "refresh_token":
        if not form.refresh_token:
            raise InvalidTokenRequest()
        return await login_sessions.refresh(session, form.refresh_token)
    if form.grant_type != "password":
        raise UnsupportedGrantType()
    if not (form.username and form.password):
        raise _missing(form, "username", "password")
    return await _password_grant(
        form.username, form.password, request, resources, session
    )


async def _password_grant(
    username: str,
    password: str,
    request: Request,
    resources: Resources,
    session: AsyncSession,
) -> Token:
    if len(username) > EMAIL_MAX_CHARS or "\0" in username:
        raise WrongLogin()
    email = normal_email(username)
    address = client_address(request)
    throttle = resources.login_throttle
    await throttle.check(email, address, TOO_MANY_LOGINS)
    found = await session.exec(_LOGIN, params={"email": email})
    account = found.first()
    await session.close()  # the connection goes back to the pool before bcrypt runs
    password_hash = account.password_hash if account else None
    # An unknown email costs the same bcrypt time as a wrong password.
    checked = await run_in_threadpool(check_password, password, password_hash)
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
    tokens = await login_sessions.start_session(
        session, account.id, account.token_version
    )
    if tokens is None:
        raise WrongLogin()  # deleted, disabled or given a new password since the check
    await throttle.succeeded(email, address)
    return tokens


_FORGET_EXPIRED = (
    delete(RevokedToken)
    .where(col(RevokedToken.expires_at) < bindparam("now", type_=UTCDateTime))
    .execution_options(synchronize_session=False)
)


class LogoutRequest(RequestBody):
    refresh_token: str = Field(
        max_length=REFRESH_TOKEN_MAX_CHARS,
        description="Also end the login this refresh token belongs to",
        schema_extra=example(EXAMPLE_REFRESH_TOKEN),
    )


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="End a login: the access token sent, its login and the refresh token's",
    description="With a bearer token: that token, and every other token of its login "
    "(the refresh tokens and access tokens issued since that password login), stop "
    'working. With `{"refresh_token": ...}`: the login of that refresh token ends '
    "too, with or without a bearer token (a refresh token that is unknown or already "
    "ended: nothing more to end, still 204). The user's other logins go on.",
    responses=error_responses(MalformedBody, InvalidCredentials),
    # The bearer token is optional here: `{}` is the alternative of no authentication.
    openapi_extra={"security": [{}]},
)
async def logout(
    claims: OptionalTokenClaims,
    session: SessionDep,
    body: LogoutRequest | None = None,
) -> None:
    if claims is None and body is None:
        raise InvalidCredentials("Not authenticated")
    if claims is not None:
        await _token_user(claims, session)
    await login_sessions.end_sessions(
        session,
        claims.session_id if claims else None,
        body.refresh_token if body else None,
    )
    if claims is None:
        return
    await session.exec(_FORGET_EXPIRED, params={"now": utc_now()})
    # Also kept by token id, as before login sessions: an older release serving beside
    # this one (a rolling deploy, a rollback) refuses the token too.
    session.add(RevokedToken(token_id=claims.token_id, expires_at=claims.expires_at))
    try:
        await session.commit()
    except IntegrityError:
        # A concurrent logout with the same token revoked it first.
        await session.rollback()
