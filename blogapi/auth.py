"""The /login and /logout routes: the OAuth2 password flow and token revocation."""

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import OAuth2PasswordRequestForm
from sqlalchemy import bindparam
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import load_only
from sqlmodel import SQLModel, col, delete, select, update

from blogapi.db import SessionDep, attribute, utc_now
from blogapi.errors import error_responses
from blogapi.security import check_password, create_access_token
from blogapi.throttle import LoginThrottle, client_address, too_many_attempts
from blogapi.tokens import RevokedToken
from blogapi.users import (
    EMAIL_MAX_CHARS,
    CurrentUser,
    TokenClaims,
    User,
    normal_email,
    wrong_login,
)

ACCOUNT_DISABLED = "This account is disabled; ask an administrator to enable it"


class Token(SQLModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"


async def get_login_throttle(request: Request) -> LoginThrottle:
    throttle: LoginThrottle = request.app.state.login_throttle
    return throttle


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

router = APIRouter(tags=["authentication"])


@router.post(
    "/login",
    summary="Log in for an access token",
    responses=error_responses(403, 429),
)
async def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    request: Request,
    response: Response,
    throttle: Annotated[LoginThrottle, Depends(get_login_throttle)],
    session: SessionDep,
) -> Token:
    if len(form.username) > EMAIL_MAX_CHARS or "\0" in form.username:
        raise wrong_login()
    email = normal_email(form.username)
    address = client_address(request)
    retry_after = await throttle.attempt(email, address)
    if retry_after is not None:
        raise too_many_attempts(retry_after, "Too many failed logins")
    found = await session.exec(_LOGIN, params={"email": email})
    account = found.first()
    await session.close()  # the connection goes back to the pool before bcrypt runs
    password_hash = account.password_hash if account else None
    # An unknown email costs the same bcrypt time as a wrong password.
    checked = await run_in_threadpool(check_password, form.password, password_hash)
    if account is None or account.id is None or not checked.matches:
        raise wrong_login()
    if not account.is_active:
        # Told only to someone who knows the password.
        raise HTTPException(status.HTTP_403_FORBIDDEN, ACCOUNT_DISABLED)
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


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke the access token this request carries",
    responses=error_responses(401),
)
async def logout(_: CurrentUser, claims: TokenClaims, session: SessionDep) -> None:
    await session.exec(
        delete(RevokedToken).where(col(RevokedToken.expires_at) < utc_now())
    )
    session.add(RevokedToken(token_id=claims.token_id, expires_at=claims.expires_at))
    try:
        await session.commit()
    except IntegrityError:
        await (
            session.rollback()
        )  # a concurrent logout with the same token revoked it first
