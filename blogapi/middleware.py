"""The ASGI middleware every response passes through, apart from the request log."""

from fastapi import HTTPException, status
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send


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

    def _too_large(self) -> str:
        return f"Request body is larger than {self.max_bytes} bytes"

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse({"detail": self._too_large()}, status_code=413)
            await response(scope, receive, send)
            return
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(
                    status.HTTP_413_CONTENT_TOO_LARGE, self._too_large()
                )
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
