"""Each test gets an empty database: SQLite by default, PostgreSQL when TEST_DATABASE_URL is set."""

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_scratch = Path(tempfile.mkdtemp(prefix="blogapi-tests-"))
os.environ["DATABASE_URL"] = os.environ.get(
    "TEST_DATABASE_URL", f"sqlite:///{_scratch / 'test.db'}"
)
os.environ["SECRET_KEY"] = "test-secret-key-that-is-long-enough-for-hs256"
os.environ["BCRYPT_ROUNDS"] = "4"
os.environ.pop("CORS_ORIGINS", None)

from fastapi.testclient import TestClient
from sqlalchemy import text

from blogapi.main import app
from blogapi.server import migrate
from tests.factories import engine

TABLES = ("votes", "posts", "password_reset_tokens", "users", "revoked_tokens")


@pytest.fixture(scope="session", autouse=True)
def schema() -> None:
    migrate()


@pytest.fixture(autouse=True)
def empty_database(schema: None) -> None:
    """Empty every table before the test, so a run that was cut short leaves no trace."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
            )
        else:
            for table in TABLES:
                connection.execute(text(f"DELETE FROM {table}"))
            connection.execute(text("DELETE FROM sqlite_sequence"))


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client
