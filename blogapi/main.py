"""The application factory: routers, middleware and error handlers."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from blogapi import (
    __version__,
    account,
    admin,
    auth,
    health,
    password_reset,
    posts,
    users,
    votes,
)
from blogapi.config import settings
from blogapi.db import build_engine
from blogapi.docs import install_docs
from blogapi.errors import install_error_handlers
from blogapi.middleware import (
    AllowedOriginsOnly,
    BodySizeLimit,
    OptionalTrailingSlash,
    RetryConflicts,
    SecurityHeaders,
)
from blogapi.request_log import RequestLog, configure_logging
from blogapi.schema import Schema
from blogapi.security import dummy_hash
from blogapi.throttle import build_login_throttle


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings.require_secret_key()
    await anyio.to_thread.run_sync(dummy_hash)
    app.state.engine = build_engine(settings.database_url)
    app.state.connection_line = anyio.Lock()
    app.state.login_throttle = build_login_throttle()
    app.state.recovery_throttle = app.state.login_throttle.for_purpose(
        "password-recovery"
    )
    app.state.schema = Schema.of_this_code(migrating=settings.migrate_on_start)
    app.state.liveness = health.Liveness.of_this_process()
    try:
        async with anyio.create_task_group() as background:
            if settings.migrate_on_start:
                # Until they are applied, the session dependency answers 503.
                background.start_soon(app.state.schema.migrate_until_applied)
            yield
            background.cancel_scope.cancel()
    finally:
        try:
            await app.state.login_throttle.store.close()
        finally:
            await app.state.engine.dispose()


def create_app() -> FastAPI:
    configure_logging(settings.log_format)
    app = FastAPI(
        title="blogapi",
        summary="Users, posts and votes, with JWT login.",
        version=__version__,
        redirect_slashes=False,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(RetryConflicts)
    app.add_middleware(
        AllowedOriginsOnly,
        allow_origins=settings.cors_origins,
        allow_credentials="*" not in settings.cors_origins,
        allow_methods=["*"],
        allow_headers=["*"],
        # A front end on another origin reads the next page's URL from it.
        expose_headers=["Link"],
    )
    app.add_middleware(OptionalTrailingSlash)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestLog)
    app.add_middleware(SecurityHeaders)
    install_error_handlers(app)
    install_docs(app)

    @app.get("/", tags=["root"], summary="Welcome")
    async def root() -> dict[str, str]:
        return {"message": "Welcome to blogapi: the interactive API docs are at /docs"}

    for feature in (auth, users, account, password_reset, admin, posts, votes, health):
        app.include_router(feature.router)
    return app


app = create_app()
