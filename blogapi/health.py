"""Liveness and readiness probes for load balancers and orchestrators."""

from fastapi import APIRouter
from sqlalchemy import text

from blogapi.db import SessionDep
from blogapi.errors import error_responses

router = APIRouter(prefix="/health", tags=["health"])


@router.get("", summary="Liveness: the process answers")
async def alive() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/ready", summary="Readiness: the database answers", responses=error_responses(503)
)
async def ready(session: SessionDep) -> dict[str, str]:
    await session.exec(text("SELECT 1"))
    return {"status": "ok"}
