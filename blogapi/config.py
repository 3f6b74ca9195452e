"""Settings, read once from the environment or a `.env` file.

A setting that can't be used stops every entry point (the server, uvicorn, alembic,
make-admin) with one line per problem on stderr: the variable, what is wrong and a right
value, never the value itself (it may be a secret).
"""

import ipaddress
import logging
import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, get_args
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

log = logging.getLogger("blogapi")

MIN_SECRET_KEY_LENGTH = 32
GENERATE_SECRET_KEY = (
    'generate one with: python -c "import secrets; print(secrets.token_urlsafe(48))"'
)
MIN_METRICS_TOKEN_LENGTH = 16
SECRET_KEY_NEEDED = (
    f"SECRET_KEY must be set to at least {MIN_SECRET_KEY_LENGTH} characters "
    f"(only SQLite may leave it unset); {GENERATE_SECRET_KEY}"
)
DATABASE_URL_EXAMPLE = (
    "use e.g. postgresql://user:password@host:5432/blogapi or sqlite:///./blogapi.db"
)
REDIS_URL_EXAMPLE = (
    "use e.g. redis://localhost:6379/0 or rediss://:password@host:6380/0"
)
REDIS_SCHEMES = ("redis", "rediss", "unix")
FORWARDED_ALLOW_IPS_EXAMPLE = (
    "use e.g. FORWARDED_ALLOW_IPS=127.0.0.1 or FORWARDED_ALLOW_IPS=10.0.0.0/8,192.0.2.7"
)
BOUND_WORDS = (
    ("ge", "of at least"),
    ("gt", "above"),
    ("le", "of at most"),
    ("lt", "below"),
)

REFRESH_TOKEN_MAX_DAYS = 365
REFRESH_TOKEN_DAYS_NEEDED = (
    "REFRESH_TOKEN_EXPIRE_DAYS must be a whole number of days from 1 to "
    f"{REFRESH_TOKEN_MAX_DAYS}, e.g. 30"
)


METRICS_TOKEN_NEEDED = (
    f"METRICS_TOKEN must be at least {MIN_METRICS_TOKEN_LENGTH} characters; generate "
    'one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
)
METRICS_DIR_NEEDED = (
    "METRICS_DIR must be an absolute path to a directory of the server's own, "
    "e.g. /run/blogapi/metrics"
)
SENTRY_DSN_EXAMPLE = "https://<public key>@o0.ingest.sentry.io/<project id>"

OTLP_PROTOCOL = "http/protobuf"
"""The one OTLP transport shipped (opentelemetry-exporter-otlp-proto-http)."""


class SettingsError(ValueError):
    """Settings that can't be used: one line per problem, naming the variable; never
    its value."""


class MissingSecretKey(SettingsError):
    pass


def _first_set(environ: Mapping[str, str], *names: str) -> tuple[str, str]:
    """The first of `names` set to something, and its value; else the last, and ""."""
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return name, value
    return names[-1], ""


def traces_requested(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether to export traces (blogapi.tracing). OpenTelemetry's variables are the
    SDK's own, read from the environment as the SDK reads them (not from `.env`), so
    they are not settings here. An OTLP endpoint turns traces on; OTEL_SDK_DISABLED=true
    or OTEL_TRACES_EXPORTER=none turns them off."""
    _, endpoint = _first_set(
        environ, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    disabled = environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    return bool(endpoint) and not disabled and exporter != "none"


def otel_problem(environ: Mapping[str, str] = os.environ) -> str | None:
    """What is wrong with the OpenTelemetry variables while traces are on, in one line."""
    if not traces_requested(environ):
        return None
    _, exporter = _first_set(environ, "OTEL_TRACES_EXPORTER")
    if exporter.lower() not in ("", "otlp"):
        return (
            f"OTEL_TRACES_EXPORTER={exporter} is not supported: "
            "use otlp (the default) or none"
        )
    name, protocol = _first_set(
        environ, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"
    )
    if protocol not in ("", OTLP_PROTOCOL):
        return (
            f"{name}={protocol} is not supported: blogapi ships the OTLP exporter "
            f"over HTTP only, so use {OTLP_PROTOCOL} (the default, on a collector's "
            "port 4318)"
        )
    name, endpoint = _first_set(
        environ, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not _is_http_url(endpoint):
        return f"{name} must be an http(s) URL, e.g. http://otel-collector:4318"
    return None


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        return False


def sentry_dsn_problem(dsn: str) -> str | None:
    """What keeps `dsn` from being a Sentry DSN, in one line that doesn't repeat it."""
    if not _is_http_url(dsn):
        missing = "an http(s) scheme and a host"
    elif not urlsplit(dsn).username:
        missing = "a public key before the @"
    elif not urlsplit(dsn).path.rstrip("/").rpartition("/")[2].isdigit():
        missing = "a project id at the end of its path"
    else:
        return None
    return (
        f"SENTRY_DSN needs {missing}: copy the project's DSN from Sentry, "
        f"e.g. {SENTRY_DSN_EXAMPLE}"
    )


class Settings(BaseSettings):
    # An invalid value is never echoed back: it may be a secret (SECRET_KEY, SENTRY_DSN).
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    database_url: str = "sqlite:///./blogapi.db"
    secret_key: str = ""
    access_token_expire_minutes: int = Field(default=15, ge=1)
    refresh_token_expire_days: int = 30
    """How long a refresh token stays usable; each refresh hands out a new one."""
    cors_origins: Annotated[list[str], NoDecode] = []
    bcrypt_rounds: int = Field(default=12, ge=4, le=31)
    db_max_connections: int = Field(default=16, ge=1)
    db_pool_timeout: float = Field(default=10, gt=0, allow_inf_nan=False)
    db_statement_timeout: float = Field(default=10, gt=0, allow_inf_nan=False)
    db_prepared_statements: bool = False
    migrate_on_start: bool = False
    log_format: Literal["text", "json"] = "text"
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    redis_url: str = ""
    login_max_failures: int = Field(default=5, ge=1)
    login_max_failures_per_address: int = Field(default=20, ge=1)
    login_window_seconds: int = Field(default=60, ge=1)
    signup_max_per_address: int = Field(default=20, ge=1)
    signup_window_seconds: int = Field(default=3600, ge=1)
    forwarded_allow_ips: Annotated[list[str], NoDecode] = ["127.0.0.1"]
    """The peers (proxies) whose X-Forwarded-For and X-Forwarded-Proto headers the server
    believes: IP addresses and networks, or `*` for every peer (blogapi.server)."""
    host: str = ""
    port: int = Field(default=8000, ge=1, le=65535)
    web_concurrency: int = Field(default=os.cpu_count() or 1, ge=1)
    public_url: str = ""
    """Where clients reach the site, e.g. `https://blog.example.com`: links the API hands
    out are built on it (relative when it is empty), never on a request's Host; emailed
    links too, unless FRONTEND_URL is set."""
    frontend_url: str = ""
    """Where people open the links emailed to them (`{FRONTEND_URL}/reset-password?...`),
    when a front end elsewhere shows those pages; empty: PUBLIC_URL, where the API serves
    them itself."""
    smtp_host: str = ""
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_user: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_starttls: bool = True
    emails_from: str = ""
    reset_token_minutes: int = Field(default=15, ge=1, le=24 * 60)
    require_email_verification: bool = False
    """True: posting, editing and voting wait until the user has used the link emailed
    at registration (blogapi.email_verification); needs SMTP_HOST."""
    verify_token_hours: int = Field(default=48, ge=1, le=30 * 24)
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
    sentry_dsn: SecretStr = SecretStr("")
    """Where to report unhandled errors (blogapi.error_reports); none when empty."""
    sentry_environment: str = Field(default="production", min_length=1)

    @field_validator("database_url")
    @classmethod
    def normalise_postgres_url(cls, url: str) -> str:
        """Accept `postgres://` as PaaS hosts give it, and use psycopg (3) whatever driver
        is named: the one libpq driver, for the app and the migrations alike."""
        scheme, _, rest = url.partition("://")
        if scheme in ("postgres", "postgresql") or scheme.startswith("postgresql+"):
            url = "postgresql+psycopg://" + rest
        _check_database_url(url)
        return url

    @field_validator("redis_url")
    @classmethod
    def check_redis_url(cls, url: str) -> str:
        if url:
            _check_redis_url(url)
        return url

    @field_validator("cors_origins", mode="before")
    @classmethod
    def split_origins(cls, value: str | list[str]) -> list[str]:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("forwarded_allow_ips", mode="before")
    @classmethod
    def split_forwarded_allow_ips(cls, value: str | list[str]) -> list[str]:
        if isinstance(value, str):
            value = value.split(",")
        entries = [entry.strip() for entry in value if entry.strip()]
        _check_forwarded_allow_ips(entries)
        return entries

    @field_validator("public_url", "frontend_url")
    @classmethod
    def check_site_url(cls, url: str, info: ValidationInfo) -> str:
        """An http(s) URL with no trailing slash, so `f"{public_url}/path"` is right."""
        name = str(info.field_name).upper()
        if url and not url.startswith(("http://", "https://")):
            raise ValueError(
                f"{name} must start with http:// or https://, "
                "e.g. https://blog.example.com"
            )
        if url and not urlsplit(url).hostname:
            raise ValueError(f"{name} names no host: use e.g. https://blog.example.com")
        return url.rstrip("/")

    @field_validator("refresh_token_expire_days", mode="wrap")
    @classmethod
    def whole_days(cls, value: object, parse: ValidatorFunctionWrapHandler) -> int:
        try:
            days: int = parse(value)
        except ValidationError:
            raise ValueError(REFRESH_TOKEN_DAYS_NEEDED) from None
        if not 1 <= days <= REFRESH_TOKEN_MAX_DAYS:
            raise ValueError(REFRESH_TOKEN_DAYS_NEEDED)
        return days

    @field_validator("sentry_dsn")
    @classmethod
    def check_sentry_dsn(cls, dsn: SecretStr) -> SecretStr:
        problem = dsn.get_secret_value() and sentry_dsn_problem(dsn.get_secret_value())
        if problem:
            raise ValueError(problem)
        return dsn

    @field_validator("secret_key")
    @classmethod
    def long_enough(cls, key: str) -> str:
        if key and len(key) < MIN_SECRET_KEY_LENGTH:
            raise ValueError(
                f"SECRET_KEY is too short ({len(key)} characters; at least "
                f"{MIN_SECRET_KEY_LENGTH} are needed): {GENERATE_SECRET_KEY}"
            )
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
        """Emailed links need the site's address and a sender once email is on, and
        verification needs email."""
        if self.smtp_host and not (self.email_links_url and self.emails_from):
            raise ValueError(
                "SMTP_HOST is set, so FRONTEND_URL or PUBLIC_URL (the site that emailed "
                "links open, e.g. https://blog.example.com) and "
                "EMAILS_FROM (the sender, e.g. blog@example.com) must be set too"
            )
        if self.require_email_verification and not self.smtp_host:
            raise ValueError(
                "REQUIRE_EMAIL_VERIFICATION is true, so SMTP_HOST (the mail server that "
                "sends the verification links, e.g. smtp.example.com) must be set too"
            )
        return self

    @model_validator(mode="after")
    def check_otel_variables(self) -> "Settings":
        """OpenTelemetry's variables are the SDK's, not settings; they are checked here
        so that a wrong one stops the start as any wrong setting does."""
        problem = otel_problem()
        if problem:
            raise ValueError(problem)
        return self

    @property
    def reports_errors(self) -> bool:
        """Whether unhandled errors go to Sentry (SENTRY_DSN is set)."""
        return bool(self.sentry_dsn.get_secret_value())

    @property
    def email_links_url(self) -> str:
        """What emailed links are built on: FRONTEND_URL, else PUBLIC_URL."""
        return self.frontend_url or self.public_url

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


def _check_database_url(url: str) -> None:
    """A URL SQLAlchemy reads, for PostgreSQL or SQLite; the messages never show it."""
    if not url:
        raise ValueError(f"DATABASE_URL is empty: {DATABASE_URL_EXAMPLE}")
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(
            "DATABASE_URL is not a database URL (it does not read as "
            f"scheme://user:password@host:port/database): {DATABASE_URL_EXAMPLE}"
        ) from None
    except ValueError:  # the port is no number
        raise ValueError(_bad_database_port()) from None
    try:
        parsed.get_dialect()
    except NoSuchModuleError:
        raise ValueError(
            f'DATABASE_URL is not a database URL ("{parsed.drivername}" is no known '
            f"scheme): {DATABASE_URL_EXAMPLE}"
        ) from None
    if parsed.get_backend_name() not in ("postgresql", "sqlite"):
        raise ValueError(
            f'DATABASE_URL names a "{parsed.get_backend_name()}" database: blogapi runs '
            f"on PostgreSQL or SQLite; {DATABASE_URL_EXAMPLE}"
        )
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise ValueError(_bad_database_port())


def _bad_database_port() -> str:
    return (
        "DATABASE_URL has a port that is not a number from 1 to 65535: "
        + DATABASE_URL_EXAMPLE
    )


def _check_redis_url(url: str) -> None:
    """A URL redis-py connects with; the messages never show it."""
    scheme, separator, _ = url.partition("://")
    if not separator or scheme not in REDIS_SCHEMES:
        named = f' ("{scheme}" is not one)' if separator and scheme.isalnum() else ""
        raise ValueError(
            f"REDIS_URL must start with redis://, rediss:// or unix://{named}: "
            + REDIS_URL_EXAMPLE
        )
    try:
        parts = urlsplit(url)
    except ValueError:  # a [ without its ]
        raise ValueError(
            f"REDIS_URL has a host that can't be read: {REDIS_URL_EXAMPLE}"
        ) from None
    try:
        port = parts.port
    except ValueError:  # no number, or out of range
        port = 0
    if port == 0:
        raise ValueError(
            "REDIS_URL has a port that is not a number from 1 to 65535: "
            + REDIS_URL_EXAMPLE
        )
    database = parts.path.strip("/")
    if scheme == "unix" and not database:
        raise ValueError(
            "REDIS_URL names no socket: use e.g. unix:///run/redis/redis.sock"
        )
    if scheme != "unix" and database and not database.isdigit():
        raise ValueError(
            "REDIS_URL's database (the path after the host) is not a number: "
            + REDIS_URL_EXAMPLE
        )


def _check_forwarded_allow_ips(entries: list[str]) -> None:
    """What gunicorn and uvicorn both read the same way: `*` alone, or IP addresses and
    networks (gunicorn refuses a network with host bits set); the messages never show
    the value."""
    if "*" in entries and len(entries) > 1:
        raise ValueError(
            "FORWARDED_ALLOW_IPS is either * (every peer) or a list of addresses, not "
            f"both: {FORWARDED_ALLOW_IPS_EXAMPLE}"
        )
    for number, entry in enumerate(entries, start=1):
        if entry == "*":
            continue
        try:
            ipaddress.ip_network(entry)
        except ValueError:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                problem = "is not an IP address or network"
            else:
                problem = (
                    "is a network with host bits set (write 10.0.0.0/8, not 10.0.0.1/8)"
                )
            raise ValueError(
                f"FORWARDED_ALLOW_IPS entry {number} {problem}: "
                + FORWARDED_ALLOW_IPS_EXAMPLE
            ) from None


def load_settings(**values: Any) -> Settings:
    """Settings from the environment and `.env`, and `values` over them; SettingsError
    if any can't be used."""
    try:
        return Settings(**values)
    except ValidationError as error:
        raise SettingsError(
            "\n".join(_problem(details) for details in error.errors())
        ) from None


def _problem(details: ErrorDetails) -> str:
    """One line for one of pydantic's errors, built from where and what, never from the
    input: the variable, what is wrong, and a right value."""
    context = details.get("ctx", {})
    if details["type"] == "value_error":  # the validators above: whole lines
        return str(context["error"])
    name = str(details["loc"][0]) if details["loc"] else ""
    field = Settings.model_fields.get(name)
    variable = name.upper()
    if field is None:
        return f"{variable or 'a setting'} can't be used: {details['msg']}"
    expected, kind = _expected(field), _kind(field)
    example = f", e.g. {variable}={_example(field)}" if _example(field) else ""
    if expected == kind:
        return f"{variable} must be {kind}{example}"
    if details["type"].startswith(("greater_than", "less_than")):
        return f"{variable} is out of range: use {expected}{example}"
    return f"{variable} is not {kind}: use {expected}{example}"


def _kind(field: FieldInfo) -> str:
    kinds = {int: "a whole number", float: "a number", bool: "true or false"}
    if field.annotation in kinds:
        return kinds[field.annotation]
    choices = get_args(field.annotation)
    if choices and all(isinstance(choice, str) for choice in choices):
        return "one of " + ", ".join(choices)
    return "a valid value"


def _expected(field: FieldInfo) -> str:
    """What the field takes, e.g. "a whole number from 1 to 65535"."""
    limits = {
        words: bound
        for rule in field.metadata
        for name, words in BOUND_WORDS
        if (bound := getattr(rule, name, None)) is not None
    }
    if "of at least" in limits and "of at most" in limits:
        return f"{_kind(field)} from {limits['of at least']} to {limits['of at most']}"
    return " ".join(
        [_kind(field), *(f"{words} {bound}" for words, bound in limits.items())]
    )


def _example(field: FieldInfo) -> str:
    default = field.get_default(call_default_factory=True)
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, (int, float, str)) and default != "":
        return str(default)
    return ""


def print_settings_error(error: SettingsError) -> None:
    """Each problem on a line of stderr, no traceback."""
    for line in str(error).splitlines():
        print(f"blogapi: {line}", file=sys.stderr, flush=True)


def exit_for(error: SettingsError) -> NoReturn:
    """Stop the process: each problem on a line of stderr, no traceback."""
    print_settings_error(error)
    raise SystemExit(2)


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except SettingsError as error:
        exit_for(error)


settings = _settings_or_exit()
