"""Each test gets an empty database: SQLite by default, PostgreSQL when TEST_DATABASE_URL is set."""

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

# No deadline in either profile: how fast the machine is must not fail a test. "ci"
# (HYPOTHESIS_PROFILE=ci, which .ci/run sets) draws the same examples on every run and keeps
# no example database; "dev" draws new ones and keeps those that failed in .hypothesis/.
hypothesis_settings.register_profile("dev", deadline=None)
hypothesis_settings.register_profile(
    "ci", deadline=None, derandomize=True, database=None, print_blob=True
)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

_scratch = Path(tempfile.mkdtemp(prefix="blogapi-tests-"))
os.environ["DATABASE_URL"] = os.environ.get(
    "TEST_DATABASE_URL", f"sqlite:///{_scratch / 'test.db'}"
)
os.environ["SECRET_KEY"] = "test-secret-key-that-is-long-enough-for-hs256"
os.environ["BCRYPT_ROUNDS"] = "4"
os.environ.pop("CORS_ORIGINS", None)

from fastapi.testclient import TestClient

from blogapi.main import app
from blogapi.server import migrate
from tests.factories import empty_tables


@pytest.fixture(scope="session", autouse=True)
def schema() -> None:
    migrate()


@pytest.fixture(autouse=True)
def empty_database(schema: None) -> None:
    """Empty every table before the test, so a run that was cut short leaves no trace."""
    empty_tables()


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client
