"""Liveness and readiness probes for load balancers and orchestrators.

`/health` also names the version and the commit the process runs, so a deploy can wait
for the new commit rather than for the old instances to answer.
"""

import subprocess
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from blogapi import __version__
from blogapi.config import settings
from blogapi.db import SessionDep
from blogapi.errors import RETRY_AFTER_SECONDS, ErrorMessage
from blogapi.schema import Schema, database_revisions, revision_names

router = APIRouter(prefix="/health", tags=["health"])

CODE_DIR = Path(__file__).resolve().parent.parent
GIT_SECONDS = 5


class Liveness(BaseModel):
    status: Literal["ok"] = "ok"
    version: str = Field(description="blogapi's version")
    commit: str | None = Field(
        description="The commit the process runs: BLOGAPI_COMMIT (the image's build "
        "argument), SOURCE_VERSION or HEROKU_SLUG_COMMIT (Heroku), else the HEAD of the "
        "git checkout the code was loaded from; null when none says"
    )

    @classmethod
    def of_this_process(cls) -> "Liveness":
        """Resolved once as the process starts: a checkout changed under a running
        process must not make it claim the new commit."""
        return cls(version=__version__, commit=settings.commit or checkout_head())


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
    503: {
        "model": ErrorMessage,
        "description": "Not ready, with `Retry-After`: the database is unreachable or "
        "the migrations are not applied yet (`The database is unavailable; try again "
        "shortly`), or its schema is behind the code's (`schema at 0003, code needs "
        "0004`). Without `Retry-After`: the migrations failed (see the server log).",
    },
}


@router.get("", summary="Liveness: the process answers, with its version and commit")
async def alive(request: Request) -> Liveness:
    liveness: Liveness = request.app.state.liveness
    return liveness


@router.get(
    "/ready",
    summary="Readiness: the database answers, at the code's schema or a newer one",
    response_model_exclude_none=True,
    responses=READY_RESPONSES,
)
async def ready(request: Request, session: SessionDep) -> Readiness:
    schema: Schema = request.app.state.schema
    connection = await session.connection()
    found = await connection.run_sync(database_revisions)
    needed = revision_names(schema.heads)
    if schema.unknown(found):
        return Readiness(
            schema_revision=revision_names(found),
            note=f"a revision this code doesn't know (its head is {needed}): a newer "
            "release's, during a rolling deploy or after a rollback",
        )
    if schema.is_behind(found):
        raise HTTPException(
            503,
            detail=f"schema at {revision_names(found)}, code needs {needed}",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    return Readiness()
