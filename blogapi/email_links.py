"""Single-use links emailed to a user: password reset (blogapi.password_reset) and email
verification (blogapi.email_verification) each have a kind of link, built here.

A link is `{FRONTEND_URL or PUBLIC_URL}{path}?token=...`. Its token is 256 random bits, so
the database keeps only its SHA-256 (whoever reads the table can't use what is there),
with the user and the time it expires. Using a token deletes it.
"""

import logging
import smtplib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import ColumnElement, Integer, bindparam, insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import Field, SQLModel, col, delete, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from blogapi import metrics
from blogapi.config import settings
from blogapi.mail import send_email
from blogapi.model_base import UTCDateTime, example, utc_now
from blogapi.security import SHA256_HEX_CHARS, opaque_token, token_hash
from blogapi.users import User

log = logging.getLogger("blogapi")

LINK_TOKEN_MAX_CHARS = 128
"""Ours are 43 characters."""
EXAMPLE_LINK_TOKEN = "kP0v3yXb2Qm9_sW4rLx7tZ1cN8eH5aJ6uD0fG3iO2qY"
"""The shape of a real one; no token has it, so it answers 400."""
_NO_SYNC = {"synchronize_session": False}


class LinkToken(SQLModel):
    """The columns of a kind of link's token table."""

    token_hash: str = Field(primary_key=True, max_length=SHA256_HEX_CHARS)
    user_id: int = Field(foreign_key="users.id", ondelete="CASCADE", index=True)
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)


def token_field() -> Any:
    """A request body's `token`: the one of an emailed link."""
    return Field(
        max_length=LINK_TOKEN_MAX_CHARS,
        description="The `token` of the emailed link",
        schema_extra=example(EXAMPLE_LINK_TOKEN),
    )


class EmailedLink:
    """One kind of link: its token table, the page it opens, its email, and for whom
    one is issued (`recipient`, a users-table condition on the bound `email`, and on
    any other parameters `send` is given)."""

    def __init__(
        self,
        table: type[LinkToken],
        *,
        kind: str,
        path: str,
        subject: str,
        text: Callable[[str], str],
        lifetime: Callable[[], timedelta],
        recipient: ColumnElement[bool],
    ) -> None:
        self.kind = kind
        """Its `kind` in `blogapi_emails_total`, and in the log."""
        self.path = path
        self.subject = subject
        self.text = text
        self.lifetime = lifetime
        expires_at = col(table.expires_at)
        user_id = col(table.user_id)
        self._forget_expired = (
            delete(table)
            .where(expires_at < bindparam("now", type_=UTCDateTime))
            .execution_options(**_NO_SYNC)
        )
        self._issue = (
            insert(table.metadata.tables[str(table.__tablename__)])
            .from_select(
                ["token_hash", "user_id", "expires_at"],
                select(
                    bindparam("token_hash"),
                    col(User.id),
                    bindparam("expires_at", type_=UTCDateTime),
                ).where(recipient),
            )
            .returning(user_id)
        )
        """A token for the recipient, if there is one, in one statement."""
        self._use = (
            delete(table)
            .where(col(table.token_hash) == bindparam("token_hash"))
            .returning(user_id, expires_at)
            .execution_options(**_NO_SYNC)
        )
        """Whoever runs this first for a token has it: a concurrent use finds none."""
        self._forget_user = (
            delete(table)
            .where(
                or_(
                    user_id == bindparam("user_id", type_=Integer),
                    expires_at < bindparam("now", type_=UTCDateTime),
                )
            )
            .execution_options(**_NO_SYNC)
        )

    async def send(self, engine: AsyncEngine, email: str, **recipient: Any) -> None:
        """Issue a token to the recipient with this email, if there is one, and mail it
        the link. Runs after the response is sent; failures are logged (never the
        token)."""
        token = opaque_token()
        now = utc_now()
        try:
            async with AsyncSession(engine) as session:
                await session.exec(self._forget_expired, params={"now": now})
                issued = await session.exec(
                    self._issue,
                    params={
                        **recipient,
                        "email": email,
                        "token_hash": token_hash(token),
                        "expires_at": now + self.lifetime(),
                    },
                )
                user_id = issued.scalar()
                await session.commit()
        except (DBAPIError, PoolTimeoutError):
            log.exception("%s: could not store a token", self.kind)
            return
        if user_id is None:
            return
        link = f"{settings.email_links_url}{self.path}?token={token}"
        try:
            await run_in_threadpool(send_email, email, self.subject, self.text(link))
        except (OSError, smtplib.SMTPException) as error:
            metrics.EMAILS.labels(self.kind, "failed").inc()
            log.error(
                "%s: could not email user %d through %s:%d: %s",
                self.kind,
                user_id,
                settings.smtp_host,
                settings.smtp_port,
                error,
            )
            return
        metrics.EMAILS.labels(self.kind, "sent").inc()
        log.info("%s: emailed a link to user %d", self.kind, user_id)

    async def use(self, session: AsyncSession, token: str) -> int | None:
        """The user of an unexpired token, which is used up; None for any other."""
        used = await session.exec(self._use, params={"token_hash": token_hash(token)})
        found = used.first()
        if found is None or found.expires_at <= utc_now():
            return None
        return int(found.user_id)

    async def forget_user(self, session: AsyncSession, user_id: int) -> None:
        """Delete the user's other links of this kind (and every expired one)."""
        await session.exec(
            self._forget_user, params={"user_id": user_id, "now": utc_now()}
        )
