"""What a database error means: the server unreachable or busy for now (worth a retry,
answered 503), a conflict (the request is run again), or anything else (a bug)."""

from typing import TypeGuard

from sqlalchemy import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from blogapi.config import settings

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


def is_unreachable(error: BaseException) -> TypeGuard[DBAPIError]:
    """Whether PostgreSQL could not be reached, or would not take a connection yet, as
    opposed to a migration being wrong: only the former is worth trying again.

    libpq gives no SQLSTATE when it cannot connect: refused, timed out, no such host, and
    the server's own refusals at connection time too (starting up, too many clients, but
    also a wrong password or database name; those are retried, their reason in each
    log line). SQLite is never unreachable.
    """
    return (
        isinstance(error, DBAPIError)
        and getattr(error.orig, "sqlite_errorcode", None) is None
        and is_transient(error, UNREACHABLE_SQLSTATES)
    )


def unreachable_message(error: DBAPIError) -> str:
    """`database not reachable at db.example:5432 (connection refused)`: where, and
    libpq's reason; never the URL's password."""
    url = make_url(settings.database_url)
    where = f"{url.host}:{url.port or 5432}" if url.host else "its local socket"
    lines = str(error.orig).strip().splitlines() or [type(error.orig).__name__]
    reason = lines[0].rsplit(": ", 1)[-1].strip()
    if url.password:
        reason = reason.replace(url.password, "***")
    return f"database not reachable at {where} ({reason[:1].lower()}{reason[1:]})"
