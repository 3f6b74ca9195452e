"""Alembic's entry point: the URL comes from blogapi's settings, the schema from its models."""

import logging
from collections.abc import Callable
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError
from sqlmodel import SQLModel

import blogapi.password_reset
import blogapi.votes  # noqa: F401  (imports every other table model)
from blogapi.config import settings
from blogapi.db import build_sync_engine

MIGRATION_LOCK = 0x626C6F67617069  # "blogapi"

log = logging.getLogger("blogapi")

config = context.config
if config.config_file_name is not None and config.attributes.get(
    "configure_logging", True
):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def for_this_database(connection: Connection) -> Callable[..., bool]:
    """Leave out of the comparison what a model declares for another database only.

    An index declared with `.ddl_if(dialect="postgresql")` is never created on SQLite, so
    autogenerate must not report it missing there.
    """

    def include_object(
        obj: Any, name: str, type_: str, reflected: bool, _: Any
    ) -> bool:
        rule = getattr(obj, "_ddl_if", None)
        if reflected or rule is None or rule.dialect is None:
            return True
        dialects = (rule.dialect,) if isinstance(rule.dialect, str) else rule.dialect
        return connection.dialect.name in dialects

    return include_object


def run_migrations() -> None:
    url = config.attributes.get("database_url", settings.database_url)
    engine = build_sync_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=SQLModel.metadata,
            compare_type=True,
            include_object=for_this_database(connection),
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # Servers started together each migrate on start: one at a time, and the
                # later ones find the schema at head. Released when the transaction ends.
                # Neither the wait for the lock nor a long index build may hit the
                # timeout set below.
                connection.execute(text("SET LOCAL statement_timeout = 0"))
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                )
            context.run_migrations()
            if connection.dialect.name == "postgresql":
                set_statement_timeout(connection)
    engine.dispose()


def set_statement_timeout(connection: Connection) -> None:
    """Make DB_STATEMENT_TIMEOUT the database's default for new sessions.

    Set on the server, it holds for every connection, behind a transaction-mode pooler
    too, where libpq's `options` is refused or ignored; it costs requests nothing. A
    role that does not own the database may not set it: then say what to run instead.
    """
    name = connection.execute(text("SELECT current_database()")).scalar_one()
    milliseconds = int(settings.db_statement_timeout * 1000)
    database = connection.dialect.identifier_preparer.quote(name)
    try:
        with connection.begin_nested():
            connection.execute(
                text(
                    f"ALTER DATABASE {database} SET statement_timeout = {milliseconds}"
                )
            )
    except DBAPIError as error:
        log.warning(
            "could not set statement_timeout on database %s (%s); have its owner run: "
            "ALTER DATABASE %s SET statement_timeout = %d",
            name,
            error.orig,
            database,
            milliseconds,
        )


run_migrations()
