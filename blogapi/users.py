"""The User model family, the CurrentUser dependency and the /users router."""

from datetime import datetime
from typing import Annotated, Any

import pydantic
from fastapi import APIRouter, Depends, HTTPException, Path, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import OAuth2PasswordBearer
from pydantic import AfterValidator, EmailStr, field_validator
from pydantic.networks import validate_email
from pydantic_core import PydanticCustomError
from sqlalchemy import Integer, and_, bindparam
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import defer
from sqlmodel import Field, SQLModel, col, exists, select

from blogapi.db import MAX_ID, RequestBody, SessionDep, UTCDateTime, attribute, utc_now
from blogapi.errors import error_responses
from blogapi.security import (
    BCRYPT_MAX_BYTES,
    AccessClaims,
    hash_password,
    read_access_token,
)
from blogapi.tokens import RevokedToken

PASSWORD_MIN_CHARS = 8
EMAIL_MAX_CHARS = 254


class UserBase(SQLModel):
    email: EmailStr = Field(max_length=EMAIL_MAX_CHARS, unique=True, index=True)

    @field_validator("email")
    @classmethod
    def lower_case(cls, email: str) -> str:
        return email.lower()


def normal_email(text: str) -> str:
    """`text` as registration stores an email (surrounding spaces dropped, the domain
    normalised, lower case), so a login finds the account however the email was typed.
    Text that is no email is only lower-cased: it matches no account."""
    try:
        _, email = validate_email(text)
    except PydanticCustomError:
        return text.lower()
    return email.lower()


def _fits_bcrypt(password: str) -> str:
    if len(password.encode()) > BCRYPT_MAX_BYTES:
        raise ValueError(f"Password must be at most {BCRYPT_MAX_BYTES} bytes in UTF-8")
    if "\0" in password:
        raise ValueError("Password must not contain NUL characters")
    return password


NewPassword = Annotated[
    str,
    Field(
        min_length=PASSWORD_MIN_CHARS,
        description=f"At least {PASSWORD_MIN_CHARS} characters, "
        f"at most {BCRYPT_MAX_BYTES} bytes in UTF-8",
    ),
    AfterValidator(_fits_bcrypt),
]


class UserCreate(UserBase, RequestBody):
    password: NewPassword


class User(UserBase, table=True):
    __tablename__ = "users"
    # Never hand a deleted user's id to someone new: old tokens name users by id.
    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, primary_key=True)
    password_hash: str
    token_version: int = Field(default=0, description="Raised to revoke every token")
    is_admin: bool = False
    is_active: bool = Field(default=True, description="False: tokens and login refused")
    created_at: datetime = Field(
        default_factory=utc_now, sa_type=UTCDateTime, nullable=False
    )


class UserPublic(SQLModel):
    """A user as others see them: no email."""

    id: int
    created_at: datetime


class UserSelf(UserPublic):
    """A user as they see themselves: with their email."""

    email: str


def may_see_email(viewer: User, user: User) -> bool:
    """Whether `viewer` may read `user`'s email: their own, or anyone's for an admin."""
    return viewer.is_admin or viewer.id == user.id


oauth2_scheme = OAuth2PasswordBearer(tokenUrl="login")


async def get_token_claims(
    token: Annotated[str, Depends(oauth2_scheme)],
) -> AccessClaims:
    claims = read_access_token(token)
    if claims is None:
        raise invalid_credentials()
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
`token_params`."""


def token_params(claims: AccessClaims) -> dict[str, Any]:
    return {
        "user_id": claims.user_id,
        "version": claims.version,
        "token_id": claims.token_id,
    }


_NO_HASH = defer(attribute(User.password_hash), raiseload=True)
"""Reads never load a password hash: the routes that check one ask for it by name."""

_TOKEN_USER = select(User).where(TOKEN_IS_CURRENT).options(_NO_HASH)
"""Built once: every authenticated request runs it."""
_USER = (
    select(User).where(User.id == bindparam("user_id", type_=Integer)).options(_NO_HASH)
)


async def get_current_user(claims: TokenClaims, session: SessionDep) -> User:
    """The token's user, in one indexed query that also refuses revoked tokens."""
    found = await session.exec(_TOKEN_USER, params=token_params(claims))
    user = found.first()
    if user is None:
        raise invalid_credentials()
    return user


def invalid_credentials() -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="Could not validate credentials",
        headers={"WWW-Authenticate": "Bearer"},
    )


def wrong_login() -> HTTPException:
    """The one answer to a wrong email or password, so neither can be told apart."""
    return HTTPException(status.HTTP_403_FORBIDDEN, "Invalid Credentials")


CurrentUser = Annotated[User, Depends(get_current_user)]
UserId = Annotated[int, Path(ge=1, le=MAX_ID)]

router = APIRouter(prefix="/users", tags=["users"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=UserSelf,
    summary="Register a user",
    responses=error_responses(400, 409),
)
async def create_user(body: UserCreate, session: SessionDep) -> User:
    await session.close()  # no connection is held while bcrypt runs
    password_hash = await run_in_threadpool(hash_password, body.password)
    user = User.model_validate(body, update={"password_hash": password_hash})
    session.add(user)
    try:
        await session.commit()
    except IntegrityError:
        raise HTTPException(
            status.HTTP_409_CONFLICT, "Email already registered"
        ) from None
    return user


@router.get(
    "/me",
    response_model=UserSelf,
    summary="The signed-in user",
    responses=error_responses(401),
)
async def read_me(user: CurrentUser) -> User:
    return user


@router.get(
    "/{user_id}",
    # Left to right: a response with an email is UserSelf, one without is UserPublic.
    response_model=Annotated[
        UserSelf | UserPublic, pydantic.Field(union_mode="left_to_right")
    ],
    summary="One user",
    description="With the email only when it is the signed-in user's own, or to an admin.",
    responses=error_responses(401, 404),
)
async def read_user(
    viewer: CurrentUser, user_id: UserId, session: SessionDep
) -> UserPublic:
    user = (await session.exec(_USER, params={"user_id": user_id})).first()
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "User not found")
    shown = UserSelf if may_see_email(viewer, user) else UserPublic
    return shown.model_validate(user)
