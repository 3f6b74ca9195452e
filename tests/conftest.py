"""Each test gets an empty database: SQLite by default, PostgreSQL when TEST_DATABASE_URL is set."""

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings
from pydantic import AliasChoices, SecretStr

# No deadline in either profile: how fast the machine is must not fail a test. "ci"
# (HYPOTHESIS_PROFILE=ci, which .ci/run sets) draws the same examples on every run and keeps
# no example database; "dev" draws new ones and keeps those that failed in .hypothesis/.
hypothesis_settings.register_profile("dev", deadline=None)
hypothesis_settings.register_profile(
    "ci", deadline=None, derandomize=True, database=None, print_blob=True
)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

TEST_VARIABLES = frozenset(
    {"TEST_DATABASE_URL", "TEST_REDIS_URL", "HYPOTHESIS_PROFILE", "BROWSER_PATH"}
    | {"BLOGAPI_SLOW_TESTS", "CI"}
)
"""The variables the tests read (CONTRIBUTING.md lists them)."""
SYSTEM_VARIABLES = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "TZ", "LANG", "TMPDIR"}
    | {"VIRTUAL_ENV", "DISPLAY", "COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR"}
)
SYSTEM_PREFIXES = ("LC_", "PYTEST_", "PYTHON", "XDG_", "SSL_CERT_")


def _keep(name: str) -> bool:
    return name in TEST_VARIABLES | SYSTEM_VARIABLES or name.startswith(SYSTEM_PREFIXES)


def _as_environment(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


# The suite and every process it starts see the tests' settings alone: nothing of the
# developer's environment (an SMTP server, a PUBLIC_URL, a REDIS_URL) or `.env` file.
# The app is imported from a folder without a `.env`; then every setting is put in the
# environment, where it wins over any `.env` a child process might read.
for _name in [name for name in os.environ if not _keep(name)]:
    del os.environ[_name]
_scratch = Path(tempfile.mkdtemp(prefix="blogapi-tests-"))
os.environ["DATABASE_URL"] = os.environ.get(
    "TEST_DATABASE_URL", f"sqlite:///{_scratch / 'test.db'}"
)
os.environ["SECRET_KEY"] = "test-secret-key-that-is-long-enough-for-hs256"
os.environ["BCRYPT_ROUNDS"] = "4"
# Tests register many users from one address (a TestClient's is "testclient"): the
# sign-up limit is tested with limits of its own (tests/test_signups.py).
os.environ["SIGNUP_MAX_PER_ADDRESS"] = "100000"
_cwd = os.getcwd()
os.chdir(_scratch)
try:
    from blogapi.config import Settings, settings
finally:
    os.chdir(_cwd)
for _field, _info in Settings.model_fields.items():
    _alias = _info.validation_alias
    _names = _alias.choices if isinstance(_alias, AliasChoices) else [_field]
    os.environ[str(_names[0]).upper()] = _as_environment(getattr(settings, _field))

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
