"""The application factory: routers, middleware and error handlers."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from fastapi.routing import APIRoute

from blogapi import (
    __version__,
    accounts,
    admin,
    auth,
    health,
    http_metrics,
    metrics,
    password_reset,
    posts,
    votes,
)
from blogapi.config import settings
from blogapi.db import build_engine
from blogapi.docs import install_docs
from blogapi.error_handlers import install_error_handlers
from blogapi.http_metrics import HttpMetrics, MeteredRoute
from blogapi.middleware import (
    AllowedOriginsOnly,
    BodySizeLimit,
    OptionalTrailingSlash,
    RetryConflicts,
    SecurityHeaders,
)
from blogapi.migration_state import MigrationState
from blogapi.request_log import RequestLog, configure_logging
from blogapi.resources import AppResources
from blogapi.security import dummy_hash
from blogapi.throttle import build_attempt_throttle


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings.require_secret_key()
    await anyio.to_thread.run_sync(dummy_hash)
    login_throttle = build_attempt_throttle()
    resources = AppResources(
        engine=build_engine(settings.database_url),
        connection_line=anyio.Lock(),
        login_throttle=login_throttle,
        recovery_throttle=login_throttle.for_purpose("password-recovery"),
        migrations=MigrationState.of_this_code(migrating=settings.migrate_on_start),
        commit=health.running_commit(),
    )
    app.state.resources = resources
    if settings.metrics_enabled:
        metrics.record_build(__version__, resources.commit)
    try:
        async with anyio.create_task_group() as background:
            if settings.migrate_on_start:
                # Until they are applied, the session dependency answers 503.
                background.start_soon(resources.migrations.migrate_until_applied)
            yield
            background.cancel_scope.cancel()
    finally:
        try:
            await login_throttle.store.close()
        finally:
            await resources.engine.dispose()


def operation_id(route: APIRoute) -> str:
    """The route function's name (`list_posts`), as clients generated from the OpenAPI
    document name their methods after it; the names are unique (tests/test_openapi.py)."""
    return route.name


FEATURES = (auth, accounts, password_reset, admin, posts, votes, health)
"""The feature modules whose routers make up the API."""


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
        generate_unique_id_function=operation_id,
    )
    app.router.route_class = MeteredRoute
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
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    if settings.metrics_enabled:
        app.add_middleware(HttpMetrics)
    app.add_middleware(OptionalTrailingSlash)
    app.add_middleware(RequestLog)
    app.add_middleware(SecurityHeaders)
    install_error_handlers(app)
    install_docs(app)

    @app.get("/", tags=["root"], summary="Welcome")
    async def root() -> dict[str, str]:
        return {"message": "Welcome to blogapi: the interactive API docs are at /docs"}

    for feature in FEATURES:
        app.include_router(feature.router)
    if settings.metrics_enabled:
        app.include_router(http_metrics.router)
    return app


app = create_app()
