"""The error body every failure shares, and the handlers that keep it JSON."""

import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

log = logging.getLogger("blogapi")

RETRY_AFTER_SECONDS = 5


class ErrorMessage(BaseModel):
    detail: str


def error_responses(*status_codes: int) -> dict[int | str, dict[str, type[BaseModel]]]:
    """OpenAPI entries for the error statuses a route documents."""
    return {code: {"model": ErrorMessage} for code in status_codes}


async def _invalid_request(
    request: Request, exc: RequestValidationError
) -> JSONResponse:
    """FastAPI's 422 without the `input` it echoes: that may be a password, or text that
    JSON can't carry back (a lone surrogate, `1e400`) and would turn the answer into a 500."""
    errors = [
        {key: value for key, value in error.items() if key != "input"}
        for error in exc.errors()
    ]
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


_ROUTED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """FastAPI's answer, with a 405's Allow header naming every method the path has:
    Starlette names only those of the first route that matched the path."""
    if exc.status_code == 405:
        allowed = [
            method
            for method in _ROUTED_METHODS
            if any(
                route.matches({**request.scope, "method": method})[0] is Match.FULL
                for route in request.app.routes
            )
        ]
        exc.headers = {**(exc.headers or {}), "Allow": ", ".join(allowed)}
    return await http_exception_handler(request, exc)


DATABASE_UNAVAILABLE = "The database is unavailable; try again shortly"

UNREACHABLE_SQLSTATES = ("08", "53300", "57P01", "57P02", "57P03")
"""Connection failures (class 08, the pooler's own wait timeout among them), too many
connections, the server shutting down or starting up."""
TRANSIENT_SQLSTATES = (*UNREACHABLE_SQLSTATES, "57014", "55P03")
"""Those, and a statement or lock timeout."""
CONFLICT_SQLSTATES = ("40001", "40P01")
"""A serialization failure or a deadlock: the request is run once more (RetryConflicts)."""
SQLITE_BUSY, SQLITE_LOCKED = 5, 6


def _sqlstate(exc: DBAPIError) -> str:
    return getattr(exc.orig, "sqlstate", None) or ""


def is_conflict(exc: DBAPIError) -> bool:
    return _sqlstate(exc).startswith(CONFLICT_SQLSTATES)


def is_transient(
    exc: DBAPIError, sqlstates: tuple[str, ...] = TRANSIENT_SQLSTATES
) -> bool:
    """Whether the database is unreachable or busy for now, rather than the request or
    the code being wrong (a missing table, a bug): only the former is worth a retry.
    `sqlstates` narrows which server errors count."""
    if exc.connection_invalidated:
        return True
    sqlite_code = getattr(exc.orig, "sqlite_errorcode", None)
    if sqlite_code is not None:
        return sqlite_code & 0xFF in (SQLITE_BUSY, SQLITE_LOCKED)
    sqlstate = _sqlstate(exc)
    if not sqlstate:
        # libpq gives no SQLSTATE when it cannot connect or the connection broke.
        return isinstance(exc, OperationalError)
    return sqlstate.startswith(sqlstates)


async def _database_error(request: Request, exc: DBAPIError) -> Response:
    """503 when the database is unreachable or busy. A conflict goes on to be retried;
    anything else (a bug) goes on to the request log's 500, with its traceback."""
    if is_transient(exc):
        return database_unavailable(request, exc)
    raise exc


async def _pool_timeout(request: Request, exc: PoolTimeoutError) -> Response:
    return database_unavailable(request, exc)


def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning(
        "database unavailable on %s %s: %r", request.method, request.url.path, exc
    )
    return JSONResponse(
        {"detail": DATABASE_UNAVAILABLE},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.exception_handler(RequestValidationError)(_invalid_request)
    app.exception_handler(StarletteHTTPException)(_http_error)
    app.exception_handler(DBAPIError)(_database_error)
    app.exception_handler(PoolTimeoutError)(_pool_timeout)
