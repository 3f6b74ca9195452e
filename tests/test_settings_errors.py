"""A setting that can't be used stops every entry point with one line on stderr: the
variable, what is wrong, a right value; a non-zero exit, no traceback, and no secret
(SECRET_KEY, SMTP_PASSWORD, the password in DATABASE_URL or REDIS_URL) printed.

The real commands run as processes, from a folder with no `.env`, with none of blogapi's
settings inherited but the ones a case sets: `python -m blogapi` with and without
`--reload`, the `blogapi` console script, `uvicorn blogapi.main:app`, `alembic upgrade
head` and `make-admin`. Every bad setting goes through `python -m blogapi`; two of them
(a secret and a password in a URL) through every other entry point.
"""

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from blogapi.config import (
    MIN_SECRET_KEY_LENGTH,
    SECRET_KEY_NEEDED,
    Settings,
    SettingsError,
    load_settings,
)
from blogapi.server import PortUnavailable, check_can_listen

ROOT = Path(__file__).resolve().parent.parent
SECRET = "tooshort-s3cret"
PASSWORD = "hunter2-pw"
GOOD_KEY = "settings-test-key-that-is-long-enough-for-hs256"
TIMEOUT_SECONDS = 60
"""Each command fails in 1 to 3 s; a loaded 2-CPU machine may take several times that.
A server that started instead of failing runs until then."""

SETTING_NAMES = {name.upper() for name in Settings.model_fields} | {
    "BLOGAPI_COMMIT",
    "SOURCE_VERSION",
    "HEROKU_SLUG_COMMIT",
}

SERVER = (sys.executable, "-m", "blogapi")
ENTRY_POINTS = {
    "python -m blogapi --reload": (*SERVER, "--reload"),
    "blogapi": (str(Path(sys.executable).with_name("blogapi")),),
    "uvicorn": (sys.executable, "-m", "uvicorn", "blogapi.main:app"),
    "alembic": (
        sys.executable,
        *("-m", "alembic", "-c", str(ROOT / "alembic.ini"), "upgrade", "head"),
    ),
    "make-admin": (*SERVER, "make-admin", "someone@example.com"),
}


@dataclass
class Case:
    env: dict[str, str]
    variable: str
    """The variable the last line names."""
    secrets: tuple[str, ...] = ()
    says: tuple[str, ...] = field(default=())
    """More that the last line says."""


CASES = {
    "secret key too short": Case(
        {"SECRET_KEY": SECRET},
        "SECRET_KEY",
        (SECRET,),
        (f"{len(SECRET)} characters", "secrets.token_urlsafe"),
    ),
    "secret key missing with postgresql": Case(
        {"DATABASE_URL": f"postgresql://blogapi:{PASSWORD}@127.0.0.1:9/blogapi"},
        "SECRET_KEY",
        (PASSWORD,),
        (SECRET_KEY_NEEDED,),
    ),
    "database url with an unknown scheme": Case(
        {"DATABASE_URL": f"postgresq://blogapi:{PASSWORD}@db.example:5432/blogapi"},
        "DATABASE_URL",
        (PASSWORD,),
        ('"postgresq" is no known scheme', "postgresql://user:password@host:5432"),
    ),
    "database url unparsable": Case(
        {"DATABASE_URL": f"blogapi:{PASSWORD}@db.example/blogapi"},
        "DATABASE_URL",
        (PASSWORD,),
        ("sqlite:///./blogapi.db",),
    ),
    "database url with a port that is no number": Case(
        {"DATABASE_URL": f"postgresql://blogapi:{PASSWORD}@db.example:54x32/blogapi"},
        "DATABASE_URL",
        (PASSWORD,),
        ("port",),
    ),
    "redis url with another scheme": Case(
        {"REDIS_URL": f"http://:{PASSWORD}@cache.example:6379/0"},
        "REDIS_URL",
        (PASSWORD,),
        ("redis://", "rediss://", "unix://"),
    ),
    "redis url with a port that is no number": Case(
        {"REDIS_URL": f"redis://:{PASSWORD}@cache.example:63x79/0"},
        "REDIS_URL",
        (PASSWORD,),
        ("port",),
    ),
    "port not a number": Case({"PORT": "abc"}, "PORT", says=("PORT=8000",)),
    "port out of range": Case({"PORT": "70000"}, "PORT", says=("1 to 65535",)),
    "int setting not a number": Case(
        {"BCRYPT_ROUNDS": "twelve"}, "BCRYPT_ROUNDS", says=("4 to 31",)
    ),
    "float setting not a number": Case(
        {"DB_POOL_TIMEOUT": "soon"}, "DB_POOL_TIMEOUT", says=("above 0",)
    ),
    "bool setting neither true nor false": Case(
        {"MIGRATE_ON_START": "maybe"}, "MIGRATE_ON_START", says=("true or false",)
    ),
    "smtp without a public url or sender": Case(
        {"SMTP_HOST": "mail.example.com", "SMTP_PASSWORD": PASSWORD},
        "SMTP_HOST",
        (PASSWORD,),
        ("PUBLIC_URL", "EMAILS_FROM"),
    ),
    "email verification without smtp": Case(
        {"REQUIRE_EMAIL_VERIFICATION": "true"},
        "REQUIRE_EMAIL_VERIFICATION",
        says=("SMTP_HOST",),
    ),
    "verify token hours of zero": Case(
        {"VERIFY_TOKEN_HOURS": "0"},
        "VERIFY_TOKEN_HOURS",
        says=("from 1 to 720", "VERIFY_TOKEN_HOURS=48"),
    ),
    "verify token hours not a number": Case(
        {"VERIFY_TOKEN_HOURS": "abc"},
        "VERIFY_TOKEN_HOURS",
        says=("from 1 to 720", "VERIFY_TOKEN_HOURS=48"),
    ),
    "forwarded allow ips with a name": Case(
        {"FORWARDED_ALLOW_IPS": "127.0.0.1, proxy.example"},
        "FORWARDED_ALLOW_IPS",
        says=("entry 2 is not an IP address or network", "=10.0.0.0/8"),
    ),
    "sign-up limit of zero": Case(
        {"SIGNUP_MAX_PER_ADDRESS": "0"},
        "SIGNUP_MAX_PER_ADDRESS",
        says=("at least 1", "SIGNUP_MAX_PER_ADDRESS=20"),
    ),
    "public url without a scheme": Case(
        {"PUBLIC_URL": "blog.example.com"},
        "PUBLIC_URL",
        says=("https://blog.example.com",),
    ),
}
EVERY_ENTRY_POINT = (
    "secret key too short",
    "database url with a port that is no number",
)


def settings_free_environment(**settings: str) -> dict[str, str]:
    """This process's environment without any of blogapi's settings, plus `settings`."""
    env = {
        name: value for name, value in os.environ.items() if name not in SETTING_NAMES
    }
    env["PYTHONPATH"] = str(ROOT)
    return {**env, **settings}


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str

    @property
    def last_line(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else ""


def run(command: tuple[str, ...], env: dict[str, str], cwd: Path) -> Finished:
    """Run the command in its own process group, killed whole if it outlives the
    timeout (a server that started instead of failing, and its workers)."""
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(
            f"{' '.join(command)} still ran after {TIMEOUT_SECONDS} s:\n{stderr}"
        )
    return Finished(process.returncode, stdout, stderr)


def assert_one_clear_line(
    done: Finished, variable: str, secrets: tuple[str, ...], says: tuple[str, ...]
) -> None:
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert done.last_line.startswith(f"blogapi: {variable} "), done.stderr
    for words in says:
        assert words in done.last_line, done.stderr
    for secret in secrets:
        assert secret not in done.stdout + done.stderr


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_python_m_blogapi_stops_in_one_line(case: Case, tmp_path: Path) -> None:
    done = run(SERVER, settings_free_environment(**case.env), tmp_path)

    assert_one_clear_line(done, case.variable, case.secrets, case.says)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr


@pytest.mark.parametrize("name", EVERY_ENTRY_POINT)
@pytest.mark.parametrize("entry_point", ENTRY_POINTS.values(), ids=ENTRY_POINTS.keys())
def test_every_entry_point_stops_in_one_line(
    entry_point: tuple[str, ...], name: str, tmp_path: Path
) -> None:
    case = CASES[name]
    if not Path(entry_point[0]).exists():
        pytest.skip("the project is not installed: pip install --no-deps -e .")

    done = run(entry_point, settings_free_environment(**case.env), tmp_path)

    assert_one_clear_line(done, case.variable, case.secrets, case.says)
    assert list(tmp_path.iterdir()) == []


def test_the_development_server_wants_a_secret_key_for_postgresql(
    tmp_path: Path,
) -> None:
    case = CASES["secret key missing with postgresql"]

    done = run(
        ENTRY_POINTS["python -m blogapi --reload"],
        settings_free_environment(**case.env),
        tmp_path,
    )

    assert_one_clear_line(done, case.variable, case.secrets, case.says)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 that something else listens on."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener.getsockname()[1]


@pytest.mark.parametrize(
    "command", [SERVER, (*SERVER, "--reload")], ids=["gunicorn", "reload"]
)
def test_a_port_in_use_is_named_with_how_to_pick_another(
    command: tuple[str, ...], taken_port: int, tmp_path: Path
) -> None:
    env = settings_free_environment(
        DATABASE_URL=f"sqlite:///{tmp_path / 'blogapi.db'}",
        SECRET_KEY=GOOD_KEY,
        HOST="127.0.0.1",
        PORT=str(taken_port),
        WEB_CONCURRENCY="1",
    )

    done = run(command, env, tmp_path)

    assert_one_clear_line(done, f"PORT {taken_port}", (GOOD_KEY,), ("PORT=",))
    assert "--port" in done.last_line


# The lines themselves, in this process


@pytest.mark.parametrize(
    ("values", "line"),
    [
        (
            {"secret_key": SECRET},
            (
                f"SECRET_KEY is too short ({len(SECRET)} characters; at least "
                f"{MIN_SECRET_KEY_LENGTH} are needed): generate one with: "
                'python -c "import secrets; print(secrets.token_urlsafe(48))"'
            ),
        ),
        (
            {"database_url": f"postgresq://u:{PASSWORD}@db.example/blogapi"},
            (
                'DATABASE_URL is not a database URL ("postgresq" is no known scheme): '
                "use e.g. postgresql://user:password@host:5432/blogapi or "
                "sqlite:///./blogapi.db"
            ),
        ),
        (
            {"database_url": f"mysql://u:{PASSWORD}@db.example/blogapi"},
            (
                'DATABASE_URL names a "mysql" database: blogapi runs on PostgreSQL or '
                "SQLite; use e.g. postgresql://user:password@host:5432/blogapi or "
                "sqlite:///./blogapi.db"
            ),
        ),
        (
            {"database_url": f"postgresql://u:{PASSWORD}@db.example:99999/blogapi"},
            (
                "DATABASE_URL has a port that is not a number from 1 to 65535: use e.g. "
                "postgresql://user:password@host:5432/blogapi or sqlite:///./blogapi.db"
            ),
        ),
        (
            {"redis_url": f"redis://:{PASSWORD}@cache.example:70000"},
            (
                "REDIS_URL has a port that is not a number from 1 to 65535: use e.g. "
                "redis://localhost:6379/0 or rediss://:password@host:6380/0"
            ),
        ),
        (
            {"redis_url": f"redis://:{PASSWORD}@cache.example/zero"},
            (
                "REDIS_URL's database (the path after the host) is not a number: use "
                "e.g. redis://localhost:6379/0 or rediss://:password@host:6380/0"
            ),
        ),
        (
            {"port": "abc"},
            (
                "PORT is not a whole number: use a whole number from 1 to 65535, "
                "e.g. PORT=8000"
            ),
        ),
        (
            {"port": "0"},
            "PORT is out of range: use a whole number from 1 to 65535, e.g. PORT=8000",
        ),
        (
            {"login_max_failures": "-1"},
            (
                "LOGIN_MAX_FAILURES is out of range: use a whole number of at least 1, "
                "e.g. LOGIN_MAX_FAILURES=5"
            ),
        ),
        (
            {"db_statement_timeout": "inf"},
            (
                "DB_STATEMENT_TIMEOUT is not a number: use a number above 0, "
                "e.g. DB_STATEMENT_TIMEOUT=10"
            ),
        ),
        (
            {"smtp_starttls": "perhaps"},
            "SMTP_STARTTLS must be true or false, e.g. SMTP_STARTTLS=true",
        ),
        (
            {"log_format": "xml"},
            "LOG_FORMAT must be one of text, json, e.g. LOG_FORMAT=text",
        ),
        (
            {"public_url": "https://"},
            "PUBLIC_URL names no host: use e.g. https://blog.example.com",
        ),
        (
            {"forwarded_allow_ips": "10.0.0.1/8"},
            (
                "FORWARDED_ALLOW_IPS entry 1 is a network with host bits set (write "
                "10.0.0.0/8, not 10.0.0.1/8): use e.g. FORWARDED_ALLOW_IPS=127.0.0.1 or "
                "FORWARDED_ALLOW_IPS=10.0.0.0/8,192.0.2.7"
            ),
        ),
        (
            {"forwarded_allow_ips": "*, 10.0.0.0/8"},
            (
                "FORWARDED_ALLOW_IPS is either * (every peer) or a list of addresses, "
                "not both: use e.g. FORWARDED_ALLOW_IPS=127.0.0.1 or "
                "FORWARDED_ALLOW_IPS=10.0.0.0/8,192.0.2.7"
            ),
        ),
        (
            {"require_email_verification": "true"},
            (
                "REQUIRE_EMAIL_VERIFICATION is true, so SMTP_HOST (the mail server that "
                "sends the verification links, e.g. smtp.example.com) must be set too"
            ),
        ),
        (
            {"verify_token_hours": "0"},
            (
                "VERIFY_TOKEN_HOURS is out of range: use a whole number from 1 to 720, "
                "e.g. VERIFY_TOKEN_HOURS=48"
            ),
        ),
        (
            {"verify_token_hours": "abc"},
            (
                "VERIFY_TOKEN_HOURS is not a whole number: use a whole number from 1 to "
                "720, e.g. VERIFY_TOKEN_HOURS=48"
            ),
        ),
        (
            {"signup_window_seconds": "an hour"},
            (
                "SIGNUP_WINDOW_SECONDS is not a whole number: use a whole number of at "
                "least 1, e.g. SIGNUP_WINDOW_SECONDS=3600"
            ),
        ),
    ],
)
def test_each_problem_is_one_line(values: dict[str, str], line: str) -> None:
    with pytest.raises(SettingsError) as failure:
        load_settings(_env_file=None, **values)

    assert str(failure.value) == line
    assert PASSWORD not in str(failure.value)


def test_several_problems_are_a_line_each() -> None:
    with pytest.raises(SettingsError) as failure:
        load_settings(_env_file=None, port="abc", secret_key=SECRET)

    lines = str(failure.value).splitlines()
    assert [line.split()[0] for line in lines] == ["SECRET_KEY", "PORT"]
    assert SECRET not in str(failure.value)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///./blogapi.db",
        "sqlite+aiosqlite:///app.db",
        "postgres://u:p@db.example:5432/app",
        "postgresql://u@/app?host=/run/postgresql",
        "postgresql+psycopg://u@[::1]:5432/app",
    ],
)
def test_database_urls_that_work(url: str) -> None:
    assert load_settings(_env_file=None, database_url=url, secret_key=GOOD_KEY)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "redis://localhost",
        "redis://localhost:6379/0",
        "rediss://:secret@cache.example:6380/1",
        "redis://[::1]:6379",
        "unix:///run/redis/redis.sock?db=2",
    ],
)
def test_redis_urls_that_work(url: str) -> None:
    assert load_settings(_env_file=None, redis_url=url).redis_url == url


def test_email_verification_with_smtp_works() -> None:
    loaded = load_settings(
        _env_file=None,
        require_email_verification="true",
        verify_token_hours="720",
        smtp_host="smtp.example.com",
        public_url="https://blog.example.com",
        emails_from="blog@example.com",
    )

    assert (loaded.require_email_verification, loaded.verify_token_hours) == (True, 720)


@pytest.mark.parametrize(
    ("value", "trusted"),
    [
        ("", []),
        ("*", ["*"]),
        ("127.0.0.1", ["127.0.0.1"]),
        (" 10.0.0.0/8, ::1 ,192.0.2.7,", ["10.0.0.0/8", "::1", "192.0.2.7"]),
        ("2001:db8::/32", ["2001:db8::/32"]),
    ],
)
def test_forwarded_allow_ips_that_work(value: str, trusted: list[str]) -> None:
    loaded = load_settings(_env_file=None, forwarded_allow_ips=value)
    assert loaded.forwarded_allow_ips == trusted


def test_a_host_that_is_not_this_machine_s_is_named(taken_port: int) -> None:
    """192.0.2.1 is kept for documentation: no machine has it."""
    with pytest.raises(PortUnavailable) as failure:
        check_can_listen("192.0.2.1", taken_port)

    assert str(failure.value).startswith("HOST 192.0.2.1 is not an address of this")
    assert "HOST=0.0.0.0" in str(failure.value)


def test_a_port_in_use_names_the_next_one(taken_port: int) -> None:
    with pytest.raises(PortUnavailable) as failure:
        check_can_listen("127.0.0.1", taken_port)

    assert str(failure.value) == (
        f"PORT {taken_port} is already in use on 127.0.0.1: stop what listens there, "
        f"or pick another port: PORT={taken_port + 1} or --port {taken_port + 1}"
    )
