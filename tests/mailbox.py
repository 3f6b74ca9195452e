"""A real SMTP server (aiosmtpd) on localhost that keeps the messages it receives, for
the tests of emailed links: in-process apps and server processes send to it alike."""

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from typing import Any

from aiosmtpd.controller import Controller

from tests.servers import free_port

LINK = re.compile(r"\S+/(?:reset-password|verify-email)\?token=([\w-]+)")
WAIT_SECONDS = 30
"""How long a message sent after a response may take to arrive: generous, as a loaded
machine is slow; an arrival ends the wait at once."""


class Inbox:
    """An aiosmtpd handler that keeps every message, or refuses them all."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[EmailMessage] = []
        self.refuse = False

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse:
            return "554 Transaction failed: refused by the test"
        message = message_from_bytes(envelope.content, policy=default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 OK"

    def texts(self) -> list[str]:
        """The text part of each message received."""
        texts = []
        for message in self.messages:
            body = message.get_body(("plain",))
            assert body is not None
            texts.append(body.get_content())
        return texts

    def links(self) -> list[str]:
        """Every link received (reset or verification), in order."""
        return [
            match.group(0) for text in self.texts() for match in LINK.finditer(text)
        ]

    def tokens(self) -> list[str]:
        """The token of each link received."""
        return [token for text in self.texts() for token in LINK.findall(text)]

    def token(self) -> str:
        """The token of the one link received."""
        (token,) = self.tokens()
        return token

    def wait_for_messages(self, count: int) -> None:
        """Until `count` messages are in (a server mails after it has answered)."""
        deadline = time.monotonic() + WAIT_SECONDS
        while len(self.messages) < count:
            assert time.monotonic() < deadline, (
                f"{len(self.messages)} of {count} messages arrived in {WAIT_SECONDS} s"
            )
            time.sleep(0.05)


@contextmanager
def smtp_server() -> Iterator[Inbox]:
    """An SMTP server on 127.0.0.1 at `inbox.port`, until the block ends."""
    inbox = Inbox(free_port())
    controller = Controller(inbox, hostname="127.0.0.1", port=inbox.port)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()
