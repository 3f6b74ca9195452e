"""`python -m blogapi make-admin`: real processes, given only DATABASE_URL."""

import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from blogapi.config import settings
from blogapi.migration_state import MigrationState
from tests.factories import create_user, create_user_and_login, login, set_admin
from tests.servers import free_port, scratch_database

(CODE_HEAD,) = MigrationState.of_this_code().heads

COMMAND_SECONDS = 60
ROOT = Path(__file__).resolve().parent.parent


def blogapi_command(
    *args: str,
    database_url: str,
    cwd: Path,
    program: tuple[str, ...] = (sys.executable, "-m", "blogapi"),
) -> subprocess.CompletedProcess[str]:
    """`python -m blogapi ARGS` (or `program` ARGS) with DATABASE_URL and nothing else of
    blogapi's set."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("SECRET_KEY", "BCRYPT_ROUNDS")
    }
    env["DATABASE_URL"] = database_url
    env["PYTHONPATH"] = str(ROOT)  # run elsewhere, so that nothing lands in the repo
    return subprocess.run(
        [*program, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=COMMAND_SECONDS,
        check=False,
    )


def test_make_admin_promotes_with_only_database_url_and_writes_nothing(
    client: TestClient, tmp_path: Path
) -> None:
    user, headers = create_user_and_login(client)
    assert client.get("/users/", headers=headers).status_code == 403

    done = blogapi_command(
        "make-admin",
        user["email"].upper(),
        database_url=settings.database_url,
        cwd=tmp_path,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{user['email']} (user {user['id']}) is now an admin.\n"
    assert client.get("/users/", headers=headers).status_code == 200
    assert list(tmp_path.iterdir()) == []
    if settings.sqlite_path is not None:
        secret = settings.sqlite_path.with_name(settings.sqlite_path.name + ".secret")
        assert not secret.exists()


def test_make_admin_revoke_demotes(client: TestClient, tmp_path: Path) -> None:
    user = create_user(client)
    set_admin(user["id"])
    headers = login(client, user["email"])

    done = blogapi_command(
        "make-admin",
        user["email"],
        "--revoke",
        database_url=settings.database_url,
        cwd=tmp_path,
    )

    assert done.returncode == 0, done.stderr
    assert (
        done.stdout == f"{user['email']} (user {user['id']}) is no longer an admin.\n"
    )
    assert client.get("/users/", headers=headers).status_code == 403


def test_make_admin_says_when_the_account_is_disabled(
    client: TestClient, tmp_path: Path
) -> None:
    user = create_user(client)
    admin = create_user(client)
    set_admin(admin["id"])
    client.patch(
        f"/users/{user['id']}",
        json={"is_active": False},
        headers=login(client, admin["email"]),
    )

    done = blogapi_command(
        "make-admin", user["email"], database_url=settings.database_url, cwd=tmp_path
    )

    assert done.returncode == 0, done.stderr
    assert (
        f"The account is disabled: an admin can enable it with PATCH /users/{user['id']}."
        in done.stdout
    )


def test_make_admin_of_an_unknown_email_fails_with_1(
    client: TestClient, tmp_path: Path
) -> None:
    create_user(client, email="ada@example.com")

    done = blogapi_command(
        "make-admin",
        "bob@example.com",
        database_url=settings.database_url,
        cwd=tmp_path,
    )

    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        "No user has the email bob@example.com: register it first (POST /users/).\n"
    )


def test_make_admin_refuses_a_database_behind_the_code_with_3(tmp_path: Path) -> None:
    with scratch_database("cli", revision="0005") as url:
        done = blogapi_command(
            "make-admin", "ada@example.com", database_url=url, cwd=tmp_path
        )

    assert done.returncode == 3
    assert (
        f"The database schema is at 0005, and this code needs {CODE_HEAD}"
        in done.stderr
    )
    assert "apply the migrations first" in done.stderr


def test_make_admin_on_a_database_without_tables_says_so(tmp_path: Path) -> None:
    (tmp_path / "empty.db").touch()
    url = f"sqlite:///{tmp_path / 'empty.db'}"

    done = blogapi_command(
        "make-admin", "ada@example.com", database_url=url, cwd=tmp_path
    )

    assert done.returncode == 3
    assert (
        f"The database schema is at base, and this code needs {CODE_HEAD}"
        in done.stderr
    )


def test_make_admin_with_the_database_unreachable_fails_with_3(tmp_path: Path) -> None:
    url = f"postgresql://blogapi:never-log-this@127.0.0.1:{free_port()}/blogapi"

    done = blogapi_command(
        "make-admin", "ada@example.com", database_url=url, cwd=tmp_path
    )

    assert done.returncode == 3
    assert done.stderr.startswith(
        f"database not reachable at 127.0.0.1:{url.rsplit(':', 1)[1].split('/')[0]}"
    )
    assert "never-log-this" not in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (("make-admin", "--help"), "--revoke"),
        (("--help",), "make-admin"),
    ],
)
def test_help(tmp_path: Path, args: tuple[str, ...], shown: str) -> None:
    url = f"sqlite:///{tmp_path / 'blogapi.db'}"

    done = blogapi_command(*args, database_url=url, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert shown in done.stdout


def test_make_admin_without_an_email_is_a_usage_error(tmp_path: Path) -> None:
    done = blogapi_command(
        "make-admin", database_url=settings.database_url, cwd=tmp_path
    )

    assert done.returncode == 2
    assert "the following arguments are required: email" in done.stderr


def test_make_admin_creates_no_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing.db'}"

    done = blogapi_command(
        "make-admin", "ada@example.com", database_url=url, cwd=tmp_path
    )

    assert done.returncode == 3
    assert done.stderr == (
        f"There is no database at {tmp_path / 'missing.db'}: set DATABASE_URL to the "
        "server's.\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_the_blogapi_console_script_is_python_m_blogapi(tmp_path: Path) -> None:
    """`pip install --no-deps -e .` (the README's install) puts a `blogapi` command beside
    the interpreter; it is the same entry point as `python -m blogapi`."""
    try:
        version("blogapi")
    except PackageNotFoundError:
        pytest.skip("the project is not installed: pip install --no-deps -e .")
    script = Path(sys.executable).with_name("blogapi")

    done = blogapi_command(
        "make-admin",
        "--help",
        database_url=settings.database_url,
        cwd=tmp_path,
        program=(str(script),),
    )

    assert done.returncode == 0, done.stderr
    assert "--revoke" in done.stdout
