"""The metrics' HTTP side: GET /metrics, the middleware that counts and times every
request, and the route class that counts the requests in progress.

All of it is on only when METRICS_TOKEN is set (blogapi.main); the metrics themselves
are defined in blogapi.metrics.
"""

import secrets
import time

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import Message, Receive, Scope, Send

from blogapi import metrics
from blogapi.config import settings
from blogapi.errors import InvalidCredentials
from blogapi.json_body import JsonBodyRoute
from blogapi.middleware import HttpMiddleware


class MeteredRoute(JsonBodyRoute):
    """An API route (with JsonBodyRoute's 415) that counts the requests it is serving
    (`http_requests_in_progress`),
    from the moment the router picks it until the response and its background tasks are
    done. The route is known only once the router has matched it, so this is counted
    here rather than in the middleware. Every router of the app uses this class."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not settings.metrics_enabled:
            await super().handle(scope, receive, send)
            return
        in_progress = metrics.requests_in_progress(
            metrics.method_label(scope["method"]), self.path
        )
        in_progress.inc()
        try:
            await super().handle(scope, receive, send)
        finally:
            in_progress.dec()


class HttpMetrics(HttpMiddleware):
    """Counts every request by method, route template and status, and times it.

    The route is read from the scope after the app ran (the router puts the matched one
    there): its template, `/posts/{post_id}`, never the path, and UNMATCHED_ROUTE when no
    API route answered. It sits inside OptionalTrailingSlash, whose scope the router
    sees, and outside BodySizeLimit, so its 413s are counted too. A request that raised
    is counted as the 500 the request log answers.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            route = scope.get("route")
            metrics.observe_request(
                metrics.method_label(scope["method"]),
                getattr(route, "path", metrics.UNMATCHED_ROUTE),
                status,
                time.perf_counter() - started,
            )


def require_metrics_token(request: Request) -> None:
    """401 unless the request carries `Authorization: Bearer <METRICS_TOKEN>`."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    expected = settings.metrics_token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not secrets.compare_digest(
        token.encode(), expected
    ):
        raise InvalidCredentials("A valid metrics token is required")


router = APIRouter(route_class=MeteredRoute)


@router.get(
    "/metrics",
    include_in_schema=False,
    dependencies=[Depends(require_metrics_token)],
)
def scrape() -> Response:
    """The metrics in Prometheus' text format (reading the workers' files: a thread)."""
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
