"""The database: engines, and the request's session."""

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from typing import Annotated, Any

import anyio
from fastapi import Depends
from sqlalchemy import URL, Dialect, Engine, create_engine, event, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, Pool, PoolProxiedConnection
from sqlmodel.ext.asyncio.session import AsyncSession

from blogapi import metrics
from blogapi.config import settings
from blogapi.resources import AppResources, Resources

CONNECT_TIMEOUT_SECONDS = 5
"""libpq's connect_timeout when DATABASE_URL sets none."""

IDLE_PING_SECONDS = 1.0
"""A pooled connection idle for longer than this is checked before it is handed out."""


def _unicode_lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _enable_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # SQLite's own lower() folds ASCII letters only; make ?search= ignore case as on PostgreSQL.
    dbapi_connection.create_function("lower", 1, _unicode_lower, deterministic=True)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _libpq_options(url: URL) -> dict[str, Any]:
    """psycopg's connection settings: every libpq option in the URL is used as it is
    (sslmode, channel_binding, options, ...); these fill in what it leaves out.

    No server-side prepared statements unless DB_PREPARED_STATEMENTS is set: behind a
    pooler in transaction mode the next statement may reach another server connection.
    TCP keepalives and tcp_user_timeout turn a network path that went silent into an
    error (503) instead of a request that hangs.
    """
    defaults = {
        "connect_timeout": str(CONNECT_TIMEOUT_SECONDS),
        "keepalives": "1",
        "keepalives_idle": "10",
        "keepalives_interval": "5",
        "keepalives_count": "3",
        "tcp_user_timeout": str(int(settings.db_statement_timeout * 1000)),
    }
    options: dict[str, Any] = {k: v for k, v in defaults.items() if k not in url.query}
    options["prepare_threshold"] = 5 if settings.db_prepared_statements else None
    return options


def build_sync_engine(url: str) -> Engine:
    """A blocking engine on the same URL: for migrations, the CLI and scripts."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, hide_parameters=True)
        event.listen(engine, "connect", _enable_sqlite_pragmas)
        return engine
    return create_engine(
        parsed, hide_parameters=True, connect_args=_libpq_options(parsed)
    )


def build_engine(url: str) -> AsyncEngine:
    """The application's engine: psycopg (async) for PostgreSQL, aiosqlite for SQLite,
    with this worker's share of DB_MAX_CONNECTIONS and no overflow, in autocommit."""
    parsed = make_url(url)
    pool: dict[str, Any] = {
        "pool_size": settings.pool_size,
        "max_overflow": 0,
        "pool_timeout": settings.db_pool_timeout,
        # Every write here is one statement (a cascade and the vote-count triggers run
        # inside it), atomic by itself: BEGIN and COMMIT would be two more round trips
        # per request. A route that must group statements opens a transaction with
        # `await session.connection(execution_options={"isolation_level": ...})`.
        "isolation_level": "AUTOCOMMIT",
        # Errors logged from the database must not carry bound values (password hashes).
        "hide_parameters": True,
    }
    if parsed.get_backend_name() == "sqlite":
        # aiosqlite logs each statement with its bound values at DEBUG: never let it.
        logging.getLogger("aiosqlite").setLevel(logging.INFO)
        engine = create_async_engine(parsed.set(drivername="sqlite+aiosqlite"), **pool)
        event.listen(engine.sync_engine, "connect", _enable_sqlite_pragmas)
        _count_connections(engine.sync_engine.pool)
        return engine
    engine = create_async_engine(
        parsed,
        connect_args=_libpq_options(parsed),
        # The most recently used connection goes out first, so under light load the
        # same few stay busy and the rest can idle (and get checked when next used).
        pool_use_lifo=True,
        **pool,
    )
    event.listen(engine.sync_engine.pool, "checkin", _note_checkin)
    event.listen(
        engine.sync_engine.pool, "checkout", _ping_if_idle(engine.sync_engine.dialect)
    )
    _count_connections(engine.sync_engine.pool)
    return engine


_POOL_STATE = "blogapi.pool_state"


def _count_connections(pool: Pool) -> None:
    """Keep `blogapi_db_pool_connections` (in_use, idle) as the pool's events say, when
    metrics are on. Each pool entry remembers where it is counted, so an event that
    repeats a state (a reconnect during checkout, a ping that failed) counts nothing
    twice."""
    if not settings.metrics_enabled:
        return

    def move(record: ConnectionPoolEntry, state: str | None) -> None:
        counted = record.record_info
        assert counted is not None  # None for a detached connection only
        before = counted.get(_POOL_STATE)
        if before == state:
            return
        if before is not None:
            metrics.pool_connections(before).dec()
        if state is not None:
            metrics.pool_connections(state).inc()
        counted[_POOL_STATE] = state

    def connected(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        move(record, "idle")

    def checked_out(
        _dbapi_connection: Any, record: ConnectionPoolEntry, _: Any
    ) -> None:
        move(record, "in_use")

    def checked_in(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        # No connection: it was invalidated while out, and the entry waits empty.
        move(record, "idle" if dbapi_connection is not None else None)

    def closed(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        move(record, None)

    event.listen(pool, "connect", connected)
    event.listen(pool, "checkout", checked_out)
    event.listen(pool, "checkin", checked_in)
    event.listen(pool, "close", closed)


def _note_checkin(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(
    dialect: Dialect,
) -> Callable[[Any, ConnectionPoolEntry, PoolProxiedConnection], None]:
    """A checkout listener that checks a connection that sat idle before use, so one the
    server dropped (a restart, an idle timeout) is replaced instead of failing a request.

    A connection handed back moments ago is used as it is: under load that saves a round
    trip per request, and a server that goes away mid-load fails requests either way.
    """

    def check(dbapi_connection: Any, record: ConnectionPoolEntry, _: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise DisconnectionError("connection dropped while idle") from error

    return check


async def get_session(resources: Resources) -> AsyncIterator[AsyncSession]:
    """The request's session, with its connection taken from the pool in the order the
    requests asked for one. It gives the connection back when the request is done, or
    earlier when the route closes the session (before bcrypt runs, say); a statement
    after that takes one again."""
    async with session_in_turn(resources) as session:
        yield session


@asynccontextmanager
async def session_in_turn(resources: AppResources) -> AsyncIterator[AsyncSession]:
    """A session whose connection is taken in line, as every request's is, and given
    back when the block ends: for work after a route has returned, such as each batch
    of a streamed response."""
    resources.require_ready()
    async with AsyncSession(resources.engine, expire_on_commit=False) as session:
        await _connect_in_turn(session, resources.connection_line)
        yield session


async def _connect_in_turn(session: AsyncSession, line: anyio.Lock) -> None:
    """SQLAlchemy's async pool may give a connection that is being put back to a request
    that has just asked for one, ahead of those already waiting. Requests line up here
    first (anyio's Lock hands over in arrival order) and go to the pool one at a time,
    so the one at the pool is the longest waiting. Waiting in line counts against
    DB_POOL_TIMEOUT, as waiting in the pool does. The requests in line and at the pool
    are the `waiting` of `blogapi_db_pool_connections`."""
    with _counted_as_waiting():
        try:
            with anyio.fail_after(settings.db_pool_timeout):
                await line.acquire()
        except TimeoutError:
            raise PoolTimeoutError("no database connection came free in time") from None
        try:
            await session.connection()
        finally:
            line.release()


def _counted_as_waiting() -> AbstractContextManager[object]:
    """While metrics are on, as `_count_connections` counts the rest of the pool."""
    if not settings.metrics_enabled:
        return nullcontext()
    return metrics.pool_connections("waiting").track_inprogress()


async def begin_transaction(session: AsyncSession) -> None:
    """Make the session's next statements, until it commits, one transaction, at the
    database's own isolation level (READ COMMITTED on PostgreSQL; SQLite runs one
    writer at a time) rather than each its own, as the engine's AUTOCOMMIT has them.
    For the few routes whose statements must stand or fall together: the session gives
    back the connection it holds and takes one in that mode (BEGIN and COMMIT are two
    more round trips)."""
    await session.close()
    level = session.get_bind().dialect.default_isolation_level
    await session.connection(execution_options={"isolation_level": level})


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
"""Closed when the route returns: its connection is back in the pool before the response
is validated and sent (routes return objects loaded in full)."""
