"""The application factory: routers, middleware and error handlers."""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from sqlalchemy.ext.asyncio import AsyncEngine

from blogapi import (
    __version__,
    accounts,
    admin,
    auth,
    email_verification,
    export,
    health,
    http_metrics,
    link_pages,
    metrics,
    password_reset,
    posts,
    votes,
)
from blogapi.config import (
    SettingsError,
    print_settings_error,
    settings,
    traces_requested,
)
from blogapi.db import build_engine
from blogapi.docs import install_docs
from blogapi.error_handlers import install_error_handlers
from blogapi.errors import VALIDATION_ERROR_EXAMPLE
from blogapi.http_metrics import HttpMetrics, MeteredRoute
from blogapi.middleware import (
    AllowedOriginsOnly,
    BodySizeLimit,
    OptionalTrailingSlash,
    RetryConflicts,
    SecurityHeaders,
)
from blogapi.migration_state import MigrationState
from blogapi.request_log import ErrorReporter, RequestLog, configure_logging
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

if TYPE_CHECKING:
    from blogapi.tracing import Tracing


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
    engine = build_engine(settings.database_url)
    resources = AppResources(
        engine=engine,
        connection_line=anyio.Lock(),
        login_throttle=login_throttle,
        recovery_throttle=login_throttle.for_purpose("password-recovery"),
        verification_throttle=login_throttle.for_purpose("email-verification"),
        signup_throttle=SignupThrottle(store),
        exports=OneAtATime(store, "export", export.CLAIM_SECONDS),
        migrations=MigrationState.of_this_code(migrating=settings.migrate_on_start),
        commit=health.running_commit(),
        tracing=_start_tracing(engine) if traces_requested() else None,
    )
    app.state.resources = resources
    if settings.metrics_enabled:
        metrics.record_build(__version__, resources.commit)
    try:
        _start_error_reports(resources.commit)
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
            await anyio.to_thread.run_sync(_flush_telemetry, resources)


# Traces and error reports: their modules, and so OpenTelemetry's SDK and sentry_sdk,
# are imported only when they are configured (docs/telemetry.md).


def _start_tracing(engine: AsyncEngine) -> "Tracing":
    from blogapi.tracing import start_tracing

    return start_tracing(engine)


def _start_error_reports(commit: str | None) -> None:
    if settings.reports_errors:
        from blogapi.error_reports import start_error_reports

        start_error_reports(
            settings.sentry_dsn.get_secret_value(), settings.sentry_environment, commit
        )


def _error_reporter() -> ErrorReporter | None:
    if not settings.reports_errors:
        return None
    from blogapi.error_reports import report_error

    return report_error


def _flush_telemetry(resources: AppResources) -> None:
    """Send the spans and error reports still queued, and stop their threads."""
    try:
        if resources.tracing is not None:
            resources.tracing.shutdown()
    finally:
        if settings.reports_errors:
            from blogapi.error_reports import stop_error_reports

            stop_error_reports()


WELCOME = {"message": "Welcome to blogapi: the interactive API docs are at /docs"}


def operation_id(route: APIRoute) -> str:
    """The route function's name (`list_posts`), as clients generated from the OpenAPI
    document name their methods after it; the names are unique (tests/test_openapi.py)."""
    return route.name


FEATURES = (
    auth,
    accounts,
    export,
    email_verification,
    password_reset,
    link_pages,
    admin,
    posts,
    votes,
    health,
)
"""The feature modules whose routers make up the API."""


class BlogApi(FastAPI):
    """FastAPI, with an example of its own 422 answer in the OpenAPI document, as every
    other answer has."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            schemas = super().openapi()["components"]["schemas"]
            schemas["HTTPValidationError"]["examples"] = [VALIDATION_ERROR_EXAMPLE]
        return super().openapi()


def create_app() -> FastAPI:
    configure_logging(settings.log_format)
    app = BlogApi(
        title="blogapi",
        summary="Users, posts and votes, with JWT login.",
        version=__version__,
        redirect_slashes=False,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=operation_id,
        # FastAPI's own spans would carry the query string: blogapi.tracing makes them.
        telemetry={"tracing": False, "metrics": False, "logs": False},
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
    app.add_middleware(RequestLog, report_error=_error_reporter())
    app.add_middleware(SecurityHeaders)
    if traces_requested():
        from blogapi.tracing import install_tracing

        install_tracing(app)
    install_error_handlers(app)
    install_docs(app)

    @app.get(
        "/",
        tags=["root"],
        summary="Welcome",
        responses={200: {"content": {"application/json": {"example": WELCOME}}}},
    )
    async def root() -> dict[str, str]:
        return WELCOME

    app.mount(
        link_pages.STATIC_URL,
        StaticFiles(packages=[("blogapi", "static")]),
        name="static",
    )
    for feature in FEATURES:
        app.include_router(feature.router)
    if settings.metrics_enabled:
        app.include_router(http_metrics.router)
    return app


app = create_app()
