"""DB_MAX_CONNECTIONS caps the connections of the whole server, whatever WEB_CONCURRENCY
says, against real `python -m blogapi` processes."""

import threading
import time
from itertools import count
from pathlib import Path

from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from tests.factories import create_post, create_user_and_login
from tests.servers import requires_postgres, running_server, scratch_database

LOAD_CLIENTS = 24
LOAD_SECONDS = 3
READS_PER_CLIENT = 3


def worker_pids(master: int) -> list[int]:
    """The processes whose parent is `master`: gunicorn's workers."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:
            children.append(int(stat.parent.name))
    return children


def test_more_workers_than_connections_starts_fewer_workers_and_says_so() -> None:
    with (
        scratch_database("budget") as url,
        running_server(url, workers=3, DB_MAX_CONNECTIONS="2") as server,
    ):
        assert server.process is not None
        assert len(worker_pids(server.process.pid)) == 2
        log = server.log_text()
        assert "starting 2 workers, not 3" in log, log
        assert "database connections: 2 workers x 1 each (DB_MAX_CONNECTIONS=2)" in log


def test_the_server_logs_how_it_shares_the_connections() -> None:
    with (
        scratch_database("budget") as url,
        running_server(url, workers=2, DB_MAX_CONNECTIONS="16") as server,
    ):
        log = server.log_text()
        assert "database connections: 2 workers x 8 each (DB_MAX_CONNECTIONS=16)" in log
        assert "starting" not in log


@requires_postgres("counts the server's connections in pg_stat_activity")
def test_under_load_the_server_holds_at_most_db_max_connections() -> None:
    limit = 4
    with (
        scratch_database("budget") as url,
        running_server(url, workers=2, DB_MAX_CONNECTIONS=str(limit)) as server,
        server.client() as client,
    ):
        _, headers = create_user_and_login(client)
        post = create_post(client, headers)
        observer = create_engine(
            make_url(url).set(drivername="postgresql+psycopg"), poolclass=NullPool
        )
        database = make_url(url).database
        deadline = time.monotonic() + LOAD_SECONDS
        statuses: list[int] = []

        def read_until_deadline() -> None:
            """At least READS_PER_CLIENT reads, however slow the machine, then more until
            the deadline."""
            with server.client(timeout=60) as own:
                for read in count():
                    if read >= READS_PER_CLIENT and time.monotonic() >= deadline:
                        return
                    statuses.append(
                        own.get(f"/posts/{post['id']}", headers=headers).status_code
                    )

        clients = [
            threading.Thread(target=read_until_deadline) for _ in range(LOAD_CLIENTS)
        ]
        for thread in clients:
            thread.start()
        most = 0
        with observer.connect() as connection:
            while any(thread.is_alive() for thread in clients):
                held = connection.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": database},
                ).scalar_one()
                most = max(most, held)
                time.sleep(0.02)
        for thread in clients:
            thread.join()
        observer.dispose()

    assert len(statuses) >= LOAD_CLIENTS * READS_PER_CLIENT
    assert set(statuses) == {200}
    assert 0 < most <= limit, most
