"""The /users routes of every user: registering, reading yourself and others, changing
your password, deleting your account. (Admins' /users routes: blogapi.admin.)"""

from typing import Annotated

import pydantic
from fastapi import APIRouter, BackgroundTasks, Request, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Integer, bindparam
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, delete, select, update

from blogapi.auth import (
    TOKEN_IS_CURRENT,
    CurrentUser,
    TokenClaims,
    confirm_password,
    token_params,
)
from blogapi.config import settings
from blogapi.db import SessionDep
from blogapi.email_verification import mail_verification_link
from blogapi.errors import (
    Conflict,
    InvalidCredentials,
    MalformedBody,
    NotFound,
    TooManyAttempts,
    WrongLogin,
    error_responses,
)
from blogapi.http_metrics import MeteredRoute
from blogapi.model_base import RequestBody, example
from blogapi.resources import Resources
from blogapi.security import hash_password
from blogapi.throttle import TOO_MANY_SIGNUPS, client_address
from blogapi.users import (
    EXAMPLE_NEW_PASSWORD,
    EXAMPLE_PASSWORD,
    USER_NOT_FOUND,
    WITHOUT_PASSWORD_HASH,
    NewPassword,
    User,
    UserCreate,
    UserId,
    UserPublic,
    UserSelf,
    may_see_email,
)

PASSWORD_MAX_CHARS = 1024
EMAIL_TAKEN = "Email already registered"


class PasswordChange(RequestBody):
    current_password: str = Field(
        max_length=PASSWORD_MAX_CHARS, schema_extra=example(EXAMPLE_PASSWORD)
    )
    new_password: Annotated[
        NewPassword, pydantic.Field(examples=[EXAMPLE_NEW_PASSWORD])
    ]


class AccountDeletion(RequestBody):
    password: str = Field(
        max_length=PASSWORD_MAX_CHARS, schema_extra=example(EXAMPLE_PASSWORD)
    )


_USER = (
    select(User)
    .where(User.id == bindparam("user_id", type_=Integer))
    .options(WITHOUT_PASSWORD_HASH)
)

router = APIRouter(prefix="/users", tags=["users"], route_class=MeteredRoute)
_YOUR_ACCOUNT = error_responses(MalformedBody, InvalidCredentials, WrongLogin)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=UserSelf,
    summary="Register a user",
    description="At most SIGNUP_MAX_PER_ADDRESS registrations from one client address "
    "(one IPv6 /64) per SIGNUP_WINDOW_SECONDS; only those that succeed count. With "
    "REQUIRE_EMAIL_VERIFICATION on, the email gets a link that verifies it "
    "(`POST /verify-email`).",
    responses=error_responses(
        MalformedBody, Conflict(EMAIL_TAKEN), TooManyAttempts(TOO_MANY_SIGNUPS, 60)
    ),
)
async def create_user(
    body: UserCreate,
    request: Request,
    background: BackgroundTasks,
    resources: Resources,
    session: SessionDep,
) -> User:
    await session.close()  # no connection is held while bcrypt runs
    # Counted before bcrypt runs, so parallel sign-ups can't pass the limit; taken
    # back if the registration fails.
    async with resources.signup_throttle.registering(client_address(request)):
        password_hash = await run_in_threadpool(hash_password, body.password)
        user = User.model_validate(body, update={"password_hash": password_hash})
        session.add(user)
        try:
            await session.commit()
        except IntegrityError:
            raise Conflict(EMAIL_TAKEN) from None
    if settings.require_email_verification:
        mail_verification_link(background, resources, user)
    return user


@router.get(
    "/me",
    response_model=UserSelf,
    summary="The signed-in user",
    responses=error_responses(InvalidCredentials),
)
async def read_me(user: CurrentUser) -> User:
    return user


@router.get(
    "/{user_id:int}",
    # Left to right: a response with an email is UserSelf, one without is UserPublic.
    response_model=Annotated[
        UserSelf | UserPublic, pydantic.Field(union_mode="left_to_right")
    ],
    summary="One user",
    description="With the email only when it is the signed-in user's own, or to an admin.",
    responses=error_responses(InvalidCredentials, NotFound(USER_NOT_FOUND)),
)
async def read_user(
    viewer: CurrentUser, user_id: UserId, session: SessionDep
) -> UserPublic:
    user = (await session.exec(_USER, params={"user_id": user_id})).first()
    if user is None:
        raise NotFound(USER_NOT_FOUND)
    shown = UserSelf if may_see_email(viewer, user) else UserPublic
    return shown.model_validate(user)


@router.put(
    "/me/password",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Change your password; every earlier token stops working",
    responses=_YOUR_ACCOUNT,
)
async def change_password(
    user: CurrentUser, claims: TokenClaims, body: PasswordChange, session: SessionDep
) -> None:
    await confirm_password(session, user, body.current_password)
    password_hash = await run_in_threadpool(hash_password, body.new_password)
    changed = await session.exec(
        update(User)
        .where(TOKEN_IS_CURRENT)
        .values(password_hash=password_hash, token_version=User.token_version + 1)
        .execution_options(synchronize_session=False),
        params=token_params(claims),
    )
    if changed.rowcount == 0:
        raise InvalidCredentials()  # the token was revoked while bcrypt ran
    await session.commit()


@router.delete(
    "/me",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete your account, your posts and your votes",
    responses=_YOUR_ACCOUNT,
)
async def delete_account(
    user: CurrentUser, claims: TokenClaims, body: AccountDeletion, session: SessionDep
) -> None:
    await confirm_password(session, user, body.password)
    # One statement: the database removes the posts and votes with the user, and its
    # triggers take the votes off the counts of the posts that remain.
    deleted = await session.exec(
        delete(User)
        .where(TOKEN_IS_CURRENT)
        .execution_options(synchronize_session=False),
        params=token_params(claims),
    )
    if deleted.rowcount == 0:
        raise InvalidCredentials()  # the token was revoked while bcrypt ran
    await session.commit()
