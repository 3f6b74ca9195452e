"""The User entity: its model family, and the rules for emails and passwords."""

from datetime import datetime
from typing import Annotated

import pydantic
from fastapi import Path
from pydantic import AfterValidator, EmailStr, field_validator
from pydantic.networks import validate_email
from pydantic_core import PydanticCustomError
from sqlalchemy.orm import defer
from sqlmodel import Field, SQLModel

from blogapi.model_base import (
    EXAMPLE_ID,
    EXAMPLE_TIME,
    MAX_ID,
    NO_NUL,
    RequestBody,
    UTCDateTime,
    attribute,
    example,
    utc_now,
)
from blogapi.security import BCRYPT_MAX_BYTES

PASSWORD_MIN_CHARS = 8
USER_NOT_FOUND = "User not found"
EMAIL_MAX_CHARS = 254
EXAMPLE_EMAIL = "ada@example.com"
EXAMPLE_PASSWORD = "correct horse battery staple"
EXAMPLE_NEW_PASSWORD = "purple elephant dishwasher"


class UserBase(SQLModel):
    email: EmailStr = Field(
        max_length=EMAIL_MAX_CHARS,
        unique=True,
        index=True,
        schema_extra=example(EXAMPLE_EMAIL),
    )

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
    pydantic.Field(
        min_length=PASSWORD_MIN_CHARS,
        description=f"At least {PASSWORD_MIN_CHARS} characters, "
        f"at most {BCRYPT_MAX_BYTES} bytes in UTF-8, no NUL",
        # Documented only, _fits_bcrypt refusing with its own message: no NUL, and at
        # most 72 characters, which is 72 bytes when each is ASCII (JSON Schema can't
        # count bytes: "é" * 37 fits in 72 characters, not in 72 bytes).
        json_schema_extra={"pattern": NO_NUL, "maxLength": BCRYPT_MAX_BYTES},
    ),
    AfterValidator(_fits_bcrypt),
]


class UserCreate(UserBase, RequestBody):
    password: Annotated[NewPassword, pydantic.Field(examples=[EXAMPLE_PASSWORD])]


class User(UserBase, table=True):
    __tablename__ = "users"
    # Never hand a deleted user's id to someone new: old tokens name users by id.
    __table_args__ = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, primary_key=True)
    password_hash: str
    token_version: int = Field(default=0, description="Raised to revoke every token")
    is_admin: bool = False
    is_active: bool = Field(default=True, description="False: tokens and login refused")
    email_verified: bool = Field(
        default=False, description="True once a link emailed to the address was used"
    )
    created_at: datetime = Field(
        default_factory=utc_now, sa_type=UTCDateTime, nullable=False
    )


class UserPublic(SQLModel):
    """A user as others see them: no email."""

    id: int = Field(schema_extra=example(EXAMPLE_ID))
    created_at: datetime = Field(schema_extra=example(EXAMPLE_TIME))


class UserSelf(UserPublic):
    """A user as they see themselves: with their email."""

    email: str = Field(schema_extra=example(EXAMPLE_EMAIL))
    email_verified: bool = Field(
        description="Whether a link emailed to the address was opened and used",
        schema_extra=example(True),
    )


def may_see_email(viewer: User, user: User) -> bool:
    """Whether `viewer` may read `user`'s email: their own, or anyone's for an admin."""
    return viewer.is_admin or viewer.id == user.id


UserId = Annotated[int, Path(ge=1, le=MAX_ID, examples=[EXAMPLE_ID])]
"""A route's `{user_id:int}`: digits only, so `/users/me` and `/users/abc` never match it
(404 or 405 as any other path, not 422); the OpenAPI path stays `/users/{user_id}`."""

WITHOUT_PASSWORD_HASH = defer(attribute(User.password_hash), raiseload=True)
"""Reads never load a password hash: the routes that check one ask for it by name."""
