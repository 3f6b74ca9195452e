"""Password reset by email: POST /password-recovery mails a single-use link
(blogapi.email_links) to the site's front end, whose form sends its token to
POST /reset-password. Without a front end of its own, the link opens the API's page
(blogapi.link_pages). A token expires after RESET_TOKEN_MINUTES.

A completed reset also verifies the email (the link reached it) and ends every session.
"""

import logging
from datetime import timedelta
from typing import Annotated

import pydantic
from fastapi import APIRouter, BackgroundTasks, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import EmailStr
from sqlalchemy import Integer, and_, bindparam
from sqlmodel import Field, SQLModel, col, update

from blogapi.config import settings
from blogapi.db import SessionDep
from blogapi.email_links import EmailedLink, LinkToken, token_field
from blogapi.errors import InvalidToken, MalformedBody, TooManyAttempts, error_responses
from blogapi.http_metrics import MeteredRoute
from blogapi.mail import email_configured
from blogapi.model_base import RequestBody, example
from blogapi.resources import Resources
from blogapi.security import hash_password
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

INVALID_TOKEN = InvalidToken.default_detail
TOO_MANY_REQUESTS = "Too many password recovery requests"


class PasswordResetToken(LinkToken, table=True):
    __tablename__ = "password_reset_tokens"


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
    token: str = token_field()
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


RESET_LINKS = EmailedLink(
    PasswordResetToken,
    kind="password-reset",
    path="/reset-password",
    subject="Reset your password",
    text=reset_text,
    lifetime=lambda: timedelta(minutes=settings.reset_token_minutes),
    recipient=and_(col(User.email) == bindparam("email"), col(User.is_active)),
)
_SET_PASSWORD = (
    update(User)
    .where(col(User.id) == bindparam("user_id", type_=Integer), col(User.is_active))
    .values(
        password_hash=bindparam("new_hash"),
        token_version=User.token_version + 1,
        # The link reached the address: it is the user's.
        email_verified=True,
    )
    .execution_options(synchronize_session=False)
)


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
        background.add_task(RESET_LINKS.send, resources.engine, email)
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
    user_id = await RESET_LINKS.use(session, body.token)
    await session.close()  # the token is used up; bcrypt runs with no connection held
    if user_id is None:
        raise InvalidToken()
    password_hash = await run_in_threadpool(hash_password, body.new_password)
    changed = await session.exec(
        _SET_PASSWORD, params={"user_id": user_id, "new_hash": password_hash}
    )
    if changed.rowcount == 0:
        raise InvalidToken()
    # The user's other links die with the password they were sent to replace.
    await RESET_LINKS.forget_user(session, user_id)
    await session.commit()
