"""The ASGI middleware every response passes through, apart from the request log."""

from fastapi import Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from blogapi.db_errors import is_conflict
from blogapi.error_handlers import database_unavailable, error_response
from blogapi.errors import ApiError, ContentTooLarge


class HttpMiddleware:
    """A pure ASGI middleware that acts on HTTP requests and passes anything else on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.handle(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class OptionalTrailingSlash(HttpMiddleware):
    """Serve `/posts/` exactly like `/posts`, with no redirect."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            scope = {**scope, "path": path.rstrip("/") or "/"}
        await self.app(scope, receive, send)


class BodySizeLimit(HttpMiddleware):
    """Refuse bodies over MAX_BODY_BYTES with 413, before or while they are read."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        super().__init__(app)
        self.max_bytes = max_bytes

    def _too_large(self) -> ApiError:
        return ContentTooLarge(f"Request body is larger than {self.max_bytes} bytes")

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await error_response(self._too_large())(scope, receive, send)
            return
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                # FastAPI lets an HTTPException out of reading a body; any other
                # error there becomes its 400.
                error = self._too_large()
                raise HTTPException(error.status_code, error.detail)
            return message

        await self.app(scope, receive_within_limit, send)


class SecurityHeaders(HttpMiddleware):
    """Headers that fit an API: no sniffing, and no caching of anything said to a user."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        authenticated = any(name == b"authorization" for name, _ in scope["headers"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                if authenticated:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


class AllowedOriginsOnly(CORSMiddleware):
    """CORS for the configured origins; any other origin gets no `Access-Control-*` header.

    Starlette's own middleware still sends Allow-Methods, Allow-Headers (echoing the
    request) and Allow-Credentials to an origin it refuses.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope) if scope["type"] == "http" else Headers()
        origin = headers.get("origin")
        if origin is None or self.is_allowed_origin(origin):
            await super().__call__(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            refusal = JSONResponse({"detail": "Origin not allowed"}, status_code=400)
            await refusal(scope, receive, send)
            return

        async def send_without_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                for name in {
                    n for n in response_headers if n.startswith("access-control-")
                }:
                    del response_headers[name]
            await send(message)

        await super().__call__(scope, receive, send_without_cors)


class RetryConflicts(HttpMiddleware):
    """Run a request once more when the database aborted it as a deadlock or a
    serialization failure (its transaction was rolled back, so nothing of it stays);
    a second conflict answers 503 with Retry-After.

    The body is replayed from what the first run read, which BodySizeLimit keeps small.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        received: list[Message] = []
        started = False

        async def recording_receive() -> Message:
            message = await receive()
            received.append(message)
            return message

        async def noting_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, recording_receive, noting_send)
            return
        except DBAPIError as error:
            if started or not is_conflict(error):
                raise
        replay = iter(received)

        async def replaying_receive() -> Message:
            return next(replay, None) or await receive()

        try:
            await self.app(scope, replaying_receive, send)
        except DBAPIError as error:
            if not is_conflict(error):
                raise
            response = database_unavailable(Request(scope), error)
            await response(scope, receive, send)
