"""Settings, read once from the environment or a `.env` file."""

import logging
import os
import secrets
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url

log = logging.getLogger("blogapi")

MIN_SECRET_KEY_LENGTH = 32
MIN_METRICS_TOKEN_LENGTH = 16
SECRET_KEY_NEEDED = (
    f"SECRET_KEY must be set to at least {MIN_SECRET_KEY_LENGTH} characters "
    "(only SQLite may leave it unset); generate one with: "
    'python -c "import secrets; print(secrets.token_urlsafe(48))"'
)


METRICS_TOKEN_NEEDED = (
    f"METRICS_TOKEN must be at least {MIN_METRICS_TOKEN_LENGTH} characters; generate "
    'one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
)
METRICS_DIR_NEEDED = (
    "METRICS_DIR must be an absolute path to a directory of the server's own, "
    "e.g. /run/blogapi/metrics"
)


class MissingSecretKey(ValueError):
    pass


class Settings(BaseSettings):
    # A refused value is never repeated in the error: it may be a secret.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    database_url: str = "sqlite:///./blogapi.db"
    secret_key: str = ""
    access_token_expire_minutes: int = Field(default=60, ge=1)
    cors_origins: Annotated[list[str], NoDecode] = []
    bcrypt_rounds: int = Field(default=12, ge=4, le=31)
    db_max_connections: int = Field(default=16, ge=1)
    db_pool_timeout: float = Field(default=10, gt=0)
    db_statement_timeout: float = Field(default=10, gt=0)
    db_prepared_statements: bool = False
    migrate_on_start: bool = False
    log_format: Literal["text", "json"] = "text"
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    redis_url: str = ""
    login_max_failures: int = Field(default=5, ge=1)
    login_max_failures_per_address: int = Field(default=20, ge=1)
    login_window_seconds: int = Field(default=60, ge=1)
    host: str = ""
    port: int = Field(default=8000, ge=1, le=65535)
    web_concurrency: int = Field(default=os.cpu_count() or 1, ge=1)
    public_url: str = ""
    """Where clients reach the site, e.g. `https://blog.example.com`: links the API hands
    out are built on it (relative when it is empty), never on a request's Host."""
    smtp_host: str = ""
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_user: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_starttls: bool = True
    emails_from: str = ""
    reset_token_minutes: int = Field(default=15, ge=1, le=24 * 60)
    metrics_token: SecretStr = SecretStr("")
    """Turns GET /metrics on, for `Authorization: Bearer <METRICS_TOKEN>` only."""
    metrics_dir: str = ""
    """Where gunicorn's workers keep their metrics files (emptied at each start);
    `<temp dir>/blogapi-metrics-<PORT>` when empty (see blogapi.server)."""
    commit: str = Field(
        default="",
        validation_alias=AliasChoices(
            "BLOGAPI_COMMIT", "SOURCE_VERSION", "HEROKU_SLUG_COMMIT"
        ),
        description="The commit this code was built from; else the git checkout's HEAD",
    )

    @field_validator("database_url")
    @classmethod
    def normalise_postgres_url(cls, url: str) -> str:
        """Accept `postgres://` as PaaS hosts give it, and use psycopg (3) whatever driver
        is named: the one libpq driver, for the app and the migrations alike."""
        scheme, _, rest = url.partition("://")
        if scheme in ("postgres", "postgresql") or scheme.startswith("postgresql+"):
            return "postgresql+psycopg://" + rest
        return url

    @field_validator("cors_origins", mode="before")
    @classmethod
    def split_origins(cls, value: str | list[str]) -> list[str]:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("public_url")
    @classmethod
    def check_public_url(cls, url: str) -> str:
        """An http(s) URL with no trailing slash, so `f"{public_url}/path"` is right."""
        if url and not url.startswith(("http://", "https://")):
            raise ValueError(
                "PUBLIC_URL must start with http:// or https://, "
                "e.g. https://blog.example.com"
            )
        return url.rstrip("/")

    @field_validator("secret_key")
    @classmethod
    def long_enough(cls, key: str) -> str:
        if key and len(key) < MIN_SECRET_KEY_LENGTH:
            raise ValueError(SECRET_KEY_NEEDED)
        return key

    @field_validator("metrics_token")
    @classmethod
    def long_enough_token(cls, token: SecretStr) -> SecretStr:
        if 0 < len(token.get_secret_value()) < MIN_METRICS_TOKEN_LENGTH:
            raise ValueError(METRICS_TOKEN_NEEDED)
        return token

    @field_validator("metrics_dir")
    @classmethod
    def absolute_metrics_dir(cls, folder: str) -> str:
        if folder and not Path(folder).is_absolute():
            raise ValueError(METRICS_DIR_NEEDED)
        return folder

    def require_secret_key(self) -> None:
        """At start-up: SQLite without SECRET_KEY uses a key kept beside the database file
        (made on the first start); any other database needs SECRET_KEY."""
        if self.secret_key:
            return
        if not self.is_sqlite:
            raise MissingSecretKey(SECRET_KEY_NEEDED)
        self.secret_key = _local_secret_key(self.sqlite_path)

    @model_validator(mode="after")
    def require_email_settings(self) -> "Settings":
        """Reset links need the site's address and a sender once email is on."""
        if self.smtp_host and not (self.public_url and self.emails_from):
            raise ValueError(
                "SMTP_HOST is set, so PUBLIC_URL (the site that shows the password "
                "reset form, e.g. https://blog.example.com) and EMAILS_FROM (the "
                "sender, e.g. blog@example.com) must be set too"
            )
        return self

    @property
    def is_sqlite(self) -> bool:
        return make_url(self.database_url).get_backend_name() == "sqlite"

    @property
    def metrics_enabled(self) -> bool:
        """Metrics are collected and served only when METRICS_TOKEN is set."""
        return bool(self.metrics_token.get_secret_value())

    @property
    def workers(self) -> int:
        """Worker processes: WEB_CONCURRENCY, but never more than there are connections."""
        return min(self.web_concurrency, self.db_max_connections)

    @property
    def pool_size(self) -> int:
        """Each worker's share of DB_MAX_CONNECTIONS."""
        return self.db_max_connections // self.workers

    @property
    def sqlite_path(self) -> Path | None:
        """The SQLite database's file; None for an in-memory one or another database."""
        database = make_url(self.database_url).database
        if not self.is_sqlite or not database or database == ":memory:":
            return None
        return Path(database)


def _local_secret_key(database: Path | None) -> str:
    """A key kept beside the SQLite file, so tokens survive restarts and work in every worker."""
    if database is None:
        return secrets.token_urlsafe(48)
    key_file = database.with_name(database.name + ".secret")
    if not key_file.exists():
        log.warning("SECRET_KEY is not set: using a generated key kept in %s", key_file)
        candidate = key_file.with_name(f"{key_file.name}.{os.getpid()}")
        descriptor = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as key:
            key.write(secrets.token_urlsafe(48))
        try:
            os.link(candidate, key_file)
        except FileExistsError:
            pass
        finally:
            candidate.unlink()
    return key_file.read_text().strip()


settings = Settings()
