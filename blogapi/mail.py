"""Email through SMTP (SMTP_HOST, SMTP_PORT, SMTP_USER, SMTP_PASSWORD, SMTP_STARTTLS,
EMAILS_FROM), with the standard library. Sending blocks: run it in a thread."""

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from blogapi.config import settings

SMTP_TIMEOUT_SECONDS = 10
"""For the connection and each command: a mail server that hangs fails the send."""


def email_configured() -> bool:
    return bool(settings.smtp_host)


def send_email(to: str, subject: str, text: str) -> None:
    """Send a plain-text email; raises OSError or smtplib.SMTPException on failure."""
    message = EmailMessage()
    message["From"] = settings.emails_from
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid()
    # Plain ASCII goes as it is, so a link reads the same in any mail viewer; anything
    # else is encoded.
    message.set_content(text, cte="7bit" if text.isascii() else None)
    with smtplib.SMTP(
        settings.smtp_host, settings.smtp_port, timeout=SMTP_TIMEOUT_SECONDS
    ) as smtp:
        if settings.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context())
        if settings.smtp_user:
            smtp.login(settings.smtp_user, settings.smtp_password.get_secret_value())
        smtp.send_message(message)
