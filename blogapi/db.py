"""The database engine, the session dependency and the column types the models share."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio
from fastapi import Depends, Request
from sqlalchemy import DateTime, Engine, event
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session, SQLModel, create_engine

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


def build_engine(url: str) -> Engine:
    options = {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout,
        # Errors logged from the database must not carry bound values (password hashes).
        "hide_parameters": True,
    }
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False}, **options
        )
        event.listen(engine, "connect", _enable_sqlite_pragmas)
        return engine
    return create_engine(
        url, pool_pre_ping=True, connect_args={"connect_timeout": 5}, **options
    )


engine = build_engine(settings.database_url)
DB_SLOTS = settings.db_pool_size + settings.db_max_overflow


async def get_session(request: Request) -> AsyncIterator[Session]:
    """A session per request; at most one pooled connection per request in flight.

    Requests wait for a slot before they touch the pool, so a thread never waits for a
    connection that another request, itself waiting for a thread, holds (a known FastAPI
    deadlock). This generator is async so its clean-up never needs a worker thread. A
    request that waits longer than DB_POOL_TIMEOUT for a slot gets a 503.
    """
    slots: anyio.Semaphore = request.app.state.db_slots
    with anyio.move_on_after(settings.db_pool_timeout) as waiting:
        await slots.acquire()
    if waiting.cancelled_caught:
        raise PoolTimeoutError("no database connection came free in time")
    try:
        with Session(engine, expire_on_commit=False) as session:
            yield session
    finally:
        slots.release()


SessionDep = Annotated[Session, Depends(get_session)]
