"""What the app builds at start and shares between requests: one typed object, made by
the lifespan (blogapi.main) and reached through the `Resources` dependency."""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import anyio
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from blogapi.migration_state import MigrationState
from blogapi.throttle import AttemptThrottle, OneAtATime, SignupThrottle

if TYPE_CHECKING:
    from blogapi.tracing import Tracing


@dataclass
class AppResources:
    engine: AsyncEngine
    connection_line: anyio.Lock
    """Requests wait here in arrival order for a database connection (blogapi.db)."""
    login_throttle: AttemptThrottle
    recovery_throttle: AttemptThrottle
    """Password recovery requests, counted apart from logins in the same store."""
    verification_throttle: AttemptThrottle
    """Requests for a new verification link, counted the same way."""
    signup_throttle: SignupThrottle
    """Registrations per client network, in the same store."""
    exports: OneAtATime
    """One data export at a time per user, claimed in the same store."""
    migrations: MigrationState
    commit: str | None
    """The commit this process runs, resolved once at start (see /health)."""
    tracing: "Tracing | None" = None
    """This worker's tracer provider, when traces are exported (blogapi.tracing)."""

    def require_ready(self) -> None:
        """The one readiness gate for the database: 503 until the migrations are applied."""
        self.migrations.require_migrated()


def resources_of(app: Starlette) -> AppResources:
    """The one place that reads the app's state (set by the lifespan)."""
    resources: AppResources = app.state.resources
    return resources


async def get_resources(request: Request) -> AppResources:
    """Async, as every dependency here: FastAPI runs a plain function in a thread."""
    return resources_of(request.app)


Resources = Annotated[AppResources, Depends(get_resources)]
