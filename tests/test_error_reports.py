"""Error reports (blogapi.error_reports): an app made with SENTRY_DSN pointing at a
collector the test runs on 127.0.0.1 reports an unhandled error once, tagged with the
request id, and with nothing of what the request carried: no email or password (though
the route holds both), no query string, no token, no cookie.

The crashing routes are the test's own, added to an app made for it; the app itself
has no route that fails on purpose.
"""

import json
from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.security import OAuth2PasswordRequestForm
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError
from sqlmodel import insert

from blogapi import __version__
from blogapi.config import SENTRY_DSN_EXAMPLE, Settings, settings
from blogapi.db import SessionDep
from blogapi.health import running_commit
from blogapi.main import create_app
from blogapi.users import User
from tests.post_sink import PostSink

EMAIL = "report-canary@example.com"
PASSWORD = "canary password 3b7d20"
QUERY_MARKER = "querycanary5e1f"
TOKEN = "tokencanary0a9c"
COOKIE = "cookiecanary44d1"
ENVIRONMENT = "report-test"


class EnvelopeCollector(PostSink):
    """Sentry's envelope endpoint, for the DSN `dsn`: keeps every envelope."""

    PATH = "/api/1/envelope/"
    REPLY_TYPE = "application/json"
    REPLY = b"{}"

    @property
    def dsn(self) -> str:
        return f"http://public@127.0.0.1:{self.port}/1"

    def events(self) -> list[dict[str, Any]]:
        """The error events in the envelopes received (not sessions or client reports)."""
        envelopes = self.kept()
        return [
            payload
            for envelope in envelopes
            for kind, payload in envelope_items(envelope)
            if kind == "event"
        ]


def envelope_items(envelope: bytes) -> Iterator[tuple[str, Any]]:
    """(type, payload) of each item: a header line, then the payload, `length` bytes
    long if the header says, else up to the end of the line."""
    _, _, rest = envelope.partition(b"\n")
    while rest.strip():
        header_line, _, rest = rest.partition(b"\n")
        header = json.loads(header_line)
        if "length" in header:
            payload, rest = rest[: header["length"]], rest[header["length"] + 1 :]
        else:
            payload, _, rest = rest.partition(b"\n")
        yield header["type"], json.loads(payload) if payload.strip() else None


@pytest.fixture
def collector() -> Iterator[EnvelopeCollector]:
    with EnvelopeCollector() as running:
        yield running


@pytest.fixture
def reporting_app(
    monkeypatch: pytest.MonkeyPatch, collector: EnvelopeCollector
) -> FastAPI:
    """The app as made with SENTRY_DSN set, plus two routes that fail while they hold
    an email and a password: one raises, one breaks a unique constraint."""
    monkeypatch.setattr(settings, "sentry_dsn", SecretStr(collector.dsn))
    monkeypatch.setattr(settings, "sentry_environment", ENVIRONMENT)
    app = create_app()

    async def crash(form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> None:
        account = {"email": form.username, "password": form.password}
        raise RuntimeError(f"an account with {len(account)} fields")

    async def register_twice(
        form: Annotated[OAuth2PasswordRequestForm, Depends()], session: SessionDep
    ) -> None:
        account = {"email": form.username, "password_hash": form.password}
        for _ in range(2):
            await session.exec(insert(User).values(**account))

    app.add_api_route("/test-crash", crash, methods=["POST"])
    app.add_api_route("/test-register-twice", register_twice, methods=["POST"])
    return app


def fail(app: FastAPI, path: str) -> str:
    """Send a request that fails, carrying everything a request may carry, and stop the
    app (which sends what is queued); the request id it was answered with."""
    with TestClient(app) as client:
        response = client.post(
            f"{path}?next={QUERY_MARKER}",
            data={"username": EMAIL, "password": PASSWORD},
            headers={"Authorization": f"Bearer {TOKEN}", "Cookie": f"session={COOKIE}"},
        )
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error"}
    return response.headers["X-Request-ID"]


@pytest.mark.parametrize(
    ("path", "error"),
    [("/test-crash", "RuntimeError"), ("/test-register-twice", "IntegrityError")],
)
def test_an_unhandled_error_is_reported_once_without_what_the_request_carried(
    reporting_app: FastAPI, collector: EnvelopeCollector, path: str, error: str
) -> None:
    request_id = fail(reporting_app, path)

    (event,) = collector.events()
    assert event["tags"] == {"request_id": request_id}
    assert event["exception"]["values"][-1]["type"] == error
    assert event["request"] == {"method": "POST", "url": f"http://testserver{path}"}
    assert (event["environment"], event["release"]) == (
        ENVIRONMENT,
        running_commit() or f"blogapi@{__version__}",
    )
    assert "user" not in event
    frames = event["exception"]["values"][-1]["stacktrace"]["frames"]
    assert frames and not any("vars" in frame for frame in frames)
    assert collector.refused == []
    for envelope in collector.bodies:
        for secret in (EMAIL, PASSWORD, QUERY_MARKER, TOKEN, COOKIE, "Bearer"):
            assert secret.encode() not in envelope, secret


def test_a_database_error_is_reported_without_the_row_it_quotes(
    reporting_app: FastAPI, collector: EnvelopeCollector
) -> None:
    """PostgreSQL's message for a unique violation quotes the key (DETAIL: Key
    (email)=(...)): the report keeps the message and drops that line."""
    fail(reporting_app, "/test-register-twice")

    (event,) = collector.events()
    messages = " ".join(value["value"] for value in event["exception"]["values"])
    assert "unique" in messages.lower()
    assert "DETAIL" not in messages
    assert EMAIL not in messages


def test_no_dsn_no_report(collector: EnvelopeCollector) -> None:
    """The app the suite runs was made without SENTRY_DSN: an error is logged and
    answered, and nothing is sent."""
    assert not settings.reports_errors
    app = create_app()

    async def crash() -> None:
        raise RuntimeError("not reported")

    app.add_api_route("/test-crash", crash, methods=["POST"])
    with TestClient(app) as client:
        assert client.post("/test-crash").status_code == 500

    assert collector.bodies == collector.refused == []


@pytest.mark.parametrize(
    ("dsn", "missing"),
    [
        ("public@o0.ingest.sentry.io/1", "an http(s) scheme and a host"),
        ("https:///1", "an http(s) scheme and a host"),
        ("https://o0.ingest.sentry.io/1", "a public key before the @"),
        ("https://public@o0.ingest.sentry.io/", "a project id at the end of its path"),
    ],
)
def test_an_unusable_sentry_dsn_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, dsn: str, missing: str
) -> None:
    monkeypatch.setenv("SENTRY_DSN", dsn)

    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None)

    message = str(refused.value)
    assert (
        f"SENTRY_DSN needs {missing}: copy the project's DSN from Sentry, "
        f"e.g. {SENTRY_DSN_EXAMPLE}"
    ) in message
    assert dsn not in message


def test_sentry_settings_and_their_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SENTRY_DSN", raising=False)
    monkeypatch.delenv("SENTRY_ENVIRONMENT", raising=False)
    defaults = Settings(_env_file=None)
    monkeypatch.setenv("SENTRY_DSN", "https://public@o0.ingest.sentry.io/42")
    monkeypatch.setenv("SENTRY_ENVIRONMENT", "staging")

    configured = Settings(_env_file=None)

    assert not defaults.reports_errors
    assert defaults.sentry_environment == "production"
    assert configured.reports_errors
    assert configured.sentry_environment == "staging"
    assert "public@" not in repr(configured)


def test_scrub_leaves_of_a_request_its_method_and_url_without_query() -> None:
    """The last look before an event leaves, whatever put the data in it."""
    from blogapi.error_reports import scrub

    event: dict[str, Any] = {
        "request": {
            "method": "POST",
            "url": f"https://blog.example.com/login?next={QUERY_MARKER}#{QUERY_MARKER}",
            "query_string": f"next={QUERY_MARKER}",
            "cookies": {"session": COOKIE},
            "headers": {"Authorization": f"Bearer {TOKEN}"},
            "data": {"username": EMAIL, "password": PASSWORD},
            "env": {"REMOTE_ADDR": "203.0.113.9"},
        },
        "user": {"email": EMAIL, "ip_address": "203.0.113.9"},
        "exception": {
            "values": [
                {
                    "type": "UniqueViolation",
                    "value": 'duplicate key value violates unique constraint "uq"\n'
                    f"DETAIL:  Key (email)=({EMAIL}) already exists.\n"
                    "[SQL: INSERT INTO users (email) VALUES (%(email)s)]",
                }
            ]
        },
    }

    scrubbed = scrub(event, {})

    assert scrubbed["request"] == {
        "method": "POST",
        "url": "https://blog.example.com/login",
    }
    assert "user" not in scrubbed
    assert scrubbed["exception"]["values"][0]["value"] == (
        'duplicate key value violates unique constraint "uq"\n'
        "[SQL: INSERT INTO users (email) VALUES (%(email)s)]"
    )
