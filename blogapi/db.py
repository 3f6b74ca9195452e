"""The database engine, the session dependency and the column types the models share."""

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import Depends, Request
from sqlalchemy import DateTime, Engine, Executable, Row, create_engine, event, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.types import TypeDecorator
from sqlalchemy.util.concurrency import greenlet_spawn
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from blogapi.config import settings

SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

MAX_ID = 2**31 - 1
"""Ids are INTEGER columns: anything above this cannot name a row."""


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp; SQLite hands back naive values, which are UTC here."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(
        self, value: datetime | None, dialect: Any
    ) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utc_now() -> datetime:
    return datetime.now(UTC)


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


def build_sync_engine(url: str) -> Engine:
    """An engine on the driver DATABASE_URL names (psycopg2 by default): for migrations."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, hide_parameters=True)
        event.listen(engine, "connect", _enable_sqlite_pragmas)
        return engine
    return create_engine(
        parsed, hide_parameters=True, connect_args={"connect_timeout": 5}
    )


def build_engine(url: str) -> AsyncEngine:
    """The application's engine: asyncpg for PostgreSQL, aiosqlite for SQLite."""
    parsed = make_url(url)
    pool = {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout,
        # Errors logged from the database must not carry bound values (password hashes).
        "hide_parameters": True,
    }
    if parsed.get_backend_name() == "sqlite":
        # aiosqlite logs each statement with its bound values at DEBUG: never let it.
        logging.getLogger("aiosqlite").setLevel(logging.INFO)
        engine = create_async_engine(parsed.set(drivername="sqlite+aiosqlite"), **pool)
        event.listen(engine.sync_engine, "connect", _enable_sqlite_pragmas)
        return engine
    if "sslmode" in parsed.query:
        # Hosts give libpq's sslmode; asyncpg takes the same values as `ssl`.
        parsed = parsed.difference_update_query(["sslmode"]).update_query_dict(
            {"ssl": parsed.query["sslmode"]}
        )
    engine = create_async_engine(
        parsed.set(drivername="postgresql+asyncpg"),
        # A statement, or the check of an idle connection, that gets no answer in time
        # fails (503) rather than hanging its request: a dropped network path never
        # answers, and a lock held elsewhere may not be let go.
        connect_args={"timeout": 5, "command_timeout": settings.db_statement_timeout},
        # The most recently used connection goes out first, so under light load the
        # same few stay busy and the rest can idle (and get checked when next used).
        pool_use_lifo=True,
        **pool,
    )
    event.listen(engine.sync_engine.pool, "checkin", _note_checkin)
    event.listen(engine.sync_engine.pool, "checkout", _ping_if_idle)
    return engine


IDLE_PING_SECONDS = 1.0
"""A pooled connection idle for longer than this is checked before it is handed out."""


def _note_checkin(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(
    dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
) -> None:
    """Check a connection that sat idle before use, so one the server dropped (a restart,
    an idle timeout) is replaced instead of failing a request.

    A connection handed back moments ago is used as it is: under load that saves a round
    trip per request, and a server that goes away mid-load fails requests either way.
    """
    idle_since = record.info.get("idle_since")
    if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
        return
    try:
        dbapi_connection.ping()
    except Exception as error:
        raise DisconnectionError("connection dropped while idle") from error


_AUTOCOMMIT = {"isolation_level": "AUTOCOMMIT"}


@asynccontextmanager
async def _database_slot(request: Request) -> AsyncIterator[AsyncEngine]:
    """The app's engine (its connections belong to the app's event loop), once one of its
    connections is this request's to use.

    Requests queue for a connection in arrival order: the pool's own queue lets a newcomer
    take a connection ahead of requests that have waited for seconds. A request that
    waits longer than DB_POOL_TIMEOUT gets a 503.
    """
    slots: anyio.Semaphore = request.app.state.db_slots
    try:
        slots.acquire_nowait()  # succeeds only while no request is waiting
    except anyio.WouldBlock:
        with anyio.move_on_after(settings.db_pool_timeout) as waiting:
            await slots.acquire()
        if waiting.cancelled_caught:
            raise PoolTimeoutError("no database connection came free in time") from None
    try:
        yield request.app.state.engine
    finally:
        slots.release()


@asynccontextmanager
async def open_session(
    request: Request, *, reads_only: bool
) -> AsyncIterator[AsyncSession]:
    """A session for the request. One that only reads runs without a transaction: each
    statement sees what is committed, and BEGIN and ROLLBACK would be two more round trips.
    """
    async with (
        _database_slot(request) as engine,
        AsyncSession(engine, expire_on_commit=False) as session,
    ):
        if reads_only:
            await session.connection(execution_options=_AUTOCOMMIT)
        yield session


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's session; GET requests only read."""
    async with open_session(request, reads_only=request.method == "GET") as session:
        yield session


async def read_rows(
    request: Request, statement: Executable, params: dict[str, Any]
) -> Sequence[Row[Any]]:
    """The rows of one statement that only reads, run without a transaction.

    For a read made of Core statements alone, which needs no session. Taking a pooled
    connection, running the statement and giving the connection back run in a single
    greenlet, the primitive SQLModel's AsyncSession.exec is built on, in a task that
    runs to the end: AsyncConnection starts a greenlet for each of those steps and a
    task for its close, and on the list, the hottest route, that was about a tenth of
    its time.
    """
    async with _database_slot(request) as engine:
        work = greenlet_spawn(_all_rows, engine.sync_engine, statement, params)
        return await _to_completion(work)


def _all_rows(
    engine: Engine, statement: Executable, params: dict[str, Any]
) -> Sequence[Row[Any]]:
    with engine.connect() as connection:
        connection.execution_options(**_AUTOCOMMIT)
        return connection.execute(statement, params).all()


_T = TypeVar("_T")


async def _to_completion(work: Coroutine[Any, Any, _T]) -> _T:
    """The result of `work`, run in a task of its own that a cancelled caller waits for.

    A cancellation that reached the connection's return to the pool (which awaits the
    driver on SQLite) would leave the connection checked out for good; so the caller's
    cancellation is raised only once the work is done, and the request's database slot
    is free only once its connection is.
    """
    task = asyncio.ensure_future(work)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as error:
            cancelled = error
    if cancelled is not None:
        raise cancelled
    return task.result()


SessionDep = Annotated[AsyncSession, Depends(get_session)]
