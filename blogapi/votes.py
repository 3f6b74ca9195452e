"""The Vote table and the /vote router, which also keeps each post's vote count."""

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, HTTPException, status
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel, col, delete, update

from blogapi.db import MAX_ID, SessionDep, UTCDateTime, utc_now
from blogapi.errors import error_responses
from blogapi.posts import Post, visible_to
from blogapi.users import CurrentUser


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


class VoteCreate(SQLModel):
    post_id: int = Field(ge=1, le=MAX_ID)
    dir: Literal[0, 1] = Field(description="1 adds your vote, 0 removes it")


class VoteResult(SQLModel):
    message: str


router = APIRouter(prefix="/vote", tags=["votes"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Add or remove your vote on a post",
    responses=error_responses(400, 401, 404, 409),
)
async def vote(body: VoteCreate, session: SessionDep, user: CurrentUser) -> VoteResult:
    user_id, step = user.id, 1 if body.dir == 1 else -1
    counted = await session.exec(
        update(Post)
        .where(col(Post.id) == body.post_id, visible_to(user.id))
        .values(votes=col(Post.votes) + step)
        .execution_options(synchronize_session=False)
    )
    if counted.rowcount == 0:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"Post {body.post_id} not found")
    if body.dir == 1:
        session.add(Vote(user_id=user_id, post_id=body.post_id))
        try:
            await session.commit()
        except IntegrityError:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"User {user_id} has already voted on post {body.post_id}",
            ) from None
        return VoteResult(message="successfully added vote")
    removed = await session.exec(
        delete(Vote).where(
            col(Vote.user_id) == user_id, col(Vote.post_id) == body.post_id
        )
    )
    if removed.rowcount == 0:
        await session.rollback()
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Vote does not exist")
    await session.commit()
    return VoteResult(message="successfully deleted vote")
