"""Liveness and readiness probes for load balancers and orchestrators."""

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from blogapi.db import SessionDep
from blogapi.errors import RETRY_AFTER_SECONDS, ErrorMessage
from blogapi.schema import Schema, database_revisions, revision_names

router = APIRouter(prefix="/health", tags=["health"])


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


@router.get("", summary="Liveness: the process answers")
async def alive() -> dict[str, str]:
    return {"status": "ok"}


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
