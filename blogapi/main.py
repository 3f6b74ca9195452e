"""The application factory: routers, middleware and error handlers."""

import os
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
    export,
    health,
    password_reset,
    posts,
    votes,
)
from blogapi.config import SettingsError, print_settings_error, settings
from blogapi.db import build_engine
from blogapi.docs import install_docs
from blogapi.error_handlers import install_error_handlers
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
from blogapi.throttle import (
    AttemptThrottle,
    OneAtATime,
    SignupThrottle,
    build_attempt_store,
)

WORKER_BOOT_ERROR = 3
"""The exit status gunicorn takes for a worker that can never start."""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    try:
        settings.require_secret_key()
    except SettingsError as error:
        # Raised here, it would reach the server as a traceback; exit status 3 also
        # stops a gunicorn started by hand instead of restarting its workers.
        print_settings_error(error)
        os._exit(WORKER_BOOT_ERROR)
    await anyio.to_thread.run_sync(dummy_hash)
    store = build_attempt_store()
    login_throttle = AttemptThrottle(store)
    resources = AppResources(
        engine=build_engine(settings.database_url),
        connection_line=anyio.Lock(),
        login_throttle=login_throttle,
        recovery_throttle=login_throttle.for_purpose("password-recovery"),
        signup_throttle=SignupThrottle(store),
        exports=OneAtATime(store, "export", export.CLAIM_SECONDS),
        migrations=MigrationState.of_this_code(migrating=settings.migrate_on_start),
        commit=health.running_commit(),
    )
    app.state.resources = resources
    try:
        async with anyio.create_task_group() as background:
            if settings.migrate_on_start:
                # Until they are applied, the session dependency answers 503.
                background.start_soon(resources.migrations.migrate_until_applied)
            yield
            background.cancel_scope.cancel()
    finally:
        try:
            await store.close()
        finally:
            await resources.engine.dispose()


def operation_id(route: APIRoute) -> str:
    """The route function's name (`list_posts`), as clients generated from the OpenAPI
    document name their methods after it; the names are unique (tests/test_openapi.py)."""
    return route.name


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

    features = (auth, accounts, export, password_reset, admin, posts, votes, health)
    for feature in features:
        app.include_router(feature.router)
    return app


app = create_app()
