"""Reports of unhandled errors to Sentry when SENTRY_DSN is set; docs/telemetry.md tells
what is sent.

This module (and sentry_sdk) is imported only then, by blogapi.main. Each worker starts
the SDK in the app's lifespan and flushes it at the end. An error no handler answered is
reported once, by the request log (blogapi.request_log), which also logs it and answers
500: tagged with the request id, and with the request's method and URL, its query
string left out.

None of Sentry's integrations is installed, not even the default ones: nothing is
patched, no request data, log record or breadcrumb is collected behind the scenes, and
the logged error is not reported a second time. No local variables, no request
headers, cookies, body or query string, no user; `scrub` strips what may still carry a
value before an event leaves.
"""

import logging
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import sentry_sdk
from sentry_sdk.types import DataCollectionUserOptions, Event, Hint
from starlette.datastructures import Headers
from starlette.types import Scope

from blogapi import __version__

log = logging.getLogger("blogapi")

REQUEST_ID_TAG = "request_id"
NOTHING_COLLECTED: DataCollectionUserOptions = {
    "user_info": False,
    "cookies": {"mode": "off"},
    "http_headers": {"request": {"mode": "off"}},
    "http_bodies": [],
    "url_query_params": {"mode": "off"},
    "graphql": {"document": False, "variables": False},
    "gen_ai": {"inputs": False, "outputs": False},
    "database_query_data": False,
    "queues": False,
    "stack_frame_variables": False,
}
"""What the SDK may collect by itself (`data_collection`, which supersedes
`send_default_pii`): no user, cookie, header, body, query parameter, query data or
local variable. The source lines around each frame, code only, stay."""
FLUSH_SECONDS = 5.0
_KEPT_REQUEST_KEYS = ("method", "url")
_DATABASE_DETAIL = re.compile(r"^\s*DETAIL:.*$\n?", re.MULTILINE)
"""PostgreSQL's DETAIL line, which quotes the row's values (`Key (email)=(...)`)."""


def start_error_reports(dsn: str, environment: str, commit: str | None) -> None:
    """Start the SDK in this worker; the release is the commit when it is known."""
    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=commit or f"blogapi@{__version__}",
        default_integrations=False,
        auto_enabling_integrations=False,
        data_collection=NOTHING_COLLECTED,
        include_local_variables=False,
        max_request_body_size="never",
        auto_session_tracking=False,
        before_send=scrub,
    )
    log.info("reporting unhandled errors to Sentry (environment %s)", environment)


def stop_error_reports() -> None:
    """Send what is queued, and stop the SDK's thread."""
    sentry_sdk.get_client().close(timeout=FLUSH_SECONDS)


def report_error(error: BaseException, request_id: str, scope: Scope) -> None:
    """Report an error a request ended with, tagged with its request id."""
    request = {"method": scope["method"], "url": _url_without_query(scope)}
    with sentry_sdk.new_scope() as report:
        report.set_tag(REQUEST_ID_TAG, request_id)
        report.add_event_processor(lambda event, _hint: {**event, "request": request})
        sentry_sdk.capture_exception(error)


def _url_without_query(scope: Scope) -> str:
    host = Headers(scope=scope).get("host") or "localhost"
    return f"{scope['scheme']}://{host}{scope.get('root_path', '')}{scope['path']}"


def scrub(event: Event, _hint: Hint) -> Event:
    """The last look before an event leaves: of the request only its method and its URL
    without query; no user; no database DETAIL line in an exception's message."""
    request = event.get("request")
    if request is not None:
        kept: dict[str, Any] = {
            key: request[key] for key in _KEPT_REQUEST_KEYS if key in request
        }
        if "url" in kept:
            kept["url"] = urlunsplit(
                urlsplit(kept["url"])._replace(query="", fragment="")
            )
        event["request"] = kept
    event.pop("user", None)
    for exception in event.get("exception", {}).get("values", []):
        if isinstance(exception.get("value"), str):
            exception["value"] = _DATABASE_DETAIL.sub("", exception["value"])
    return event
