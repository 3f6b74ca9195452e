"""What admins do to accounts: list every user, disable or enable one, make or unmake
an admin. (Admins also see and delete any post: see blogapi.posts.)"""

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Self

from fastapi import APIRouter, Body, Response
from pydantic import model_validator
from sqlalchemy import Integer, bindparam
from sqlalchemy.orm import load_only
from sqlmodel import Field, SQLModel, col, select, update

from blogapi.auth import ONLY_ADMINS, CurrentAdmin
from blogapi.db import SessionDep
from blogapi.errors import (
    Conflict,
    Forbidden,
    InvalidCredentials,
    MalformedBody,
    NotFound,
    error_responses,
)
from blogapi.http_metrics import MeteredRoute
from blogapi.model_base import EXAMPLE_ID, EXAMPLE_TIME, RequestBody, attribute, example
from blogapi.paging import Limit, Skip, cursor_query, id_ascending, link_header
from blogapi.users import EXAMPLE_EMAIL, USER_NOT_FOUND, User, UserId

log = logging.getLogger("blogapi")
NOT_YOURSELF = "Admins cannot disable or demote themselves"


class UserAccount(SQLModel):
    """A user as admins see them."""

    id: int = Field(schema_extra=example(EXAMPLE_ID))
    email: str = Field(schema_extra=example(EXAMPLE_EMAIL))
    created_at: datetime = Field(schema_extra=example(EXAMPLE_TIME))
    is_admin: bool = Field(schema_extra=example(True))
    is_active: bool = Field(schema_extra=example(True))
    email_verified: bool = Field(schema_extra=example(True))


class UserAccountUpdate(RequestBody):
    """Fields left out keep their value; at least one must be sent."""

    model_config = RequestBody.model_config | {
        "json_schema_extra": {
            "anyOf": [{"required": ["is_active"]}, {"required": ["is_admin"]}]
        }
    }

    is_active: bool = Field(
        default=None,
        description="false disables the account: its tokens stop working at once, "
        "its login is refused and its posts are hidden from everyone but admins; "
        "true enables it again (the user logs in anew)",
        schema_extra=example(True),
    )
    is_admin: bool = Field(
        default=None,
        description="make or unmake an admin",
        schema_extra=example(True),
    )

    @model_validator(mode="after")
    def not_empty(self) -> Self:
        if not self.model_fields_set:
            raise ValueError("Send is_active, is_admin or both")
        return self


_ACCOUNT_COLUMNS = (
    User.id,
    User.email,
    User.created_at,
    User.is_admin,
    User.is_active,
    User.email_verified,
)
"""What UserAccount shows, never the password hash."""
BY_ID = id_ascending(col(User.id))
_ACCOUNTS = (
    select(User)
    .options(load_only(*map(attribute, _ACCOUNT_COLUMNS), raiseload=True))
    .order_by(*BY_ID.order)
    .limit(bindparam("limit", type_=Integer))
)
_PAGE = _ACCOUNTS.offset(bindparam("skip", type_=Integer))
_PAGE_AFTER = _ACCOUNTS.where(BY_ID.after)
LIST_PATH = "/users/"
EXAMPLE_CURSOR = BY_ID.cursor_of(EXAMPLE_ID)
_TARGET = col(User.id) == bindparam("user_id", type_=Integer)

router = APIRouter(
    prefix="/users",
    tags=["admin"],
    responses=error_responses(InvalidCredentials, Forbidden(ONLY_ADMINS)),
    route_class=MeteredRoute,
)


@router.get(
    "",
    response_model=list[UserAccount],
    summary="List every user (admins only)",
    description="Every account, disabled ones included, in the order they registered. "
    'When more follow, a `Link: <URL>; rel="next"` header leads to the next page, as on '
    "`GET /posts/`.",
    responses={200: {"headers": {"Link": link_header(LIST_PATH, EXAMPLE_CURSOR)}}},
)
async def list_users(
    _: CurrentAdmin,
    session: SessionDep,
    response: Response,
    limit: Limit = 10,
    skip: Skip = 0,
    cursor: Annotated[str, cursor_query(EXAMPLE_CURSOR)] = "",
) -> Sequence[User]:
    statement = _PAGE_AFTER if cursor else _PAGE
    params = {"limit": limit + 1, **BY_ID.start(cursor, skip)}
    rows = (await session.exec(statement, params=params)).all()
    return BY_ID.page(rows, limit, response, LIST_PATH, {"limit": limit})


@router.patch(
    "/{user_id:int}",
    response_model=UserAccount,
    summary="Disable or enable a user, make or unmake an admin (admins only)",
    description="Admins cannot disable or demote themselves (409), so one is always "
    "left; `python -m blogapi make-admin` makes the first.",
    responses=error_responses(
        MalformedBody,
        NotFound(USER_NOT_FOUND),
        Conflict(NOT_YOURSELF),
    ),
)
async def update_user(
    admin: CurrentAdmin,
    user_id: UserId,
    body: Annotated[
        UserAccountUpdate,
        Body(
            openapi_examples={
                "enable": {"summary": "Enable", "value": {"is_active": True}},
                "disable": {"summary": "Disable", "value": {"is_active": False}},
                "make admin": {"summary": "Make an admin", "value": {"is_admin": True}},
            }
        ),
    ],
    session: SessionDep,
) -> Any:
    changes: dict[str, Any] = body.model_dump(exclude_unset=True)
    if user_id == admin.id and False in changes.values():
        raise Conflict(NOT_YOURSELF)
    if changes.get("is_active") is False:
        # Once enabled again, the user logs in anew: no token from before works.
        changes["token_version"] = User.token_version + 1
    changed = await session.exec(
        update(User)
        .where(_TARGET)
        .values(changes)
        .returning(*map(col, _ACCOUNT_COLUMNS))
        .execution_options(synchronize_session=False),
        params={"user_id": user_id},
    )
    account = changed.first()
    if account is None:
        raise NotFound(USER_NOT_FOUND)
    await session.commit()
    log.info(
        "admin %d (%s) changed user %d: %s",
        admin.id,
        admin.email,
        user_id,
        body.model_dump(exclude_unset=True),
    )
    return account
