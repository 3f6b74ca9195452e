"""The Prometheus metrics: every one defined here, and their exposition for GET /metrics
(served by blogapi.http_metrics when METRICS_TOKEN is set).

Imports nothing of blogapi but its settings, so any module can count here.

Under gunicorn (`python -m blogapi`), blogapi.server sets PROMETHEUS_MULTIPROC_DIR to
METRICS_DIR before the workers start: each worker then keeps its values in files of its
own there, and the worker that answers GET /metrics adds them all up. A worker that
exits leaves its counters behind (counts only grow) and takes its `live*` gauges with
it (gunicorn's child_exit hook, blogapi.gunicorn_hooks). Anywhere else (`--reload`, a
TestClient, plain uvicorn) the values live in the process.
"""

import os
from functools import cache

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
MULTIPROCESS_DIR = os.environ.get(MULTIPROCESS_DIR_VARIABLE)
"""Read once, as prometheus_client reads it once when imported."""

UNMATCHED_ROUTE = "<unmatched>"
"""The `route` of every request no API route answered: one series, whatever the path."""
OTHER_METHOD = "<other>"
"""The `method` of a request with a method outside METHODS."""
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# `_created` series would double the counters and are not kept in multiprocess mode.
disable_created_metrics()  # type: ignore[no-untyped-call]
REGISTRY = CollectorRegistry()

HTTP_REQUESTS = Counter(
    "http_requests",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_REQUEST_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from a request's arrival to the end of its response (and its background "
    "tasks), by method and route template",
    ["method", "route"],
    registry=REGISTRY,
)
HTTP_REQUESTS_IN_PROGRESS = Gauge(
    "http_requests_in_progress",
    "Requests an API route is serving now, by method and route template",
    ["method", "route"],
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
DB_POOL_CONNECTIONS = Gauge(
    "blogapi_db_pool_connections",
    "Database connections in use and idle in the pools, and requests waiting for one",
    ["state"],
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
THROTTLE_REFUSALS = Counter(
    "blogapi_throttle_refusals",
    "Attempts refused with 429 for too many in the window, by purpose",
    ["purpose"],
    registry=REGISTRY,
)
EMAILS = Counter(
    "blogapi_emails",
    "Emails the app tried to send, by kind and outcome (sent, failed)",
    ["kind", "outcome"],
    registry=REGISTRY,
)
BUILD_INFO = Gauge(
    "blogapi_build_info",
    "1, labelled with the version and the commit the server runs",
    ["version", "commit"],
    multiprocess_mode="livemax",
    registry=REGISTRY,
)


def method_label(method: str) -> str:
    """The request's method, or OTHER_METHOD for one outside METHODS: a client can't
    make up new series."""
    return method if method in METHODS else OTHER_METHOD


# The label children are looked up once per label values: `labels()` takes a lock and
# checks its arguments on every call. The label values come from bounded sets (methods,
# route templates, statuses, fixed names), and so do these caches.


@cache
def _requests(method: str, route: str, status: int) -> Counter:
    return HTTP_REQUESTS.labels(method, route, str(status))


@cache
def _durations(method: str, route: str) -> Histogram:
    return HTTP_REQUEST_DURATION.labels(method, route)


@cache
def requests_in_progress(method: str, route: str) -> Gauge:
    return HTTP_REQUESTS_IN_PROGRESS.labels(method, route)


@cache
def pool_connections(state: str) -> Gauge:
    """`in_use`, `idle` or `waiting`."""
    return DB_POOL_CONNECTIONS.labels(state)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    _requests(method, route, status).inc()
    _durations(method, route).observe(seconds)


def record_build(version: str, commit: str | None) -> None:
    BUILD_INFO.labels(version, commit or "unknown").set(1)


def exposition() -> bytes:
    """Every metric in Prometheus' text format: all the workers' values added up in
    multiprocess mode, else this process's."""
    if MULTIPROCESS_DIR is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=MULTIPROCESS_DIR)  # type: ignore[no-untyped-call]
    return generate_latest(registry)
