"""Settings from the environment or a .env file, and the CORS policy built from them.

Each test builds its own `Settings` from a cleaned environment; the app is never reloaded.
"""

import logging
import re
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from blogapi.config import (
    METRICS_DIR_NEEDED,
    METRICS_TOKEN_NEEDED,
    MIN_METRICS_TOKEN_LENGTH,
    MIN_SECRET_KEY_LENGTH,
    REFRESH_TOKEN_DAYS_NEEDED,
    SECRET_KEY_NEEDED,
    MissingSecretKey,
    Settings,
    SettingsError,
    load_settings,
    settings,
)
from blogapi.main import create_app

GOOD_KEY = "k" * MIN_SECRET_KEY_LENGTH


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget what conftest put in the environment for the app under test."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def load(**values: object) -> Settings:
    return Settings(_env_file=None, **values)


# DATABASE_URL


@pytest.mark.parametrize(
    ("given", "used"),
    [
        (
            "postgres://u:p@db.example:5432/app",
            "postgresql+psycopg://u:p@db.example:5432/app",
        ),
        ("postgresql://u@db.example/app", "postgresql+psycopg://u@db.example/app"),
        (
            "postgresql+psycopg://u@db.example/app",
            "postgresql+psycopg://u@db.example/app",
        ),
        (
            "postgresql+psycopg2://u@db.example/app",
            "postgresql+psycopg://u@db.example/app",
        ),
        (
            "postgresql+asyncpg://u@db.example/app",
            "postgresql+psycopg://u@db.example/app",
        ),
    ],
)
def test_postgres_urls_are_normalised(
    monkeypatch: pytest.MonkeyPatch, given: str, used: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", given)
    monkeypatch.setenv("SECRET_KEY", GOOD_KEY)

    settings = load()

    assert settings.database_url == used
    assert not settings.is_sqlite


def test_default_database_is_a_sqlite_file_in_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)

    settings = load()

    assert settings.is_sqlite
    assert settings.sqlite_path is not None
    assert settings.sqlite_path.resolve().parent == tmp_path.resolve()


# SECRET_KEY


@pytest.mark.parametrize(
    "url", ["postgres://u@db.example/app", "postgresql+psycopg://u@db.example/app"]
)
def test_postgresql_starts_only_with_a_secret_key(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """Loading the settings needs no key (the make-admin command and the migrations use
    them); starting the API does."""
    monkeypatch.setenv("DATABASE_URL", url)
    settings = load()

    with pytest.raises(MissingSecretKey) as failure:
        settings.require_secret_key()

    assert str(failure.value) == SECRET_KEY_NEEDED
    assert f"at least {MIN_SECRET_KEY_LENGTH} characters" in SECRET_KEY_NEEDED
    assert "secrets.token_urlsafe" in SECRET_KEY_NEEDED


@pytest.mark.parametrize("url", ["postgres://u@db.example/app", "sqlite:///app.db"])
def test_a_short_secret_key_is_refused(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("SECRET_KEY", "k" * (MIN_SECRET_KEY_LENGTH - 1))

    with pytest.raises(SettingsError) as failure:
        load_settings(_env_file=None)

    assert str(failure.value) == (
        f"SECRET_KEY is too short ({MIN_SECRET_KEY_LENGTH - 1} characters; at least "
        f"{MIN_SECRET_KEY_LENGTH} are needed): generate one with: "
        'python -c "import secrets; print(secrets.token_urlsafe(48))"'
    )


def test_postgresql_takes_a_key_of_the_minimum_length(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://u@db.example/app")
    monkeypatch.setenv("SECRET_KEY", GOOD_KEY)
    settings = load()

    settings.require_secret_key()

    assert settings.secret_key == GOOD_KEY


def test_sqlite_without_a_key_keeps_one_beside_the_database(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = tmp_path / "app.db"
    key_file = tmp_path / "app.db.secret"
    first = load(database_url=f"sqlite:///{database}")
    assert list(tmp_path.iterdir()) == []  # loading the settings writes nothing

    with caplog.at_level(logging.WARNING, logger="blogapi"):
        first.require_secret_key()

    assert key_file.read_text().strip() == first.secret_key
    assert len(first.secret_key) >= MIN_SECRET_KEY_LENGTH
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [path.name for path in tmp_path.iterdir()] == ["app.db.secret"]
    assert "SECRET_KEY is not set" in caplog.text
    assert str(key_file) in caplog.text

    caplog.clear()
    second = load(database_url=f"sqlite:///{database}")
    with caplog.at_level(logging.WARNING, logger="blogapi"):
        second.require_secret_key()

    assert second.secret_key == first.secret_key
    assert caplog.text == ""


def test_each_sqlite_database_gets_its_own_key(tmp_path: Path) -> None:
    one = load(database_url=f"sqlite:///{tmp_path / 'one.db'}")
    two = load(database_url=f"sqlite:///{tmp_path / 'two.db'}")

    one.require_secret_key()
    two.require_secret_key()

    assert one.secret_key != two.secret_key


def test_sqlite_uses_a_key_that_is_set(tmp_path: Path) -> None:
    settings = load(
        database_url=f"sqlite:///{tmp_path / 'app.db'}", secret_key=GOOD_KEY
    )

    settings.require_secret_key()

    assert settings.secret_key == GOOD_KEY
    assert list(tmp_path.iterdir()) == []


# Other settings, and the .env file


def test_values_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://u@db.example/app")
    monkeypatch.setenv("SECRET_KEY", GOOD_KEY)
    monkeypatch.setenv("ACCESS_TOKEN_EXPIRE_MINUTES", "15")
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example")

    settings = load()

    assert settings.access_token_expire_minutes == 15
    assert settings.cors_origins == ["https://a.example"]


def test_values_come_from_a_dotenv_file(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "DATABASE_URL=postgres://u@db.example/app\n"
        f"SECRET_KEY={GOOD_KEY}\n"
        "ACCESS_TOKEN_EXPIRE_MINUTES=5\n"
        "CORS_ORIGINS=https://a.example,https://b.example\n"
    )

    settings = Settings(_env_file=dotenv)

    assert settings.database_url == "postgresql+psycopg://u@db.example/app"
    assert settings.secret_key == GOOD_KEY
    assert settings.access_token_expire_minutes == 5
    assert settings.cors_origins == ["https://a.example", "https://b.example"]


def test_access_tokens_last_15_minutes_and_refresh_tokens_30_days_by_default() -> None:
    defaults = load(secret_key=GOOD_KEY)

    assert defaults.access_token_expire_minutes == 15
    assert defaults.refresh_token_expire_days == 30


@pytest.mark.parametrize("given", ["1", "7", "365"])
def test_refresh_token_expire_days_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    monkeypatch.setenv("REFRESH_TOKEN_EXPIRE_DAYS", given)

    assert load().refresh_token_expire_days == int(given)


@pytest.mark.parametrize("given", ["0", "-1", "366", "1.5", "30d", "", "1e9"])
def test_a_bad_refresh_token_expire_days_says_what_to_set_in_one_line(
    monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    monkeypatch.setenv("REFRESH_TOKEN_EXPIRE_DAYS", given)

    with pytest.raises(ValidationError) as failure:
        load()

    (error,) = failure.value.errors()
    assert error["msg"] == f"Value error, {REFRESH_TOKEN_DAYS_NEEDED}"
    assert "\n" not in REFRESH_TOKEN_DAYS_NEEDED
    assert "e.g. 30" in REFRESH_TOKEN_DAYS_NEEDED


@pytest.mark.parametrize(
    ("given", "origins"),
    [
        ("https://a.example", ["https://a.example"]),
        (
            " https://a.example , https://b.example:8080,",
            ["https://a.example", "https://b.example:8080"],
        ),
        ("*", ["*"]),
        ("", []),
    ],
)
def test_cors_origins_are_a_comma_separated_list(
    monkeypatch: pytest.MonkeyPatch, given: str, origins: list[str]
) -> None:
    monkeypatch.setenv("CORS_ORIGINS", given)

    assert load(database_url="sqlite://").cors_origins == origins


# CORS, as the app applies these settings


def cors_client(monkeypatch: pytest.MonkeyPatch, origins: str) -> TestClient:
    """An app built with CORS_ORIGINS=`origins`, parsed as the environment's would be."""
    parsed = load(database_url="sqlite://", cors_origins=origins).cors_origins
    monkeypatch.setattr(settings, "cors_origins", parsed)
    return TestClient(create_app())


def preflight(client: TestClient, origin: str) -> dict[str, str]:
    response = client.options(
        "/posts/",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "Authorization",
        },
    )
    return dict(response.headers)


def test_listed_origins_get_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    client = cors_client(monkeypatch, "https://a.example,https://b.example")

    allowed = client.get("/", headers={"Origin": "https://b.example"}).headers
    other = client.get("/", headers={"Origin": "https://evil.example"}).headers

    assert allowed["access-control-allow-origin"] == "https://b.example"
    assert allowed["access-control-allow-credentials"] == "true"
    assert allowed["access-control-expose-headers"] == "Link"
    assert "access-control-allow-origin" not in other
    assert preflight(client, "https://a.example")[
        "access-control-allow-credentials"
    ] == ("true")


@pytest.mark.parametrize("origins", ["*", "https://a.example,*"])
def test_any_origin_never_comes_with_credentials(
    monkeypatch: pytest.MonkeyPatch, origins: str
) -> None:
    client = cors_client(monkeypatch, origins)

    simple = client.get("/", headers={"Origin": "https://any.example"}).headers
    checked = preflight(client, "https://any.example")

    assert simple["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in simple
    assert checked["access-control-allow-origin"] in {"*", "https://any.example"}
    assert "access-control-allow-credentials" not in checked


def test_no_origins_means_no_cors_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    client = cors_client(monkeypatch, "")

    headers = client.get("/", headers={"Origin": "https://a.example"}).headers

    assert "access-control-allow-origin" not in headers


# PUBLIC_URL and FRONTEND_URL


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("", ""),
        ("https://blog.example.com", "https://blog.example.com"),
        ("https://blog.example.com/", "https://blog.example.com"),
        ("http://example.com/blog/", "http://example.com/blog"),
    ],
)
@pytest.mark.parametrize("name", ["PUBLIC_URL", "FRONTEND_URL"])
def test_site_urls_lose_their_trailing_slash(
    monkeypatch: pytest.MonkeyPatch, name: str, given: str, used: str
) -> None:
    monkeypatch.setenv(name, given)

    assert getattr(load(), name.lower()) == used


@pytest.mark.parametrize("given", ["blog.example.com", "ftp://blog.example.com", "/"])
@pytest.mark.parametrize("name", ["PUBLIC_URL", "FRONTEND_URL"])
def test_site_urls_must_be_http(
    monkeypatch: pytest.MonkeyPatch, name: str, given: str
) -> None:
    monkeypatch.setenv(name, given)

    with pytest.raises(ValidationError) as failure:
        load()

    (error,) = failure.value.errors()
    assert error["msg"] == (
        f"Value error, {name} must start with http:// or https://, "
        "e.g. https://blog.example.com"
    )
    assert "\n" not in error["msg"]


@pytest.mark.parametrize(
    ("values", "links"),
    [
        ({}, ""),
        ({"public_url": "https://api.example.com"}, "https://api.example.com"),
        ({"frontend_url": "https://blog.example.com"}, "https://blog.example.com"),
        (
            {
                "public_url": "https://api.example.com",
                "frontend_url": "https://blog.example.com/",
            },
            "https://blog.example.com",
        ),
    ],
)
def test_emailed_links_go_to_frontend_url_else_public_url(
    values: dict[str, str], links: str
) -> None:
    assert load(**values).email_links_url == links


# Email


@pytest.mark.parametrize(
    "values",
    [
        {"smtp_host": "mail.example.com"},
        {"smtp_host": "mail.example.com", "public_url": "https://blog.example.com"},
        {"smtp_host": "mail.example.com", "emails_from": "blog@example.com"},
    ],
)
def test_email_needs_a_public_url_and_a_sender(values: dict[str, str]) -> None:
    with pytest.raises(ValidationError) as failure:
        load(secret_key=GOOD_KEY, **values)

    assert "PUBLIC_URL" in str(failure.value)
    assert "FRONTEND_URL" in str(failure.value)
    assert "EMAILS_FROM" in str(failure.value)


@pytest.mark.parametrize("site", ["public_url", "frontend_url"])
def test_email_takes_either_site_url(site: str) -> None:
    configured = load(
        secret_key=GOOD_KEY,
        smtp_host="mail.example.com",
        emails_from="blog@example.com",
        **{site: "https://blog.example.com"},
    )

    assert configured.email_links_url == "https://blog.example.com"


def test_email_settings_and_their_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load(secret_key=GOOD_KEY)
    for name, value in {
        "SMTP_HOST": "mail.example.com",
        "SMTP_PORT": "2525",
        "SMTP_USER": "blog",
        "SMTP_PASSWORD": "never-shown",
        "SMTP_STARTTLS": "false",
        "EMAILS_FROM": "Blog <blog@example.com>",
        "PUBLIC_URL": "https://blog.example.com",
        "RESET_TOKEN_MINUTES": "30",
    }.items():
        monkeypatch.setenv(name, value)

    configured = load(secret_key=GOOD_KEY)

    assert (defaults.smtp_host, defaults.smtp_port, defaults.smtp_starttls) == (
        "",
        587,
        True,
    )
    assert (defaults.public_url, defaults.reset_token_minutes) == ("", 15)
    assert (configured.smtp_port, configured.smtp_starttls) == (2525, False)
    assert configured.smtp_password.get_secret_value() == "never-shown"
    assert "never-shown" not in repr(configured)
    assert configured.reset_token_minutes == 30


# METRICS_TOKEN and METRICS_DIR


def test_metrics_are_off_by_default() -> None:
    loaded = load()

    assert not loaded.metrics_enabled
    assert loaded.metrics_dir == ""


def test_a_short_metrics_token_is_refused_and_not_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = "secret-token"[: MIN_METRICS_TOKEN_LENGTH - 1]
    monkeypatch.setenv("METRICS_TOKEN", token)

    with pytest.raises(ValidationError) as failure:
        load()

    assert METRICS_TOKEN_NEEDED in str(failure.value)
    assert "METRICS_TOKEN must be at least 16 characters" in METRICS_TOKEN_NEEDED
    assert token not in str(failure.value)


def test_a_metrics_token_turns_metrics_on(monkeypatch: pytest.MonkeyPatch) -> None:
    token = "t" * MIN_METRICS_TOKEN_LENGTH
    monkeypatch.setenv("METRICS_TOKEN", token)
    monkeypatch.setenv("METRICS_DIR", "/run/blogapi/metrics")

    loaded = load()

    assert loaded.metrics_enabled
    assert loaded.metrics_token.get_secret_value() == token
    assert token not in repr(loaded)
    assert loaded.metrics_dir == "/run/blogapi/metrics"


@pytest.mark.parametrize("given", ["metrics", "./metrics", "~/metrics"])
def test_metrics_dir_must_be_absolute(
    monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    monkeypatch.setenv("METRICS_DIR", given)

    with pytest.raises(ValidationError, match=re.escape(METRICS_DIR_NEEDED)):
        load()
