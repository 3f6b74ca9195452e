"""Verified emails: while REQUIRE_EMAIL_VERIFICATION is true, registration mails a
single-use link (blogapi.email_links) to `{FRONTEND_URL}/verify-email?token=...`, valid
for VERIFY_TOKEN_HOURS. POST /verify-email uses its token; POST /verify-email/resend
mails a new link. Until then the user may log in and read, and `VerifiedUser`
(blogapi.auth) refuses their posts, edits and votes. Without a front end of its own,
the link opens the API's page (blogapi.link_pages).
"""

import logging
from datetime import timedelta

from fastapi import APIRouter, BackgroundTasks, Request, status
from sqlalchemy import Integer, and_, bindparam
from sqlmodel import Field, SQLModel, col, update

from blogapi.auth import CurrentUser
from blogapi.config import settings
from blogapi.db import SessionDep
from blogapi.email_links import EmailedLink, LinkToken, token_field
from blogapi.errors import (
    Conflict,
    InvalidCredentials,
    InvalidToken,
    MalformedBody,
    TooManyAttempts,
    error_responses,
)
from blogapi.http_metrics import MeteredRoute
from blogapi.mail import email_configured
from blogapi.model_base import RequestBody, example
from blogapi.resources import AppResources, Resources
from blogapi.throttle import client_address
from blogapi.users import User

log = logging.getLogger("blogapi")

INVALID_LINK = "This verification link is invalid, used or expired; ask for a new one"
ALREADY_VERIFIED = "Your email is already verified"
TOO_MANY_REQUESTS = "Too many verification emails asked for"
LINK_SENT = "A new verification link is on its way to your email"


class EmailVerificationToken(LinkToken, table=True):
    __tablename__ = "email_verification_tokens"


def verify_text(link: str) -> str:
    return (
        "Welcome! To confirm that this email address is yours, open this link within "
        f"{settings.verify_token_hours} hours. It works once.\n\n{link}\n\n"
        "If you did not sign up, ignore this email: nothing happens without the link.\n"
    )


VERIFY_LINKS = EmailedLink(
    EmailVerificationToken,
    kind="email-verification",
    path="/verify-email",
    subject="Verify your email",
    text=verify_text,
    lifetime=lambda: timedelta(hours=settings.verify_token_hours),
    recipient=and_(
        col(User.id) == bindparam("user_id", type_=Integer),
        col(User.email) == bindparam("email"),
        ~col(User.email_verified),
    ),
)


def mail_verification_link(
    background: BackgroundTasks, resources: AppResources, user: User
) -> None:
    """Mail the user a new link once the response is sent (if email is configured)."""
    if not email_configured():
        log.warning("email verification: email is not configured (SMTP_HOST): not sent")
        return
    background.add_task(
        VERIFY_LINKS.send, resources.engine, user.email, user_id=user.id
    )


class EmailVerification(RequestBody):
    token: str = token_field()


class VerificationSent(SQLModel):
    message: str = Field(default=LINK_SENT, schema_extra=example(LINK_SENT))


_VERIFY = (
    update(User)
    .where(col(User.id) == bindparam("user_id", type_=Integer))
    .values(email_verified=True)
    .execution_options(synchronize_session=False)
)

router = APIRouter(tags=["users"], route_class=MeteredRoute)


@router.post(
    "/verify-email",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Verify your email with the token of the emailed link",
    description="No sign-in needed: the link may be opened on another device. "
    "`GET /verify-email` serves a page that sends the token here.",
    responses=error_responses(MalformedBody, InvalidToken(INVALID_LINK)),
)
async def verify_email(body: EmailVerification, session: SessionDep) -> None:
    user_id = await VERIFY_LINKS.use(session, body.token)
    if user_id is None:
        raise InvalidToken(INVALID_LINK)
    await session.exec(_VERIFY, params={"user_id": user_id})
    await VERIFY_LINKS.forget_user(session, user_id)
    await session.commit()


@router.post(
    "/verify-email/resend",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Email yourself a new verification link",
    description="Takes no body. The link is valid for VERIFY_TOKEN_HOURS; earlier "
    "links keep working until they expire. Throttled like `POST /password-recovery`.",
    responses=error_responses(
        InvalidCredentials,
        Conflict(ALREADY_VERIFIED),
        TooManyAttempts(TOO_MANY_REQUESTS, 60),
    ),
)
async def resend_verification_email(
    user: CurrentUser,
    request: Request,
    background: BackgroundTasks,
    resources: Resources,
) -> VerificationSent:
    if user.email_verified:
        raise Conflict(ALREADY_VERIFIED)
    await resources.verification_throttle.check(
        user.email, client_address(request), TOO_MANY_REQUESTS
    )
    mail_verification_link(background, resources, user)
    return VerificationSent()
