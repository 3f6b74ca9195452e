"""Liveness and readiness probes for load balancers and orchestrators.

`/health` also names the version and the commit the process runs, so a deploy can wait
for the new commit rather than for the old instances to answer.
"""

import subprocess
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from blogapi import __version__
from blogapi.config import settings
from blogapi.errors import DatabaseUnavailable, NotReady, error_responses
from blogapi.http_metrics import MeteredRoute
from blogapi.migration_state import database_revisions, revision_names
from blogapi.resources import Resources

router = APIRouter(prefix="/health", tags=["health"], route_class=MeteredRoute)


CODE_DIR = Path(__file__).resolve().parent.parent
GIT_SECONDS = 5


class Liveness(BaseModel):
    status: Literal["ok"] = Field(default="ok", examples=["ok"])
    version: str = Field(description="blogapi's version", examples=[__version__])
    commit: str | None = Field(
        examples=["871b89745c0d2e6f1a3b4c5d6e7f8091a2b3c4d5"],
        description="The commit the process runs: BLOGAPI_COMMIT (the image's build "
        "argument), SOURCE_VERSION or HEROKU_SLUG_COMMIT (Heroku), else the HEAD of the "
        "git checkout the code was loaded from; null when none says",
    )


def running_commit() -> str | None:
    """The commit this process runs, resolved once as it starts: a checkout changed
    under a running process must not make it claim the new commit."""
    return settings.commit or checkout_head()


def checkout_head() -> str | None:
    """HEAD of the git checkout the code lives at the top of, if it does. The checkout
    may belong to another user (a deploy user's, read by the app's): name it safe."""
    try:
        found = subprocess.run(
            ["git", "-c", f"safe.directory={CODE_DIR}", "-C", str(CODE_DIR),
             "rev-parse", "--show-toplevel", "HEAD"],
            capture_output=True, text=True, timeout=GIT_SECONDS, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = found.stdout.split()
    if found.returncode != 0 or len(lines) != 2 or Path(lines[0]) != CODE_DIR:
        return None
    return lines[1]


class Readiness(BaseModel):
    # A whole example: the usual answer has no `schema` or `note`.
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: Literal["ok"] = "ok"
    schema_revision: str | None = Field(
        default=None,
        serialization_alias="schema",
        description="The database's revision, only when this code doesn't know it",
    )
    note: str | None = None


READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": 'Ready: `{"status": "ok"}`. A database at a revision this '
        "code doesn't know (a newer release's, during a rolling deploy or after a code "
        'rollback) is ready too, and named: `{"status": "ok", "schema": "0005", '
        '"note": ...}`.'
    },
    **error_responses(DatabaseUnavailable, NotReady),
}


async def _revisions_if_idle(engine: AsyncEngine) -> tuple[str, ...] | None:
    """The database's revisions, read on a connection the pool has idle (or opens) now,
    outside the requests' line; None when every connection is checked out."""
    pool = engine.sync_engine.pool
    if isinstance(pool, QueuePool) and pool.checkedout() >= pool.size():
        return None
    async with engine.connect() as connection:
        return await connection.run_sync(database_revisions)


@router.get("", summary="Liveness: the process answers, with its version and commit")
async def alive(resources: Resources) -> Liveness:
    return Liveness(version=__version__, commit=resources.commit)


@router.get(
    "/ready",
    summary="Readiness: the database answers, at the code's schema or a newer one",
    response_model_exclude_none=True,
    responses=READY_RESPONSES,
)
async def ready(resources: Resources) -> Readiness:
    resources.require_ready()
    migrations = resources.migrations
    found = await _revisions_if_idle(resources.engine)
    if found is None:
        # Every connection is serving a request: the database answers. The probe must not
        # wait behind those requests, or a busy instance would be taken out of service.
        return Readiness(note="busy: every database connection is serving requests")
    if migrations.unknown(found):
        return Readiness(
            schema_revision=revision_names(found),
            note="a revision this code doesn't know (its head is "
            f"{revision_names(migrations.heads)}): a newer release's, during a "
            "rolling deploy or after a rollback",
        )
    migrations.require_current(found)
    return Readiness()
