"""Traces with OpenTelemetry, exported over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT
(or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set; docs/telemetry.md tells what is recorded.

This module is imported only then (blogapi.main): otherwise the SDK and the exporter
are never loaded. Each worker builds its own tracer provider in the app's lifespan,
after the fork, so the batch processor's thread runs in the worker; the lifespan's end
flushes it.

- A server span per request (`TraceRequests`), continuing an incoming `traceparent`,
  named after the route template (`RouteOnSpan`, set once the router has chosen one),
  with the method, the status and the request id (X-Request-ID).
- A client span per SQL statement, under the request's span, with the statement's
  text: placeholders only, as the statements bind every value.

Nothing else about a request is recorded: not its path, query string, headers, body or
client address, nor any bound value. The spans are written here rather than by
FastAPI's own telemetry or the ASGI instrumentation, which record the query string
(`url.query`) with its values.
"""

import logging
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import (
    SERVICE_NAME,
    SERVICE_VERSION,
    OTELResourceDetector,
    Resource,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from sqlalchemy import event
from sqlalchemy.engine import Connection, ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.types import Message, Receive, Scope, Send

from blogapi import __version__
from blogapi.middleware import HttpMiddleware
from blogapi.request_log import REQUEST_ID_HEADER
from blogapi.resources import resources_of

log = logging.getLogger("blogapi")

REQUEST_ID_ATTRIBUTE = "blogapi.request_id"
_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}
)
"""HTTP's methods: any other is recorded as `_OTHER`, as the conventions say."""
_SPAN_KEY = "blogapi.span"
"""Where a statement's span waits in its connection's `info` until the statement ends."""


def service_resource() -> Resource:
    """The process as the spans name it: service.name `blogapi` unless OTEL_SERVICE_NAME
    or OTEL_RESOURCE_ATTRIBUTES names it, and whatever else those two add."""
    ours = Resource.create({SERVICE_NAME: "blogapi", SERVICE_VERSION: __version__})
    return ours.merge(OTELResourceDetector().detect())


@dataclass
class Tracing:
    """This worker's tracer provider, and the SQL listeners it put on the engine."""

    provider: TracerProvider
    tracer: trace.Tracer
    engine: AsyncEngine

    def shutdown(self) -> None:
        """Flush the spans still queued and stop the batch processor's thread."""
        for name, listener in self.statement_listeners():
            event.remove(self.engine.sync_engine, name, listener)
        self.provider.shutdown()

    def statement_listeners(self) -> list[tuple[str, Any]]:
        """The engine events a statement's span starts and ends on."""
        return [
            ("before_cursor_execute", self._statement_starts),
            ("after_cursor_execute", self._statement_ends),
            ("handle_error", self._statement_fails),
        ]

    def _statement_starts(
        self,
        connection: Connection,
        _cursor: Any,
        statement: str,
        _parameters: Any,
        _context: Any,
        _executemany: bool,
    ) -> None:
        if not trace.get_current_span().is_recording():
            return  # a statement outside a sampled request starts no trace of its own
        connection.info[_SPAN_KEY] = self.tracer.start_span(
            statement.split(None, 1)[0].upper() if statement.strip() else "SQL",
            kind=trace.SpanKind.CLIENT,
            attributes={
                "db.system.name": connection.dialect.name,
                "db.query.text": statement,
            },
        )

    def _statement_ends(self, connection: Connection, *_: Any) -> None:
        span = connection.info.pop(_SPAN_KEY, None)
        if span is not None:
            span.end()

    def _statement_fails(self, context: ExceptionContext) -> None:
        connection = context.connection
        span = None if connection is None else connection.info.pop(_SPAN_KEY, None)
        if span is not None:
            # The error's type only: a database's message may quote a value.
            span.set_attribute("error.type", _type_name(context.original_exception))
            span.set_status(trace.StatusCode.ERROR)
            span.end()


def start_tracing(engine: AsyncEngine) -> Tracing:
    """A tracer provider for this worker, exporting in batches to the OTLP endpoint,
    sampling as OTEL_TRACES_SAMPLER says, and spans for the engine's statements.

    The provider is this app's own, not the global one: nothing else in the process
    (FastAPI's own telemetry, say) starts spans through it."""
    provider = TracerProvider(resource=service_resource())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    tracing = Tracing(
        provider=provider,
        tracer=provider.get_tracer("blogapi", __version__),
        engine=engine,
    )
    for name, listener in tracing.statement_listeners():
        event.listen(engine.sync_engine, name, listener)
    log.info("exporting traces over OTLP/HTTP")
    return tracing


def install_tracing(app: FastAPI) -> None:
    """Put the request span around every middleware, and the route naming it right
    around the router, where the route chosen is known."""
    app.user_middleware.insert(0, Middleware(TraceRequests))
    app.user_middleware.append(Middleware(RouteOnSpan))


class TraceRequests(HttpMiddleware):
    """A server span per request, in the trace an incoming `traceparent` names."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracing = resources_of(scope["app"]).tracing
        assert tracing is not None, "install_tracing without start_tracing"
        method = scope["method"] if scope["method"] in _METHODS else "_OTHER"
        span = tracing.tracer.start_span(
            "HTTP" if method == "_OTHER" else method,
            context=propagate.extract(Headers(scope=scope)),
            kind=trace.SpanKind.SERVER,
            attributes={"http.request.method": method, "url.scheme": scope["scheme"]},
        )
        status: int | None = None

        async def send_traced(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                span.set_attribute("http.response.status_code", message["status"])
                request_id = Headers(raw=message["headers"]).get(REQUEST_ID_HEADER)
                if request_id is not None:
                    span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)
            await send(message)

        try:
            with trace.use_span(
                span, record_exception=False, set_status_on_exception=False
            ):
                await self.app(scope, receive, send_traced)
        except BaseException as error:
            # The type only: an exception's message may quote a value.
            span.set_attribute("error.type", _type_name(error))
            span.set_status(trace.StatusCode.ERROR)
            raise
        else:
            if status is None or status >= 500:
                span.set_attribute("error.type", str(status or "incomplete_response"))
                span.set_status(trace.StatusCode.ERROR)
        finally:
            span.end()


class RouteOnSpan(HttpMiddleware):
    """Names the request's span after the route template (`GET /posts/{post_id}`).

    It sits right around the router, which notes the route it chose in the scope it was
    given; middleware further out may have handed on a copy of the scope."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            template = getattr(scope.get("route"), "path", None)
            span = trace.get_current_span()
            if isinstance(template, str) and span.is_recording():
                span.set_attribute("http.route", template)
                method = scope["method"] if scope["method"] in _METHODS else "HTTP"
                span.update_name(f"{method} {template}")


def _type_name(error: BaseException) -> str:
    kind = type(error)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
