"""One log line per request, tagged with a request id that is also sent back as X-Request-ID."""

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable
from typing import Literal

from starlette.datastructures import MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from blogapi.middleware import HttpMiddleware

log = logging.getLogger("blogapi.requests")

REQUEST_ID_HEADER = "X-Request-ID"
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

ErrorReporter = Callable[[BaseException, str, Scope], None]
"""Reports an unhandled error with the request id (blogapi.error_reports)."""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(log_format: Literal["text", "json"]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
        )
    root = logging.getLogger("blogapi")
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


class RequestLog(HttpMiddleware):
    """Logs method, path (never the query string), status, duration and request id.

    An error nothing else handled is logged here, once, reported (when an error
    reporter is given), and answered with a JSON 500 that still carries the request id.
    """

    def __init__(self, app: ASGIApp, report_error: ErrorReporter | None = None) -> None:
        super().__init__(app)
        self.report_error = report_error

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        sent = (
            dict(scope["headers"])
            .get(REQUEST_ID_HEADER.lower().encode(), b"")
            .decode("latin-1")
        )
        request_id = sent if _CLIENT_REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex
        status = None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as error:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if self.report_error is not None:
                self.report_error(error, request_id, scope)
            if status is not None:
                raise
            failure = JSONResponse({"detail": "Internal server error"}, status_code=500)
            await failure(scope, receive, send_with_id)
        finally:
            fields = {
                "method": scope["method"],
                "path": scope["path"],
                "status": status or 500,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "request_id": request_id,
            }
            log.info(
                " ".join(f"{key}={value}" for key, value in fields.items()),
                extra={"fields": fields},
            )
