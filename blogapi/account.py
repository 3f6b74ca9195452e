"""The signed-in user's own account: changing the password, deleting the account."""

from fastapi import APIRouter, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Integer, bindparam
from sqlmodel import Field, delete, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from blogapi.db import RequestBody, SessionDep
from blogapi.errors import error_responses
from blogapi.security import check_password, hash_password
from blogapi.users import (
    TOKEN_IS_CURRENT,
    CurrentUser,
    NewPassword,
    TokenClaims,
    User,
    invalid_credentials,
    token_params,
    wrong_login,
)

PASSWORD_MAX_CHARS = 1024


class PasswordChange(RequestBody):
    current_password: str = Field(max_length=PASSWORD_MAX_CHARS)
    new_password: NewPassword


class AccountDeletion(RequestBody):
    password: str = Field(max_length=PASSWORD_MAX_CHARS)


_PASSWORD_HASH = select(User.password_hash).where(
    User.id == bindparam("user_id", type_=Integer)
)


router = APIRouter(
    prefix="/users/me", tags=["users"], responses=error_responses(400, 401, 403)
)


async def _check_password(session: AsyncSession, user: User, password: str) -> None:
    """Refuse `password` unless it is the user's.

    bcrypt runs after the session has given its connection back to the pool, so a burst
    of these requests does not keep others from the database. The write that follows
    checks the token again, in the statement that changes the user's row.
    """
    found = await session.exec(_PASSWORD_HASH, params={"user_id": user.id})
    password_hash = found.first()
    await session.close()
    if password_hash is None:
        raise invalid_credentials()  # the account was deleted meanwhile
    if not (await run_in_threadpool(check_password, password, password_hash)).matches:
        raise wrong_login()


@router.put(
    "/password",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Change your password; every earlier token stops working",
)
async def change_password(
    user: CurrentUser, claims: TokenClaims, body: PasswordChange, session: SessionDep
) -> None:
    await _check_password(session, user, body.current_password)
    password_hash = await run_in_threadpool(hash_password, body.new_password)
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
    user: CurrentUser, claims: TokenClaims, body: AccountDeletion, session: SessionDep
) -> None:
    await _check_password(session, user, body.password)
    # One statement: the database removes the posts and votes with the user, and its
    # triggers take the votes off the counts of the posts that remain.
    deleted = await session.exec(
        delete(User)
        .where(TOKEN_IS_CURRENT)
        .execution_options(synchronize_session=False),
        params=token_params(claims),
    )
    if deleted.rowcount == 0:
        raise invalid_credentials()  # the token was revoked while bcrypt ran
    await session.commit()
