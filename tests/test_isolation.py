"""The suite owns its environment: a developer's `.env` and shell settings (an SMTP
server, a PUBLIC_URL, a DATABASE_URL, a REDIS_URL) change nothing in it, and no test
mails anyone but a sink it started itself."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from blogapi.config import settings
from tests.servers import ROOT, free_port


def test_the_settings_are_the_tests_own() -> None:
    assert settings.smtp_host == ""
    assert settings.public_url == ""
    assert settings.redis_url == ""
    assert settings.cors_origins == []
    assert settings.database_url.startswith(("sqlite", "postgresql"))
    assert settings.secret_key == "test-secret-key-that-is-long-enough-for-hs256"


class Sink:
    def __init__(self) -> None:
        self.received: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(envelope.content)
        return "250 OK"


@pytest.fixture
def developer_smtp() -> Iterator[tuple[Sink, int]]:
    """An SMTP server a developer's settings would name: this test's own sink."""
    sink, port = Sink(), free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


def test_a_developer_s_dotenv_and_environment_change_nothing(
    tmp_path: Path, developer_smtp: tuple[Sink, int]
) -> None:
    sink, port = developer_smtp
    developer = {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(port),
        "SMTP_STARTTLS": "false",
        "EMAILS_FROM": "dev@example.com",
        "PUBLIC_URL": "https://dev.example.com",
        "DATABASE_URL": "postgresql://dev:secret@127.0.0.1:1/devdb",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "CORS_ORIGINS": "https://dev.example.com",
    }
    (tmp_path / ".env").write_text(
        "".join(f"{name}={value}\n" for name, value in developer.items())
    )
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in {"TEST_DATABASE_URL", "TEST_REDIS_URL"}
    }
    finished = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "--rootdir", str(ROOT),
         f"{ROOT}/tests/test_isolation.py::test_the_settings_are_the_tests_own",
         f"{ROOT}/tests/test_password_reset.py", f"{ROOT}/tests/test_paging.py"],
        cwd=tmp_path, env={**environment, **developer},
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip

    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    assert " passed" in finished.stdout
    assert sink.received == []
