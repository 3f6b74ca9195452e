"""The database's migration state: the Alembic revisions the code has, the ones the
database is at, and applying the migrations.

`python -m blogapi` applies them before it starts the server. When PostgreSQL can't be
reached then, the server starts anyway with MIGRATE_ON_START, and each worker applies
them in the background, trying again every RETRY_SECONDS until the database answers;
until then every route that uses the database answers 503. On PostgreSQL the workers
take turns (an advisory lock in migrations/env.py): one migrates, the others find the
schema at head. A migration that fails for any other reason is not retried: it is
logged with its traceback and that worker stays not ready (503) until it is restarted.
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from blogapi.db_errors import is_unreachable, unreachable_message
from blogapi.errors import DatabaseUnavailable, NotReady

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"

RETRY_SECONDS = 2
"""How long a worker waits before it tries the migrations again."""

MIGRATIONS_FAILED = "The database schema could not be migrated; see the server log"

log = logging.getLogger("blogapi")


def alembic_config() -> Config:
    config = Config(ALEMBIC_INI)
    config.attributes["configure_logging"] = False
    return config


def migrate() -> None:
    """`alembic upgrade head` on DATABASE_URL, in this process."""
    command.upgrade(alembic_config(), "head")


def _is_migration_step(record: logging.LogRecord) -> bool:
    return str(record.msg).startswith("Running ")


def log_migration_steps() -> None:
    """Put Alembic's `Running upgrade 0003 -> 0004, ...` lines in the server log, through
    blogapi's handler; its other INFO lines (which every readiness check repeats) stay out."""
    steps = logging.getLogger("alembic.runtime.migration")
    steps.handlers = list(log.handlers)
    steps.filters = [_is_migration_step]
    steps.setLevel(logging.INFO)
    steps.propagate = False


def database_revisions(connection: Connection) -> tuple[str, ...]:
    """The revisions the database's alembic_version holds: none before any migration."""
    return MigrationContext.configure(connection).get_current_heads()


def revision_names(revisions: tuple[str, ...]) -> str:
    return ", ".join(revisions) or "base"


@dataclass
class MigrationState:
    """The code's Alembic revisions, read once at start, and whether this process may use
    the database yet (`migrating` while it applies the migrations itself)."""

    heads: tuple[str, ...]
    revisions: frozenset[str]
    state: Literal["migrating", "migrated", "failed"] = "migrated"

    @classmethod
    def of_this_code(cls, migrating: bool = False) -> "MigrationState":
        scripts = ScriptDirectory.from_config(alembic_config())
        return cls(
            heads=tuple(scripts.get_heads()),
            revisions=frozenset(script.revision for script in scripts.walk_revisions()),
            state="migrating" if migrating else "migrated",
        )

    def unknown(self, found: tuple[str, ...]) -> tuple[str, ...]:
        """The revisions found that this code's migrations don't have: a newer release's."""
        return tuple(revision for revision in found if revision not in self.revisions)

    def is_behind(self, found: tuple[str, ...]) -> bool:
        """Whether the database lacks some of this code's migrations (it knows them all)."""
        return not self.unknown(found) and set(found) != set(self.heads)

    def require_migrated(self) -> None:
        """503 until this process's migrations are applied."""
        if self.state == "failed":
            raise NotReady(MIGRATIONS_FAILED, retry=False)
        if self.state == "migrating":
            raise DatabaseUnavailable()

    def require_current(self, found: tuple[str, ...]) -> None:
        """503 while the database's schema is behind this code's."""
        if self.is_behind(found):
            raise NotReady(
                f"schema at {revision_names(found)}, code needs "
                f"{revision_names(self.heads)}",
                retry=True,
            )

    async def migrate_until_applied(self) -> None:
        """Apply the migrations in a thread, trying again every RETRY_SECONDS while the
        database can't be reached; a cancelled wait leaves the thread to finish alone."""
        log_migration_steps()
        while True:
            try:
                await anyio.to_thread.run_sync(migrate, abandon_on_cancel=True)
            except Exception as error:
                if not is_unreachable(error):
                    self.state = "failed"
                    log.exception(
                        "the migrations failed: this worker answers 503 until it is "
                        "restarted"
                    )
                    return
                log.warning(
                    "%s; retrying in %d s", unreachable_message(error), RETRY_SECONDS
                )
                await anyio.sleep(RETRY_SECONDS)
            else:
                self.state = "migrated"
                log.info("the migrations are applied; serving")
                return
