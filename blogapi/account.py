"""The signed-in user's own account: changing the password, deleting the account."""

from fastapi import APIRouter, Request, status
from fastapi.concurrency import run_in_threadpool
from sqlmodel import Field, SQLModel, col, delete, select, update

from blogapi.db import open_session
from blogapi.errors import error_responses
from blogapi.posts import Post
from blogapi.security import AccessClaims, hash_password, verify_password
from blogapi.users import (
    TOKEN_IS_CURRENT,
    NewPassword,
    TokenClaims,
    User,
    get_current_user,
    invalid_credentials,
    token_params,
    wrong_login,
)
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


async def _check_password(
    request: Request, claims: AccessClaims, password: str
) -> None:
    """Refuse `password` unless it is the token's user's.

    bcrypt runs after the connection has gone back to the pool, so a burst of these
    requests does not keep others from the database. The write that follows checks the
    token again, in the statement that locks or changes the user's row.
    """
    async with open_session(request, reads_only=True) as session:
        user = await get_current_user(claims, session)
    if not await run_in_threadpool(verify_password, password, user.password_hash):
        raise wrong_login()


@router.put(
    "/password",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Change your password; every earlier token stops working",
)
async def change_password(
    body: PasswordChange, claims: TokenClaims, request: Request
) -> None:
    await _check_password(request, claims, body.current_password)
    password_hash = await run_in_threadpool(hash_password, body.new_password)
    async with open_session(request, reads_only=False) as session:
        changed = await session.exec(
            update(User)
            .where(TOKEN_IS_CURRENT)
            .values(password_hash=password_hash, token_version=User.token_version + 1)
            .execution_options(synchronize_session=False),
            params=token_params(claims),
        )
        if changed.rowcount == 0:
            raise invalid_credentials()  # the token was revoked while bcrypt ran
        await session.commit()


@router.delete(
    "",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete your account, your posts and your votes",
)
async def delete_account(
    body: AccountDeletion, claims: TokenClaims, request: Request
) -> None:
    await _check_password(request, claims, body.password)
    user_id = claims.user_id
    async with open_session(request, reads_only=False) as session:
        # Locking the user row first waits out this user's votes in flight, so the
        # counts taken back below are all the votes the cascade removes.
        locked = await session.exec(
            select(User.id).where(TOKEN_IS_CURRENT).with_for_update(),
            params=token_params(claims),
        )
        if locked.first() is None:
            raise invalid_credentials()  # the token was revoked while bcrypt ran
        voted = select(Vote.post_id).where(Vote.user_id == user_id)
        # Then the posts it voted on, in id order. An unvote in flight holds its post, so
        # this waits it out and the UPDATE below (a later snapshot) no longer counts that
        # vote; and two deletions that share posts queue up instead of deadlocking.
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
        await session.exec(
            delete(User)
            .where(col(User.id) == user_id)
            .execution_options(synchronize_session=False)
        )
        await session.commit()
