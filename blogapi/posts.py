"""The Post model family and the /posts router."""

from datetime import datetime
from typing import Annotated, Any

from fastapi import (
    APIRouter,
    Depends,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
    status,
)
from pydantic_core import to_json
from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Index,
    Integer,
    Row,
    Select,
    bindparam,
    or_,
    true,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError
from sqlmodel import Field, Relationship, SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blogapi.db import MAX_ID, SessionDep, UTCDateTime, read_rows, utc_now
from blogapi.errors import error_responses
from blogapi.users import (
    TOKEN_IS_CURRENT,
    CurrentUser,
    TokenClaims,
    User,
    UserPublic,
    invalid_credentials,
    token_params,
)

TITLE_MAX_CHARS = 300
CONTENT_MAX_CHARS = 10_000
PAGE_MAX = 100
NO_NUL = r"^[^\x00]*$"


class PostBase(SQLModel):
    title: str = Field(
        min_length=1, max_length=TITLE_MAX_CHARS, schema_extra={"pattern": NO_NUL}
    )
    content: str = Field(
        min_length=1, max_length=CONTENT_MAX_CHARS, schema_extra={"pattern": NO_NUL}
    )
    published: bool = True


class PostCreate(PostBase):
    pass


class PostUpdate(SQLModel):
    """A partial update: fields left out keep their value; none may be set to null."""

    title: str = Field(
        default=None,
        min_length=1,
        max_length=TITLE_MAX_CHARS,
        schema_extra={"pattern": NO_NUL},
    )
    content: str = Field(
        default=None,
        min_length=1,
        max_length=CONTENT_MAX_CHARS,
        schema_extra={"pattern": NO_NUL},
    )
    published: bool = Field(default=None)


class Post(PostBase, table=True):
    __tablename__ = "posts"
    __table_args__ = (
        Index("ix_posts_created_at_id", "created_at", "id"),
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
    owner_id: int = Field(foreign_key="users.id", ondelete="CASCADE", index=True)
    created_at: datetime = Field(
        default_factory=utc_now, sa_type=UTCDateTime, nullable=False
    )
    votes: int = Field(
        default=0, description="How many votes the post has; kept by /vote."
    )
    owner: User = Relationship(
        sa_relationship_kwargs={"lazy": "joined", "innerjoin": True}
    )


class PostPublic(PostBase):
    id: int
    created_at: datetime
    owner_id: int
    owner: UserPublic
    votes: int


_posts, _owners = Post.__table__, User.__table__


def visible_to(viewer_id: int | BindParameter[int]) -> ColumnElement[bool]:
    """Published posts, and the viewer's own drafts."""
    return or_(_posts.c.published, _posts.c.owner_id == viewer_id)


# The reads every request makes are built once, with their values bound at execution:
# building a statement and its cache key costs more than running it.
_VIEWER = bindparam("user_id", type_=Integer)
_VISIBLE_POST = select(Post).where(Post.id == bindparam("post_id"), visible_to(_VIEWER))
_ENTRIES = (
    select(  # in the order _entry reads them
        _posts.c.id,
        _posts.c.title,
        _posts.c.content,
        _posts.c.published,
        _posts.c.created_at,
        _posts.c.votes,
        _posts.c.owner_id,
        _owners.c.email.label("owner_email"),
        _owners.c.created_at.label("owner_created_at"),
    )
    .join_from(_posts, _owners, _posts.c.owner_id == _owners.c.id)
    .where(visible_to(_VIEWER))
)
_PAGE = (
    _ENTRIES.order_by(_posts.c.created_at.desc(), _posts.c.id.desc())
    .limit(bindparam("limit", type_=Integer))
    .offset(bindparam("skip", type_=Integer))
)


def _token_checked(entries: Select[Any]) -> Select[Any]:
    """The entries with the token check in the same statement, so a read is one round
    trip: one row per post with the token's user id, one row of nulls but that id when
    no post matches, and no row at all for a token that is no longer good.
    """
    viewer = select(_owners.c.id.label("viewer_id")).where(TOKEN_IS_CURRENT).subquery()
    found = entries.subquery()
    return (
        select(*found.c, viewer.c.viewer_id)
        .select_from(viewer.outerjoin(found, true()))
        .order_by(found.c.created_at.desc(), found.c.id.desc())
    )


_LIKE_ESCAPE = "/"
# The list's statements, a search's pattern bound like any value (bench/explain.py
# shows their plans).
LIST_PAGE = _token_checked(_PAGE)
LIST_SEARCH = _token_checked(
    _PAGE.where(_posts.c.title.ilike(bindparam("pattern"), escape=_LIKE_ESCAPE))
)
_ONE_POST = _token_checked(
    _ENTRIES.where(_posts.c.id == bindparam("post_id", type_=Integer))
)


def contains_pattern(text: str) -> str:
    """A LIKE pattern for titles containing `text`, its wildcards taken literally."""
    for special in (_LIKE_ESCAPE, "%", "_"):
        text = text.replace(special, _LIKE_ESCAPE + special)
    return f"%{text}%"


def _entry(row: Row[Any]) -> dict[str, Any]:
    """A post from an entries row, as PostPublic's JSON shape (its fields in its order).
    The database's values need no validation, and unpacking the row costs less than
    reading its columns by name. FastAPI does not see these dicts, so a change to
    PostPublic or UserPublic must be made here too; a test compares the two."""
    (
        post_id,
        title,
        content,
        published,
        created_at,
        votes,
        owner_id,
        owner_email,
        owner_joined,
        _viewer_id,
    ) = row
    return {
        "title": title,
        "content": content,
        "published": published,
        "id": post_id,
        "created_at": created_at,
        "owner_id": owner_id,
        "owner": {"id": owner_id, "email": owner_email, "created_at": owner_joined},
        "votes": votes,
    }


async def _read_entries(
    request: Request, statement: Select[Any], params: dict[str, Any]
) -> list[dict[str, Any]]:
    """Run a token-checked read: its posts, or 401 for a token that is no longer good."""
    rows = await read_rows(request, statement, params)
    if not rows:
        raise invalid_credentials()
    if rows[0].id is None:  # the one row of nulls: no post matched
        return []
    return [_entry(row) for row in rows]


def _entries_response(content: list[dict[str, Any]] | dict[str, Any]) -> Response:
    """Entries written as JSON by pydantic's own serializer, the way FastAPI would write
    PostPublic objects: building and re-checking those objects for rows the database
    already checked was about a tenth of a list request.
    """
    return Response(to_json(content), media_type="application/json")


PostId = Annotated[int, Path(ge=1, le=MAX_ID)]


async def get_visible_post(
    post_id: PostId, session: SessionDep, user: CurrentUser
) -> Post:
    found = await session.exec(
        _VISIBLE_POST, params={"post_id": post_id, "user_id": user.id}
    )
    post = found.first()
    if post is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"Post {post_id} not found")
    return post


async def get_owned_post(
    post: Annotated[Post, Depends(get_visible_post)], user: CurrentUser
) -> Post:
    if post.owner_id != user.id:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "Not authorized to change this post"
        )
    return post


OwnedPost = Annotated[Post, Depends(get_owned_post)]

router = APIRouter(prefix="/posts", tags=["posts"], responses=error_responses(401))


@router.get("", response_model=list[PostPublic], summary="List posts, newest first")
async def list_posts(
    request: Request,
    claims: TokenClaims,
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 10,
    skip: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    search: Annotated[
        str,
        Query(
            max_length=TITLE_MAX_CHARS,
            pattern=NO_NUL,
            description="Only posts whose title contains this, ignoring case",
        ),
    ] = "",
) -> Response:
    query, params = LIST_PAGE, {**token_params(claims), "limit": limit, "skip": skip}
    if search:
        query, params["pattern"] = LIST_SEARCH, contains_pattern(search)
    return _entries_response(await _read_entries(request, query, params))


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a post",
    responses=error_responses(400),
)
async def create_post(
    body: PostCreate, session: SessionDep, user: CurrentUser
) -> PostPublic:
    post = Post.model_validate(body, update={"owner_id": user.id})
    post.owner = user
    session.add(post)
    try:
        await session.commit()
    except IntegrityError:
        raise invalid_credentials() from None  # the account was deleted meanwhile
    return PostPublic.model_validate(post)


@router.get(
    "/{post_id}",
    response_model=PostPublic,
    summary="One post",
    responses=error_responses(404),
)
async def read_post(post_id: PostId, claims: TokenClaims, request: Request) -> Response:
    params = {**token_params(claims), "post_id": post_id}
    found = await _read_entries(request, _ONE_POST, params)
    if not found:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"Post {post_id} not found")
    return _entries_response(found[0])


@router.put(
    "/{post_id}", summary="Replace a post", responses=error_responses(400, 403, 404)
)
async def replace_post(
    body: PostCreate, post: OwnedPost, session: SessionDep
) -> PostPublic:
    return await _save_edit(post, body.model_dump(), session)


@router.patch(
    "/{post_id}",
    summary="Change part of a post",
    responses=error_responses(400, 403, 404),
)
async def update_post(
    body: PostUpdate, post: OwnedPost, session: SessionDep
) -> PostPublic:
    return await _save_edit(post, body.model_dump(exclude_unset=True), session)


async def _save_edit(
    post: Post, changes: dict[str, Any], session: AsyncSession
) -> PostPublic:
    post_id = post.id
    post.sqlmodel_update(changes)
    try:
        await session.commit()
    except StaleDataError:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"Post {post_id} not found"
        ) from None  # deleted since it was read
    return PostPublic.model_validate(post)


@router.delete(
    "/{post_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a post",
    responses=error_responses(403, 404),
)
async def delete_post(post: OwnedPost, session: SessionDep) -> None:
    await session.delete(post)
    await session.commit()
