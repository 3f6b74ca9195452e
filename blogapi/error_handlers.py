"""The handlers that turn every failure into a JSON answer: the app's own errors
(blogapi.errors), FastAPI's, and the database's."""

import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from blogapi.db_errors import is_transient
from blogapi.errors import ApiError, DatabaseUnavailable

log = logging.getLogger("blogapi")


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(
        error.body(), status_code=error.status_code, headers=error.headers
    )


async def _api_error(request: Request, exc: ApiError) -> Response:
    return error_response(exc)


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
    return error_response(DatabaseUnavailable())


def install_error_handlers(app: FastAPI) -> None:
    app.exception_handler(ApiError)(_api_error)
    app.exception_handler(RequestValidationError)(_invalid_request)
    app.exception_handler(StarletteHTTPException)(_http_error)
    app.exception_handler(DBAPIError)(_database_error)
    app.exception_handler(PoolTimeoutError)(_pool_timeout)
