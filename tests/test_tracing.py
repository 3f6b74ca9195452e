"""Traces (blogapi.tracing): a real server, gunicorn with two workers, exports its spans
over OTLP/HTTP to a receiver the test runs on 127.0.0.1, which decodes them as a
collector would. What a request and its statements bind (an email, a password, its hash,
a bearer token, the query string) must appear nowhere in what is sent.
"""

import secrets
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from pydantic import ValidationError
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from blogapi import __version__
from blogapi.config import Settings
from tests.post_sink import PostSink
from tests.servers import ServerProcess, running_server, scratch_database

EMAIL = "trace-canary@example.com"
PASSWORD = "canary password 5f0c1e"
QUERY_MARKER = "querycanary7c2e"
CONTENT_MARKER = "contentcanary91ab"
POLL_SECONDS = 60
SERVER_SPAN_KEYS = {
    "http.request.method",
    "http.route",
    "http.response.status_code",
    "url.scheme",
    "blogapi.request_id",
}
"""Everything a request's span records: no path, query, header or client address."""
SERVER, CLIENT = Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT


def attributes(pairs: Any) -> dict[str, Any]:
    values = {}
    for pair in pairs:
        assert isinstance(pair, KeyValue)
        kind = pair.value.WhichOneof("value")
        values[pair.key] = getattr(pair.value, kind) if kind else None
    return values


@dataclass
class ReceivedSpan:
    span: Span
    resource: dict[str, Any]

    @property
    def attributes(self) -> dict[str, Any]:
        return attributes(self.span.attributes)


class OtlpReceiver(PostSink):
    """An OTLP/HTTP receiver: keeps the body of every export (`POST /v1/traces`,
    application/x-protobuf)."""

    PATH = "/v1/traces"
    CONTENT_TYPE = "application/x-protobuf"
    REPLY_TYPE = "application/x-protobuf"
    REPLY = b""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def received(self) -> tuple[list[bytes], list[ExportTraceServiceRequest]]:
        bodies = self.kept()
        return bodies, [ExportTraceServiceRequest.FromString(body) for body in bodies]

    def spans(self) -> list[ReceivedSpan]:
        found = []
        for request in self.received()[1]:
            for resource_spans in request.resource_spans:
                resource = attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    found += [ReceivedSpan(s, resource) for s in scope_spans.spans]
        return found

    def wait_for_server_spans(self, trace_ids: set[str]) -> list[ReceivedSpan]:
        """Every span received, once each trace has its server span: a worker's spans
        leave in the order they end, a request's after its statements'."""
        deadline = time.monotonic() + POLL_SECONDS
        while True:
            spans = self.spans()
            served = {s.span.trace_id.hex() for s in spans if s.span.kind == SERVER}
            if trace_ids <= served:
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no server span for {trace_ids - served} in {POLL_SECONDS} s"
                )
            time.sleep(0.2)


@dataclass
class Sent:
    """A request sent with a `traceparent` naming `trace_id` and `parent_id`."""

    trace_id: str
    parent_id: str
    template: str
    response: httpx.Response


def send_traced(
    client: httpx.Client,
    sent: dict[str, Sent],
    name: str,
    template: str,
    method: str,
    url: str,
    **kwargs: Any,
) -> httpx.Response:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    headers = {
        **kwargs.pop("headers", {}),
        "traceparent": f"00-{trace_id}-{parent_id}-01",
    }
    response = client.request(method, url, headers=headers, **kwargs)
    sent[name] = Sent(trace_id, parent_id, template, response)
    return response


def stored_password_hash(database_url: str) -> str:
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            found = connection.execute(
                text("SELECT password_hash FROM users WHERE email = :email"),
                {"email": EMAIL},
            )
            return str(found.scalar_one())
    finally:
        engine.dispose()


def test_requests_and_their_statements_are_traced_without_values() -> None:
    with (
        scratch_database("tracing") as database_url,
        OtlpReceiver() as receiver,
        running_server(
            database_url,
            workers=2,
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
            OTEL_BSP_SCHEDULE_DELAY="200",
            OTEL_RESOURCE_ATTRIBUTES="deployment.environment.name=trace-test",
        ) as server,
        server.client() as client,
    ):
        sent: dict[str, Sent] = {}
        registered = send_traced(
            client, sent, "register", "/users", "POST", f"/users?ref={QUERY_MARKER}",
            json={"email": EMAIL, "password": PASSWORD},
        )  # fmt: skip
        logged_in = send_traced(
            client, sent, "login", "/login", "POST", f"/login?next={QUERY_MARKER}",
            data={"username": EMAIL, "password": PASSWORD},
        )  # fmt: skip
        token = logged_in.json()["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        created = send_traced(
            client, sent, "create", "/posts", "POST", "/posts",
            json={"title": "Traced", "content": CONTENT_MARKER}, headers=bearer,
        )  # fmt: skip
        read = send_traced(
            client, sent, "read", "/posts/{post_id}", "GET",
            f"/posts/{created.json()['id']}/?ref={QUERY_MARKER}", headers=bearer,
        )  # fmt: skip
        searched = send_traced(
            client, sent, "search", "/posts", "GET", "/posts",
            params={"search": QUERY_MARKER}, headers=bearer,
        )  # fmt: skip
        statuses = [r.status_code for r in (registered, logged_in, created, read)]
        assert statuses == [201, 200, 201, 200]
        assert searched.status_code == 200
        spans = receiver.wait_for_server_spans({s.trace_id for s in sent.values()})
        bodies, requests = receiver.received()
        password_hash = stored_password_hash(database_url)

    assert receiver.refused == []
    for name, request in sent.items():
        (server_span,) = [
            s
            for s in spans
            if s.span.trace_id.hex() == request.trace_id and s.span.kind == SERVER
        ]
        method = request.response.request.method
        assert server_span.span.parent_span_id.hex() == request.parent_id, name
        assert server_span.span.name == f"{method} {request.template}"
        assert server_span.attributes == {
            "http.request.method": method,
            "http.route": request.template,
            "http.response.status_code": request.response.status_code,
            "url.scheme": "http",
            "blogapi.request_id": request.response.headers["X-Request-ID"],
        }
        assert set(server_span.attributes) == SERVER_SPAN_KEYS
        assert server_span.resource["service.name"] == "blogapi"
        assert server_span.resource["service.version"] == __version__
        assert server_span.resource["deployment.environment.name"] == "trace-test"
        statements = [
            s
            for s in spans
            if s.span.parent_span_id == server_span.span.span_id
            and s.span.trace_id == server_span.span.trace_id
        ]
        assert statements, f"no SQL span under {name}"
        for statement in statements:
            assert statement.span.kind == CLIENT
            assert statement.attributes["db.system.name"] in ("sqlite", "postgresql")
            assert (
                statement.span.name == statement.attributes["db.query.text"].split()[0]
            )
    login_statements = sql_texts(spans, sent["login"])
    assert any("FROM users" in t and "email" in t for t in login_statements)
    assert all(("?" in t or "%(" in t) for t in login_statements if "WHERE" in t)
    assert any(
        t.startswith("INSERT INTO posts") for t in sql_texts(spans, sent["create"])
    )

    secrets_sent = [EMAIL, PASSWORD, password_hash, token, QUERY_MARKER, CONTENT_MARKER]
    decoded = "\n".join(str(request) for request in requests)
    for secret in secrets_sent:
        assert all(secret.encode() not in body for body in bodies), secret
        assert secret not in decoded, secret
    assert "Bearer" not in decoded


def sql_texts(spans: list[ReceivedSpan], request: Sent) -> list[str]:
    return [
        s.attributes["db.query.text"]
        for s in spans
        if s.span.trace_id.hex() == request.trace_id and s.span.kind == CLIENT
    ]


@pytest.mark.parametrize(
    ("environment", "sends"),
    [
        ({}, True),
        ({"OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_SAMPLER": "always_off"}, False),
    ],
    ids=["enabled", "sdk-disabled", "exporter-none", "sampler-off"],
)
def test_spans_queued_are_sent_as_the_server_stops_unless_turned_off(
    environment: dict[str, str], sends: bool
) -> None:
    """Spans wait in their worker's queue for longer than the test runs: they leave as
    the server stops (the lifespan's end flushes them), unless tracing is off."""
    trace_id = secrets.token_hex(16)
    with scratch_database("tracing") as database_url, OtlpReceiver() as receiver:
        server = ServerProcess(
            database_url,
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
            OTEL_BSP_SCHEDULE_DELAY="600000",
            OTEL_SERVICE_NAME="blog-eu",
            **environment,
        )
        try:
            server.start()
            with server.client() as client:
                traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
                response = client.post(
                    "/login",
                    data={"username": EMAIL, "password": PASSWORD},
                    headers={"traceparent": traceparent},
                )
                assert response.status_code == 403
                assert receiver.spans() == []
        finally:
            server.close()
        spans = receiver.spans()

    assert receiver.refused == []
    if not sends:
        assert receiver.bodies == []
        return
    ours = [s for s in spans if s.span.trace_id.hex() == trace_id]
    assert {s.span.kind for s in ours} == {SERVER, CLIENT}
    assert {s.resource["service.name"] for s in ours} == {"blog-eu"}


@pytest.mark.parametrize(
    ("environment", "service", "team"),
    [
        ({}, "blogapi", None),
        ({"OTEL_SERVICE_NAME": "blog-eu"}, "blog-eu", None),
        (
            {"OTEL_RESOURCE_ATTRIBUTES": "service.name=blog-us,team=web"},
            "blog-us",
            "web",
        ),
        (
            {"OTEL_SERVICE_NAME": "blog-eu", "OTEL_RESOURCE_ATTRIBUTES": "team=web"},
            "blog-eu",
            "web",
        ),
    ],
)
def test_the_service_is_named_blogapi_unless_the_environment_names_it(
    monkeypatch: pytest.MonkeyPatch,
    environment: dict[str, str],
    service: str,
    team: str | None,
) -> None:
    from blogapi.tracing import service_resource

    for name, value in environment.items():
        monkeypatch.setenv(name, value)

    resource = service_resource().attributes

    assert resource["service.name"] == service
    assert resource["service.version"] == __version__
    assert resource.get("team") == team


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported: blogapi ships the OTLP "
                "exporter over HTTP only, so use http/protobuf"
            ),
        ),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/json is not supported",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "console"},
            "OTEL_TRACES_EXPORTER=console is not supported: use otlp (the default) or none",
        ),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "otel-collector:4318"},
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT must be an http(s) URL, "
                "e.g. http://otel-collector:4318"
            ),
        ),
    ],
)
def test_unusable_otel_variables_stop_the_start_in_one_line(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], message: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-collector:4318")
    for name, value in environment.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None)

    assert message in str(refused.value)


@pytest.mark.parametrize(
    "environment",
    [
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_SDK_DISABLED": "true"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
    ],
)
def test_otel_variables_are_checked_only_while_traces_are_on(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-collector:4318")
    for name, value in environment.items():
        monkeypatch.setenv(name, value)

    Settings(_env_file=None)
