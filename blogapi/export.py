"""GET /users/me/export: everything the signed-in user has here, as one JSON document.

The document is streamed in keyset batches (BATCH_ROWS posts, then votes, by id per
statement), each batch its own short statement on a connection taken in line and given
back before the batch is sent: no transaction or cursor stays open across batches, so a
large account holds no connection while a slow client reads, and a transaction-mode
pooler or the statement timeout sees only short statements. The document is therefore
not a snapshot: a post written or deleted during the export may or may not be in it.

A failure midway ends the response without the document's closing brackets (and the
server closes the connection before the chunked body's end), so no client can take a
cut-off document for a whole one. One export runs at a time per user (`OneAtATime`,
shared through Redis when REDIS_URL is set).
"""

import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from datetime import datetime
from typing import Any

import anyio
from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic_core import to_json
from sqlalchemy import Integer, bindparam
from sqlmodel import SQLModel, col, select
from starlette.types import Receive, Scope, Send

from blogapi.auth import CurrentUser
from blogapi.db import session_in_turn
from blogapi.errors import InvalidCredentials, TooManyAttempts, error_responses
from blogapi.http_metrics import MeteredRoute
from blogapi.model_base import EXAMPLE_ID, EXAMPLE_TIME, utc_now
from blogapi.posts import Post
from blogapi.resources import AppResources, Resources
from blogapi.throttle import Claim
from blogapi.users import EXAMPLE_EMAIL, User
from blogapi.votes import Vote

log = logging.getLogger("blogapi")

BATCH_ROWS = 500
"""Rows per statement."""
CLAIM_SECONDS = 60
"""How long an export's claim lasts unless the export extends it (it does, between
batches): a claim left by a process that died is free again after this."""
RETRY_SECONDS = 10
"""Retry-After for a second export while one is under way."""


class ExportedUser(SQLModel):
    id: int
    email: str
    created_at: datetime
    is_admin: bool
    is_active: bool
    email_verified: bool


class ExportedPost(SQLModel):
    id: int
    title: str
    content: str
    published: bool
    created_at: datetime
    votes: int


class ExportedVote(SQLModel):
    post_id: int
    created_at: datetime


class AccountExport(SQLModel):
    """The whole document: the account (no password hash), every post of the user,
    drafts included, oldest first, and every vote the user has given, by post id."""

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "exported_at": EXAMPLE_TIME,
                    "user": {
                        "id": EXAMPLE_ID,
                        "email": EXAMPLE_EMAIL,
                        "created_at": EXAMPLE_TIME,
                        "is_admin": False,
                        "is_active": True,
                        "email_verified": True,
                    },
                    "posts": [
                        {
                            "id": EXAMPLE_ID,
                            "title": "Hello, world",
                            "content": "My first post",
                            "published": True,
                            "created_at": EXAMPLE_TIME,
                            "votes": 1,
                        }
                    ],
                    "votes": [{"post_id": EXAMPLE_ID, "created_at": EXAMPLE_TIME}],
                }
            ]
        }
    }

    exported_at: datetime
    user: ExportedUser
    posts: list[ExportedPost]
    votes: list[ExportedVote]


def _columns(table: type[SQLModel], shown: type[SQLModel]) -> list[Any]:
    """The columns of `table` that the model `shown` has fields for, in its order."""
    return [getattr(table, name) for name in shown.model_fields]


_USER_ID = bindparam("user_id", type_=Integer)
_AFTER = bindparam("after", type_=Integer)
_LIMIT = bindparam("limit", type_=Integer)
# Each batch a range of an index: ix_posts_owner_id_id (migration 0006), and the votes'
# primary key (user_id, post_id). bench/export.py shows the plans.
POSTS_BATCH = (
    select(*_columns(Post, ExportedPost))
    .where(col(Post.owner_id) == _USER_ID, col(Post.id) > _AFTER)
    .order_by(col(Post.id))
    .limit(_LIMIT)
)
VOTES_BATCH = (
    select(*_columns(Vote, ExportedVote))
    .where(col(Vote.user_id) == _USER_ID, col(Vote.post_id) > _AFTER)
    .order_by(col(Vote.post_id))
    .limit(_LIMIT)
)


async def _items(
    resources: AppResources, statement: Any, key: str, user_id: int, claim: Claim
) -> AsyncGenerator[bytes, None]:
    """The user's rows from `statement`, as the items of a JSON array (commas
    included): one chunk per batch, read with a connection given back before the chunk
    goes out. `key` is the ordering column the next batch starts after.

    The rows' columns are the model's fields (`_columns`), so each row as a dict is
    written by pydantic's serializer exactly as the model would write it, at half the
    cost of building the models."""
    after, separator = 0, b""
    while True:
        params = {"user_id": user_id, "after": after, "limit": BATCH_ROWS}
        async with session_in_turn(resources) as session:
            rows = (await session.exec(statement, params=params)).all()
        if rows:
            yield separator + to_json([row._asdict() for row in rows])[1:-1]
            separator = b","
        if len(rows) < BATCH_ROWS:
            return
        after = getattr(rows[-1], key)
        await claim.keep()


async def _document(
    resources: AppResources, user: User, claim: Claim
) -> AsyncGenerator[bytes, None]:
    """AccountExport's JSON, piece by piece; the closing brackets come last, only once
    every batch has been read."""
    assert user.id is not None
    account = ExportedUser.model_validate(user, from_attributes=True)
    yield (
        b'{"exported_at":'
        + to_json(utc_now())
        + b',"user":'
        + account.model_dump_json().encode()
        + b',"posts":['
    )
    async with aclosing(_items(resources, POSTS_BATCH, "id", user.id, claim)) as posts:
        async for chunk in posts:
            yield chunk
    yield b'],"votes":['
    async with aclosing(
        _items(resources, VOTES_BATCH, "post_id", user.id, claim)
    ) as votes:
        async for chunk in votes:
            yield chunk
    yield b"]}"


class ExportResponse(StreamingResponse):
    """The streamed document. However the response ends (sent, failed midway, the
    client gone, or never started), the document's generator is closed and the
    export's claim released."""

    def __init__(
        self, document: AsyncGenerator[bytes, None], claim: Claim, user_id: int
    ) -> None:
        super().__init__(
            document,
            media_type="application/json",
            headers={
                "Content-Disposition": (
                    f'attachment; filename="blogapi-export-{user_id}.json"'
                ),
                "Cache-Control": "no-store",
            },
        )
        self.document = document
        self.claim = claim
        self.user_id = user_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except Exception:
            log.warning(
                "data export of user %d failed midway: the response ends without "
                "the document's end",
                self.user_id,
            )
            raise
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self.document.aclose()
                finally:
                    await self.claim.release()


router = APIRouter(prefix="/users", tags=["users"], route_class=MeteredRoute)


@router.get(
    "/me/export",
    summary="Download everything of yours: account, posts and votes",
    description="One JSON document, streamed: your account (without the password), "
    "every post of yours (drafts included) and every vote you have given. One export "
    "at a time per account. A response that ends before the document's closing `]}` "
    "(the connection closes early) failed midway: ask again.",
    responses={
        200: {
            "model": AccountExport,
            "description": "The document, as an attachment",
            "headers": {
                "Content-Disposition": {
                    "description": 'attachment; filename="blogapi-export-<user id>.json"',
                    "schema": {"type": "string"},
                },
            },
        },
        **error_responses(InvalidCredentials, TooManyAttempts),
    },
)
async def export_account(user: CurrentUser, resources: Resources) -> ExportResponse:
    assert user.id is not None
    claim = await resources.exports.claim(str(user.id))
    if claim is None:
        raise TooManyAttempts(
            "An export of this account is already under way", RETRY_SECONDS
        )
    return ExportResponse(_document(resources, user, claim), claim, user.id)
