"""Password reset by email: POST /password-recovery mails a single-use link to the
site's front end (FRONTEND_URL, else PUBLIC_URL), whose form sends its token to
POST /reset-password. Without a front end of its own, the link opens the API's page
(blogapi.reset_page).

A token is 256 random bits, so the database keeps only its SHA-256: whoever reads the
table can't use what is there. It expires after RESET_TOKEN_MINUTES and is deleted when
used.
"""

import logging
import smtplib
from datetime import datetime, timedelta
from typing import Annotated

import pydantic
from fastapi import APIRouter, BackgroundTasks, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import EmailStr
from sqlalchemy import Integer, bindparam, insert, or_
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import Field, SQLModel, col, delete, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from blogapi import metrics
from blogapi.config import settings
from blogapi.db import SessionDep
from blogapi.errors import InvalidToken, MalformedBody, TooManyAttempts, error_responses
from blogapi.http_metrics import MeteredRoute
from blogapi.mail import email_configured, send_email
from blogapi.model_base import RequestBody, UTCDateTime, example, utc_now
from blogapi.resources import Resources
from blogapi.security import SHA256_HEX_CHARS, hash_password, opaque_token, token_hash
from blogapi.throttle import client_address
from blogapi.users import (
    EMAIL_MAX_CHARS,
    EXAMPLE_EMAIL,
    EXAMPLE_NEW_PASSWORD,
    NewPassword,
    User,
    normal_email,
)

log = logging.getLogger("blogapi")

RESET_TOKEN_MAX_CHARS = 128
"""Ours are 43 characters."""
INVALID_TOKEN = InvalidToken.default_detail
TOO_MANY_REQUESTS = "Too many password recovery requests"
SUBJECT = "Reset your password"
EMAIL_KIND = "password-reset"
"""The `kind` of `blogapi_emails_total` for reset links."""


class PasswordResetToken(SQLModel, table=True):
    __tablename__ = "password_reset_tokens"

    token_hash: str = Field(primary_key=True, max_length=SHA256_HEX_CHARS)
    user_id: int = Field(foreign_key="users.id", ondelete="CASCADE", index=True)
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)


RECOVERY_ACCEPTED = (
    "If an active account has this email, a password reset link is on its way"
)


class PasswordRecovery(RequestBody):
    email: EmailStr = Field(
        max_length=EMAIL_MAX_CHARS, schema_extra=example(EXAMPLE_EMAIL)
    )


class RecoveryAccepted(SQLModel):
    message: str = Field(
        default=RECOVERY_ACCEPTED, schema_extra=example(RECOVERY_ACCEPTED)
    )


class PasswordReset(RequestBody):
    token: str = Field(
        max_length=RESET_TOKEN_MAX_CHARS,
        description="The `token` of the emailed link",
        # The shape of a real one; no token has it, so it answers 400.
        schema_extra=example("kP0v3yXb2Qm9_sW4rLx7tZ1cN8eH5aJ6uD0fG3iO2qY"),
    )
    new_password: Annotated[
        NewPassword, pydantic.Field(examples=[EXAMPLE_NEW_PASSWORD])
    ]


def reset_text(link: str) -> str:
    return (
        "Someone (we hope you) asked to reset the password of your account.\n\n"
        f"To choose a new one, open this link within {settings.reset_token_minutes} "
        f"minutes. It works once.\n\n{link}\n\n"
        "If you did not ask for this, ignore this email: your password stays as it is.\n"
    )


_tokens = PasswordResetToken.metadata.tables["password_reset_tokens"]
_NO_SYNC = {"synchronize_session": False}
_FORGET_EXPIRED = (
    delete(PasswordResetToken)
    .where(col(PasswordResetToken.expires_at) < bindparam("now", type_=UTCDateTime))
    .execution_options(**_NO_SYNC)
)
_ISSUE = (
    insert(_tokens)
    .from_select(
        ["token_hash", "user_id", "expires_at"],
        select(
            bindparam("token_hash"),
            col(User.id),
            bindparam("expires_at", type_=UTCDateTime),
        ).where(col(User.email) == bindparam("email"), col(User.is_active)),
    )
    .returning(_tokens.c.user_id)
)
"""A token for the active account with the email, if there is one, in one statement."""
_USE = (
    delete(PasswordResetToken)
    .where(col(PasswordResetToken.token_hash) == bindparam("token_hash"))
    .returning(col(PasswordResetToken.user_id), col(PasswordResetToken.expires_at))
    .execution_options(**_NO_SYNC)
)
"""Whoever runs this first for a token has it: a second, concurrent use finds none."""
_SET_PASSWORD = (
    update(User)
    .where(col(User.id) == bindparam("user_id", type_=Integer), col(User.is_active))
    .values(
        password_hash=bindparam("new_hash"),
        token_version=User.token_version + 1,
    )
    .execution_options(**_NO_SYNC)
)
_FORGET_USED = (
    delete(PasswordResetToken)
    .where(
        or_(
            col(PasswordResetToken.user_id) == bindparam("user_id", type_=Integer),
            col(PasswordResetToken.expires_at) < bindparam("now", type_=UTCDateTime),
        )
    )
    .execution_options(**_NO_SYNC)
)
"""The user's other links die with the password they were sent to replace."""


async def send_reset_link(engine: AsyncEngine, email: str) -> None:
    """Issue a token to the active account with this email, if there is one, and mail it
    the link. Runs after the response is sent, so that takes the same time either way;
    failures are logged (never the token), and the caller has had its 202."""
    token = opaque_token()
    now = utc_now()
    try:
        async with AsyncSession(engine) as session:
            await session.exec(_FORGET_EXPIRED, params={"now": now})
            issued = await session.exec(
                _ISSUE,
                params={
                    "email": email,
                    "token_hash": token_hash(token),
                    "expires_at": now + timedelta(minutes=settings.reset_token_minutes),
                },
            )
            user_id = issued.scalar()
            await session.commit()
    except (DBAPIError, PoolTimeoutError):
        log.exception("password recovery: could not store a reset token")
        return
    if user_id is None:
        return
    link = f"{settings.email_links_url}/reset-password?token={token}"
    try:
        await run_in_threadpool(send_email, email, SUBJECT, reset_text(link))
    except (OSError, smtplib.SMTPException) as error:
        metrics.EMAILS.labels(EMAIL_KIND, "failed").inc()
        log.error(
            "password recovery: could not email user %d through %s:%d: %s",
            user_id,
            settings.smtp_host,
            settings.smtp_port,
            error,
        )
        return
    metrics.EMAILS.labels(EMAIL_KIND, "sent").inc()
    log.info("password recovery: emailed a reset link to user %d", user_id)


router = APIRouter(tags=["authentication"], route_class=MeteredRoute)


@router.post(
    "/password-recovery",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Email a password reset link",
    description="Answers 202 with the same body whether or not an active account has "
    "the email, and emails that account a link to `{FRONTEND_URL}/reset-password?token=`"
    "..., valid once for RESET_TOKEN_MINUTES (FRONTEND_URL defaults to PUBLIC_URL, "
    "where `GET /reset-password` serves a page that sets the password). Throttled like "
    "`POST /login`.",
    responses=error_responses(MalformedBody, TooManyAttempts(TOO_MANY_REQUESTS, 60)),
)
async def recover_password(
    body: PasswordRecovery,
    request: Request,
    background: BackgroundTasks,
    resources: Resources,
) -> RecoveryAccepted:
    email = normal_email(body.email)
    await resources.recovery_throttle.check(
        email, client_address(request), TOO_MANY_REQUESTS
    )
    if email_configured():
        resources.require_ready()
        background.add_task(send_reset_link, resources.engine, email)
    else:
        log.warning("password recovery: email is not configured (SMTP_HOST): not sent")
    return RecoveryAccepted()


@router.post(
    "/reset-password",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Set a new password with an emailed token; every earlier token stops "
    "working",
    responses=error_responses(MalformedBody, InvalidToken),
)
async def reset_password(body: PasswordReset, session: SessionDep) -> None:
    used = await session.exec(_USE, params={"token_hash": token_hash(body.token)})
    found = used.first()
    await session.close()  # the token is used up; bcrypt runs with no connection held
    if found is None or found.expires_at <= utc_now():
        raise InvalidToken()
    password_hash = await run_in_threadpool(hash_password, body.new_password)
    changed = await session.exec(
        _SET_PASSWORD,
        params={"user_id": found.user_id, "new_hash": password_hash},
    )
    if changed.rowcount == 0:
        raise InvalidToken()
    await session.exec(
        _FORGET_USED, params={"user_id": found.user_id, "now": utc_now()}
    )
    await session.commit()
