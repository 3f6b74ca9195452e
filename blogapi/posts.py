"""The Post model family and the /posts router."""

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response, status
from sqlalchemy import (
    Boolean,
    Index,
    Integer,
    and_,
    bindparam,
    or_,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import contains_eager
from sqlalchemy.orm.exc import StaleDataError
from sqlmodel import Field, Relationship, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blogapi.auth import CurrentUser, VerifiedUser
from blogapi.db import SessionDep
from blogapi.errors import (
    EmailNotVerified,
    Forbidden,
    InvalidCredentials,
    MalformedBody,
    NotFound,
    error_responses,
)
from blogapi.http_metrics import MeteredRoute
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
from blogapi.paging import Limit, Skip, cursor_query, link_header, newest_first
from blogapi.users import User, UserPublic

log = logging.getLogger("blogapi")

TITLE_MAX_CHARS = 300
CONTENT_MAX_CHARS = 10_000
NOT_YOURS = "Not authorized to change this post"


class PostBase(SQLModel):
    title: str = Field(
        min_length=1,
        max_length=TITLE_MAX_CHARS,
        schema_extra={"pattern": NO_NUL, **example("Hello, world")},
    )
    content: str = Field(
        min_length=1,
        max_length=CONTENT_MAX_CHARS,
        schema_extra={"pattern": NO_NUL, **example("My first post")},
    )
    published: bool = Field(default=True, schema_extra=example(True))


class PostCreate(PostBase, RequestBody):
    pass


class PostUpdate(RequestBody):
    """A partial update: fields left out keep their value; none may be set to null."""

    title: str = Field(
        default=None,
        min_length=1,
        max_length=TITLE_MAX_CHARS,
        schema_extra={"pattern": NO_NUL, **example("Hello again, world")},
    )
    content: str = Field(
        default=None,
        min_length=1,
        max_length=CONTENT_MAX_CHARS,
        schema_extra={"pattern": NO_NUL, **example("My first post, edited")},
    )
    published: bool = Field(default=None, schema_extra=example(False))


class Post(PostBase, table=True):
    __tablename__ = "posts"
    __table_args__ = (
        Index("ix_posts_created_at_id", "created_at", "id"),
        # A user's posts in id order (the data export's batches); also serves the
        # owner's foreign key.
        Index("ix_posts_owner_id_id", "owner_id", "id"),
        # Serves `?search=` (ILIKE '%word%') on PostgreSQL; SQLite has no such index.
        Index(
            "ix_posts_title_trgm",
            "title",
            postgresql_using="gin",
            postgresql_ops={"title": "gin_trgm_ops"},
        ).ddl_if(dialect="postgresql"),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    owner_id: int = Field(foreign_key="users.id", ondelete="CASCADE")
    created_at: datetime = Field(
        default_factory=utc_now, sa_type=UTCDateTime, nullable=False
    )
    votes: int = Field(
        default=0,
        description="How many votes the post has: kept by the database's triggers "
        "on the votes table (migration 0004), never written by the app.",
    )
    owner: User = Relationship(sa_relationship_kwargs={"lazy": "raise"})


class PostPublic(PostBase):
    id: int = Field(schema_extra=example(EXAMPLE_ID))
    created_at: datetime = Field(schema_extra=example(EXAMPLE_TIME))
    owner_id: int = Field(schema_extra=example(EXAMPLE_ID))
    owner: UserPublic
    votes: int = Field(schema_extra=example(0))


VIEWER = bindparam("viewer_id", type_=Integer)
VIEWER_IS_ADMIN = bindparam("viewer_is_admin", type_=Boolean)

VISIBLE = or_(
    VIEWER_IS_ADMIN,
    and_(
        col(User.is_active),
        or_(col(Post.published), col(Post.owner_id) == VIEWER),
    ),
)
"""Which posts the viewer sees, in a statement that joins each post's owner: all of
them for an admin; for anyone else, published posts and their own drafts, of active
owners only (a deactivated user's posts are hidden until they are enabled again).
Bind it with `viewer_params`."""


def viewer_params(viewer: User) -> dict[str, Any]:
    return {"viewer_id": viewer.id, "viewer_is_admin": viewer.is_admin}


_LIKE_ESCAPE = "/"


def contains_pattern(text: str) -> str:
    """A LIKE pattern for titles containing `text`, its wildcards taken literally."""
    for special in (_LIKE_ESCAPE, "%", "_"):
        text = text.replace(special, _LIKE_ESCAPE + special)
    return f"%{text}%"


# The statements every request runs are built once, their values bound at execution:
# building a statement and its cache key costs more than running it. Each loads a post
# with its owner in one query, and of the owner only what PostPublic shows.
_WITH_OWNER = (
    select(Post)
    .join(attribute(Post.owner))
    .options(
        contains_eager(attribute(Post.owner)).load_only(attribute(User.created_at))
    )
    .where(VISIBLE)
)
_ONE_POST = _WITH_OWNER.where(col(Post.id) == bindparam("post_id", type_=Integer))
NEWEST_FIRST = newest_first(col(Post.created_at), col(Post.id))
_PAGE = _WITH_OWNER.order_by(*NEWEST_FIRST.order).limit(
    bindparam("limit", type_=Integer)
)
_TITLE_MATCHES = col(Post.title).ilike(bindparam("pattern"), escape=_LIKE_ESCAPE)
# bench/explain.py shows these plans.
LIST_PAGE = _PAGE.offset(bindparam("skip", type_=Integer))
LIST_SEARCH = LIST_PAGE.where(_TITLE_MATCHES)
LIST_AFTER = _PAGE.where(NEWEST_FIRST.after)
LIST_SEARCH_AFTER = LIST_AFTER.where(_TITLE_MATCHES)


PostId = Annotated[int, Path(ge=1, le=MAX_ID, examples=[EXAMPLE_ID])]


def post_not_found(post_id: int | None) -> NotFound:
    return NotFound(f"Post {post_id} not found")


async def get_visible_post(
    user: CurrentUser, post_id: PostId, session: SessionDep
) -> Post:
    found = await session.exec(
        _ONE_POST, params={"post_id": post_id, **viewer_params(user)}
    )
    post = found.first()
    if post is None:
        raise post_not_found(post_id)
    return post


VisiblePost = Annotated[Post, Depends(get_visible_post)]


def _require_owner(user: User, post: Post) -> Post:
    if post.owner_id != user.id:
        raise Forbidden(NOT_YOURS)
    return post


async def get_owned_post(user: VerifiedUser, post: VisiblePost) -> Post:
    """The user's own post, to change: an unverified email is refused first."""
    return _require_owner(user, post)


OwnedPost = Annotated[Post, Depends(get_owned_post)]


async def get_deletable_post(user: CurrentUser, post: VisiblePost) -> Post:
    """The user's own post, or any post for an admin. No verified email is needed:
    nobody is kept from taking down what they wrote."""
    if user.is_admin:
        return post
    return _require_owner(user, post)


DeletablePost = Annotated[Post, Depends(get_deletable_post)]

router = APIRouter(
    prefix="/posts",
    tags=["posts"],
    responses=error_responses(InvalidCredentials),
    route_class=MeteredRoute,
)
LIST_PATH = "/posts/"
EXAMPLE_CURSOR = NEWEST_FIRST.cursor_of(EXAMPLE_TIME, EXAMPLE_ID)


@router.get(
    "",
    response_model=list[PostPublic],
    summary="List posts, newest first",
    responses={200: {"headers": {"Link": link_header(LIST_PATH, EXAMPLE_CURSOR)}}},
)
async def list_posts(
    user: CurrentUser,
    session: SessionDep,
    response: Response,
    limit: Limit = 10,
    skip: Skip = 0,
    search: Annotated[
        str,
        Query(
            max_length=TITLE_MAX_CHARS,
            pattern=NO_NUL,
            description="Only posts whose title contains this, ignoring case",
            examples=["hello"],
        ),
    ] = "",
    cursor: Annotated[str, cursor_query(EXAMPLE_CURSOR)] = "",
) -> Sequence[Post]:
    params = {
        **viewer_params(user),
        "limit": limit + 1,
        **NEWEST_FIRST.start(cursor, skip),
    }
    if cursor:
        statement = LIST_SEARCH_AFTER if search else LIST_AFTER
    else:
        statement = LIST_SEARCH if search else LIST_PAGE
    query: dict[str, str | int] = {"limit": limit}
    if search:
        params["pattern"], query["search"] = contains_pattern(search), search
    rows = (await session.exec(statement, params=params)).all()
    return NEWEST_FIRST.page(rows, limit, response, LIST_PATH, query)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=PostPublic,
    summary="Create a post",
    responses=error_responses(EmailNotVerified, MalformedBody),
)
async def create_post(
    user: VerifiedUser, body: PostCreate, session: SessionDep
) -> Post:
    post = Post.model_validate(body, update={"owner_id": user.id})
    post.owner = user
    session.add(post)
    try:
        await session.commit()
    except IntegrityError:
        raise InvalidCredentials() from None  # the account was deleted meanwhile
    return post


@router.get(
    "/{post_id}",
    response_model=PostPublic,
    summary="One post",
    responses=error_responses(NotFound),
)
async def read_post(post: VisiblePost) -> Post:
    return post


@router.put(
    "/{post_id}",
    response_model=PostPublic,
    summary="Replace a post",
    responses=error_responses(MalformedBody, Forbidden, EmailNotVerified, NotFound),
)
async def replace_post(post: OwnedPost, body: PostCreate, session: SessionDep) -> Post:
    return await _save_edit(post, body.model_dump(), session)


@router.patch(
    "/{post_id}",
    response_model=PostPublic,
    summary="Change part of a post",
    responses=error_responses(MalformedBody, Forbidden, EmailNotVerified, NotFound),
)
async def update_post(post: OwnedPost, body: PostUpdate, session: SessionDep) -> Post:
    return await _save_edit(post, body.model_dump(exclude_unset=True), session)


async def _save_edit(
    post: Post, changes: dict[str, Any], session: AsyncSession
) -> Post:
    post_id = post.id
    post.sqlmodel_update(changes)
    try:
        await session.commit()
    except StaleDataError:
        raise post_not_found(post_id) from None  # deleted since it was read
    return post


@router.delete(
    "/{post_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a post",
    description="Your own post; an admin may delete anyone's, drafts included.",
    responses=error_responses(Forbidden, NotFound),
)
async def delete_post(
    user: CurrentUser, post: DeletablePost, session: SessionDep
) -> None:
    await session.delete(post)
    await session.commit()
    if post.owner_id != user.id:
        log.info(
            "admin %d (%s) deleted post %d of user %d",
            user.id,
            user.email,
            post.id,
            post.owner_id,
        )
