"""Starting before the database, and readiness that says the schema's state.

- `python -m blogapi` with PostgreSQL down comes up anyway (liveness 200, the rest 503),
  logs one line per retry, and migrates and serves once the database answers: real
  processes against a PostgreSQL cluster of the test's own (PostgreSQL run only).
- The same in one process (TestClient, MIGRATE_ON_START), and a migration that fails for
  another reason: on both databases.
- `/health/ready` with the schema behind, at and ahead of the code's head: scratch
  databases on both.
- The Procfile's release phase fails fast when the database can't be reached.
- More than one worker without REDIS_URL: one warning at start that the login and
  password recovery limits then hold per worker (real servers).
"""

import logging
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import httpx
import pytest
from alembic.script import ScriptDirectory
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import make_url, text

from blogapi.config import settings
from blogapi.db import build_sync_engine
from blogapi.errors import DatabaseUnavailable
from blogapi.main import create_app
from blogapi.migration_state import (
    MIGRATIONS_FAILED,
    RETRY_SECONDS,
    alembic_config,
)
from blogapi.server import warn_if_throttled_per_worker
from tests.factories import blogapi_log, create_post, create_user_and_login
from tests.servers import (
    ServerProcess,
    free_port,
    postgres_cluster,
    requires_postgres,
    scratch_database,
)

ROOT = Path(__file__).resolve().parent.parent
PASSWORD_IN_URL = "never-log-this-pw"
ALIVE_SECONDS = 120
"""How soon the server answers /health with the database down: generous, since a loaded
machine starts gunicorn slowly; a server that waited for the database never would."""
READY_SECONDS = 120
"""How soon it is ready once the database is back: a retry interval plus the migrations,
with room for a loaded machine."""
RELEASE_SECONDS = 40
"""How soon the release phase exits when it can't reach the database: its connection
attempt, plus the start-up of the `alembic` command (2 to 7 s on a busy 2-CPU machine),
with room for a machine loaded far more; without a timeout it would wait forever."""
CONNECT_WAIT_SECONDS = 20
"""How long its connection attempt may wait on a host that doesn't answer: libpq's
connect_timeout, 5 s unless DATABASE_URL sets it (libpq's own default is no timeout),
with room for a loaded machine; the silent host gives up after 60 s."""
ATTEMPT_SECONDS = 20
"""How long one migration attempt may take against a port that refuses connections: the
refusal is immediate, the rest is Alembic's start-up, slow on a loaded machine."""

SCRIPTS = ScriptDirectory.from_config(alembic_config())
(HEAD,) = SCRIPTS.get_heads()
REVISIONS = [script.revision for script in SCRIPTS.walk_revisions()]


def assert_not_ready(response: httpx.Response, detail: str) -> None:
    assert response.status_code == 503, response.text
    assert response.json() == {"detail": detail}
    assert int(response.headers["retry-after"]) > 0


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"no {what} in {seconds} s"
        time.sleep(0.1)


def retry_lines(log: str, where: str) -> list[str]:
    return re.findall(
        rf"database not reachable at {re.escape(where)} \(connection refused\); "
        rf"retrying in {RETRY_SECONDS} s",
        log,
    )


@requires_postgres("stops and starts a PostgreSQL cluster of its own")
def test_the_server_starts_before_the_database_and_migrates_once_it_answers() -> None:
    with postgres_cluster() as cluster:
        cluster.stop()
        url = make_url(cluster.url).set(password=PASSWORD_IN_URL)
        server = ServerProcess(url.render_as_string(hide_password=False), workers=2)
        try:
            started = time.monotonic()
            server.launch()
            server.wait_until_alive(ALIVE_SECONDS)
            assert time.monotonic() - started < ALIVE_SECONDS
            with server.client() as client:
                assert_not_ready(
                    client.get("/health/ready"), DatabaseUnavailable.default_detail
                )
                registered = client.post(
                    "/users/", json={"email": "early@example.com", "password": "x" * 12}
                )
                assert_not_ready(registered, DatabaseUnavailable.default_detail)
                assert client.get("/health").json()["status"] == "ok"

            where = f"127.0.0.1:{cluster.port}"
            wait_for(
                lambda: len(retry_lines(server.log_text(), where)) >= 4,
                ALIVE_SECONDS,
                "four retry lines (two workers, one try each every 2 s)",
            )
            assert (
                f"database not reachable at {where} (connection refused); starting anyway"
                in server.log_text()
            )

            cluster.start()
            server.wait_until_healthy(READY_SECONDS)
            wait_for(
                lambda: server.log_text().count("the migrations are applied") == 2,
                READY_SECONDS,
                "migrations applied in both workers",
            )
            with server.client() as client:
                for _ in range(4):  # both workers serve
                    _, headers = create_user_and_login(client)
                    create_post(client, headers)
                    assert client.get("/posts/", headers=headers).status_code == 200
                assert client.get("/health/ready").json() == {"status": "ok"}
        finally:
            server.stop()
            log = server.log_text()
            server.close()

        steps = re.findall(r"Running upgrade (\S*) -> (\S+),", log)
        assert sorted(revision for _, revision in steps) == sorted(REVISIONS), log
        assert PASSWORD_IN_URL not in log
        assert log.count("Booting worker") == 2, "a worker restarted"
        engine = build_sync_engine(url.render_as_string(hide_password=False))
        try:
            with engine.connect() as connection:
                found = connection.execute(
                    text("SELECT version_num FROM alembic_version")
                )
                assert found.scalars().all() == [HEAD]
        finally:
            engine.dispose()


def app_on(
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    migrate_on_start: bool = False,
    log: pytest.LogCaptureFixture | None = None,
) -> FastAPI:
    """An app whose settings name another database, as its environment would; `log`
    gets the blogapi logger's records, which don't reach pytest's root handler."""
    monkeypatch.setattr(settings, "database_url", database_url)
    monkeypatch.setattr(settings, "migrate_on_start", migrate_on_start)
    steps = logging.getLogger("alembic.runtime.migration")
    for attribute in ("handlers", "filters", "propagate"):  # log_migration_steps sets
        monkeypatch.setattr(steps, attribute, getattr(steps, attribute))
    app = create_app()
    if log is not None:
        logger = logging.getLogger("blogapi")
        monkeypatch.setattr(logger, "handlers", [*logger.handlers, log.handler])
    return app


def test_migrating_on_start_answers_503_and_retries_while_the_database_is_down(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    url = f"postgresql+psycopg://blogapi:{PASSWORD_IN_URL}@127.0.0.1:{port}/blogapi"
    app = app_on(monkeypatch, url, migrate_on_start=True, log=caplog)

    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        assert_not_ready(
            client.get("/health/ready"), DatabaseUnavailable.default_detail
        )
        assert_not_ready(
            client.post(
                "/users/", json={"email": "a@example.com", "password": "x" * 12}
            ),
            DatabaseUnavailable.default_detail,
        )
        wait_for(
            lambda: len(retry_lines(caplog.text, f"127.0.0.1:{port}")) >= 2,
            RETRY_SECONDS + ATTEMPT_SECONDS,
            "second retry line",
        )
        stopping = time.monotonic()
    assert time.monotonic() - stopping < RETRY_SECONDS, "shutdown waited for a retry"

    assert PASSWORD_IN_URL not in caplog.text
    tries = [r.created for r in caplog.records if "retrying in" in r.getMessage()]
    assert RETRY_SECONDS <= tries[1] - tries[0] < RETRY_SECONDS + ATTEMPT_SECONDS


def test_a_failing_migration_is_logged_and_leaves_the_app_not_ready(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Tables already there but no alembic_version: the first migration fails, for a
    reason no retry would fix. It is logged with its traceback, once, not retried."""
    with scratch_database("failing") as url:
        engine = build_sync_engine(url)
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE alembic_version"))
        engine.dispose()
        app = app_on(monkeypatch, url, migrate_on_start=True, log=caplog)

        with TestClient(app) as client:
            wait_for(
                lambda: (
                    client.get("/health/ready").json()["detail"] == MIGRATIONS_FAILED
                ),
                10,
                "failed migration",
            )
            response = client.post(
                "/users/", json={"email": "a@example.com", "password": "x" * 12}
            )
            assert response.status_code == 503
            assert response.json() == {"detail": MIGRATIONS_FAILED}
            assert client.get("/health").status_code == 200

    (failure,) = [
        record
        for record in caplog.records
        if "migrations failed" in record.getMessage()
    ]
    assert failure.levelno == logging.ERROR and failure.exc_info is not None
    assert "retrying" not in caplog.text


THROTTLE_WARNING = "no REDIS_URL"


def test_workers_without_redis_are_warned_at_start_that_limits_hold_per_worker() -> (
    None
):
    """Two servers of two workers each, one with REDIS_URL (never contacted: nobody
    logs in), side by side on one database."""
    with scratch_database("workers") as url:
        alone = ServerProcess(url, workers=2)
        shared = ServerProcess(url, workers=2, REDIS_URL="redis://127.0.0.1:9/0")
        try:
            for server in (alone, shared):
                server.launch()
            for server in (alone, shared):
                server.wait_until_healthy()
            warnings = [
                line
                for line in alone.log_text().splitlines()
                if THROTTLE_WARNING in line
            ]
            quiet = shared.log_text()
        finally:
            alone.close()
            shared.close()

    (warning,) = warnings
    assert "WARNING blogapi 2 workers and no REDIS_URL" in warning
    assert "limits hold per worker" in warning
    assert "set REDIS_URL" in warning
    assert THROTTLE_WARNING not in quiet


def test_one_worker_is_not_warned(caplog: pytest.LogCaptureFixture) -> None:
    with blogapi_log(caplog):
        warn_if_throttled_per_worker(1)

    assert caplog.records == []


def test_ready_at_the_code_s_head(client: TestClient) -> None:
    response = client.get("/health/ready")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_is_503_naming_the_revision_when_the_schema_is_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with (
        scratch_database("behind", revision="0003") as url,
        TestClient(app_on(monkeypatch, url)) as client,
    ):
        response = client.get("/health/ready")

    assert_not_ready(response, f"schema at 0003, code needs {HEAD}")


def test_ready_is_200_and_names_a_schema_ahead_of_the_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A newer release migrated the database (rolling deploy) or the code was rolled back:
    this code still serves, and says what it found."""
    with scratch_database("ahead") as url:
        engine = build_sync_engine(url)
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        engine.dispose()
        with TestClient(app_on(monkeypatch, url)) as client:
            response = client.get("/health/ready")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body.pop("note")
    assert body == {"status": "ok", "schema": "9999"}


def test_readiness_documents_its_answers(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/health/ready"]["get"]

    assert set(operation["responses"]) == {"200", "503"}
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/Readiness"}
    assert "code needs" in operation["responses"]["503"]["description"]


class SilentDatabase:
    """A port that accepts connections and never answers, like a host that hangs; it
    notes how long each client waited before it gave up."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.waits: list[float] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            opened = time.monotonic()
            with connection:
                connection.settimeout(60)
                with suppress(OSError):
                    while connection.recv(1024):
                        pass
            self.waits.append(time.monotonic() - opened)

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("database", ["refusing", "silent"])
def test_the_release_phase_fails_fast_when_the_database_is_unreachable(
    database: str,
) -> None:
    """`alembic upgrade head` gives up at once on a refused connection, and after libpq's
    connect_timeout (5 s) on a host that doesn't answer, so a deploy stops there."""
    processes = dict(
        line.split(":", 1)
        for line in (ROOT / "Procfile").read_text().splitlines()
        if line.strip()
    )
    silent = SilentDatabase() if database == "silent" else None
    port = silent.port if silent else free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DATABASE_URL": f"postgresql://blogapi:{PASSWORD_IN_URL}@127.0.0.1:{port}/x",
        "SECRET_KEY": "s" * 40,
    }
    started = time.monotonic()
    try:
        release = subprocess.run(
            shlex.split(processes["release"]),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=RELEASE_SECONDS * 2,
            check=False,
        )
    finally:
        if silent:
            silent.close()
    elapsed = time.monotonic() - started

    assert release.returncode != 0
    assert "OperationalError" in release.stderr
    assert PASSWORD_IN_URL not in release.stdout + release.stderr
    assert elapsed < RELEASE_SECONDS, f"took {elapsed:.1f} s"
    if silent:
        wait_for(lambda: bool(silent.waits), 5, "connection closed")
        (waited,) = silent.waits
        assert waited < CONNECT_WAIT_SECONDS, f"waited {waited:.1f} s for an answer"
