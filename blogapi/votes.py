"""The Vote table and the /vote router. Each post's vote count follows its votes rows
through the database's own triggers (migration 0004)."""

from datetime import datetime

from fastapi import APIRouter, status
from sqlalchemy import Integer, bindparam, insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel, col, delete, select

from blogapi.auth import VerifiedUser
from blogapi.db import SessionDep
from blogapi.errors import (
    Conflict,
    EmailNotVerified,
    InvalidCredentials,
    MalformedBody,
    NotFound,
    error_responses,
)
from blogapi.http_metrics import MeteredRoute
from blogapi.model_base import (
    EXAMPLE_ID,
    MAX_ID,
    IntegralInt,
    RequestBody,
    UTCDateTime,
    example,
    utc_now,
)
from blogapi.posts import VIEWER, VISIBLE, Post, post_not_found, viewer_params
from blogapi.users import User


class Vote(SQLModel, table=True):
    """One user's vote on one post; the composite key allows one each."""

    __tablename__ = "votes"

    user_id: int = Field(foreign_key="users.id", ondelete="CASCADE", primary_key=True)
    post_id: int = Field(
        foreign_key="posts.id", ondelete="CASCADE", primary_key=True, index=True
    )
    created_at: datetime = Field(
        default_factory=utc_now, sa_type=UTCDateTime, nullable=False
    )


VOTE_ADDED = "successfully added vote"
VOTE_REMOVED = "successfully deleted vote"


def already_voted(user_id: int | None, post_id: int) -> Conflict:
    return Conflict(f"User {user_id} has already voted on post {post_id}")


class VoteCreate(RequestBody):
    post_id: IntegralInt = Field(ge=1, le=MAX_ID, schema_extra=example(EXAMPLE_ID))
    dir: IntegralInt = Field(
        ge=0,
        le=1,
        description="1 adds your vote, 0 removes it",
        schema_extra=example(1),
    )


class VoteResult(SQLModel):
    message: str = Field(schema_extra=example(VOTE_ADDED))


# On the table, not the class: given parameters, an ORM INSERT is a bulk insert of rows.
# An INSERT's rowcount is kept only when asked for.
_ADD = (
    insert(Vote.metadata.tables["votes"])
    .from_select(
        ["user_id", "post_id", "created_at"],
        select(VIEWER, col(Post.id), bindparam("now", type_=UTCDateTime))
        .join_from(Post, User, col(Post.owner_id) == col(User.id))
        .where(col(Post.id) == bindparam("post_id", type_=Integer), VISIBLE),
    )
    .execution_options(preserve_rowcount=True)
)
"""The user's vote on a post they can see, in one statement: no row when they can't."""
_REMOVE_VOTE = delete(Vote).where(
    col(Vote.user_id) == bindparam("user_id", type_=Integer),
    col(Vote.post_id) == bindparam("post_id", type_=Integer),
)
"""A vote may always be taken back, whatever became of the post's visibility."""

router = APIRouter(prefix="/vote", tags=["votes"], route_class=MeteredRoute)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Add or remove your vote on a post",
    responses=error_responses(
        MalformedBody,
        InvalidCredentials,
        EmailNotVerified,
        NotFound,
        already_voted(EXAMPLE_ID, EXAMPLE_ID),
    ),
)
async def vote(user: VerifiedUser, body: VoteCreate, session: SessionDep) -> VoteResult:
    if body.dir == 0:
        removed = await session.exec(
            _REMOVE_VOTE, params={"user_id": user.id, "post_id": body.post_id}
        )
        if removed.rowcount == 0:
            raise NotFound("Vote does not exist")
        await session.commit()
        return VoteResult(message=VOTE_REMOVED)
    try:
        added = await session.exec(
            _ADD,
            params={**viewer_params(user), "post_id": body.post_id, "now": utc_now()},
        )
    except IntegrityError:
        raise already_voted(user.id, body.post_id) from None
    if added.rowcount == 0:
        raise post_not_found(body.post_id)
    await session.commit()
    return VoteResult(message=VOTE_ADDED)
