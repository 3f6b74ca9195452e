"""The signed-in user's own account: changing the password, deleting the account."""

from fastapi import APIRouter, status
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Field, SQLModel, col, select, update

from blogapi.db import SessionDep
from blogapi.errors import error_responses
from blogapi.posts import Post
from blogapi.security import hash_password, verify_password
from blogapi.users import CurrentUser, NewPassword, User, wrong_login
from blogapi.votes import Vote

PASSWORD_MAX_CHARS = 1024


class PasswordChange(SQLModel):
    current_password: str = Field(max_length=PASSWORD_MAX_CHARS)
    new_password: NewPassword


class AccountDeletion(SQLModel):
    password: str = Field(max_length=PASSWORD_MAX_CHARS)


router = APIRouter(
    prefix="/users/me", tags=["users"], responses=error_responses(400, 401, 403)
)


async def _check_password(password: str, user: User) -> None:
    if not await run_in_threadpool(verify_password, password, user.password_hash):
        raise wrong_login()


@router.put(
    "/password",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Change your password; every earlier token stops working",
)
async def change_password(
    body: PasswordChange, user: CurrentUser, session: SessionDep
) -> None:
    await _check_password(body.current_password, user)
    user.password_hash = await run_in_threadpool(hash_password, body.new_password)
    user.token_version += 1
    await session.commit()


@router.delete(
    "",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete your account, your posts and your votes",
)
async def delete_account(
    body: AccountDeletion, user: CurrentUser, session: SessionDep
) -> None:
    await _check_password(body.password, user)
    # Locking the user row first waits out this user's votes in flight, so the counts
    # taken back below are all the votes the cascade removes.
    await session.exec(select(User.id).where(User.id == user.id).with_for_update())
    voted = select(Vote.post_id).where(Vote.user_id == user.id)
    # Then the posts it voted on, in id order. An unvote in flight holds its post, so this
    # waits it out and the UPDATE below (a later snapshot) no longer counts that vote; and
    # two deletions that share posts queue up instead of deadlocking.
    await session.exec(
        select(Post.id)
        .where(col(Post.id).in_(voted))
        .order_by(Post.id)
        .with_for_update()
    )
    await session.exec(
        update(Post)
        .where(col(Post.id).in_(voted))
        .values(votes=col(Post.votes) - 1)
        .execution_options(synchronize_session=False)
    )
    await session.delete(user)
    await session.commit()
