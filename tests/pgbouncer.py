"""A real PgBouncer in transaction mode, in front of the PostgreSQL server TEST_DATABASE_URL
names, as Heroku, Supabase and Neon put one in front of theirs.

`pgbouncer(database)` starts Debian's `pgbouncer` on a free loopback port, forwarding one
database, and yields the URL a client uses to reach it through the bouncer. Its pool is
smaller than the app's, so server connections really are shared between client
connections, one transaction at a time: whatever a driver leaves behind on a server
connection outside a transaction (a prepared statement, a session setting) may be gone, or
someone else's, on its next transaction.

PgBouncer refuses to run as root, so as root it runs as the `postgres` user. Every wait
here is bounded, and it listens on 127.0.0.1 only.
"""

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy.engine import make_url

from tests.daemons import Daemon
from tests.servers import postgres_test_url

POOL_SIZE = 5
"""Server connections per database: fewer than one app worker's pool."""

IGNORED_STARTUP_PARAMETERS = ""
"""None, on purpose. PgBouncer refuses a client whose start-up packet carries a parameter
it does not track (1.18 tracks client_encoding, DateStyle, TimeZone,
standard_conforming_strings and application_name). libpq (psycopg 2 and 3) and asyncpg
send none other, so nothing needs ignoring; a driver set up to send one, e.g. `options`
with `-c statement_timeout=...`, is refused here as by such a host's PgBouncer, rather
than the setting being silently dropped."""


def _binary() -> str | None:
    # Debian installs it in /usr/sbin, which is not on every user's PATH.
    return shutil.which("pgbouncer") or shutil.which(
        "pgbouncer", path="/usr/sbin:/usr/local/sbin"
    )


class PgBouncer(Daemon):
    """One pgbouncer process, its configuration and log in a temporary folder. SIGTERM
    shuts PgBouncer 1.18 down at once."""

    name = "pgbouncer"
    start_seconds = 60
    stop_seconds = 5

    def __init__(self, binary: str, server_url: str, database: str) -> None:
        super().__init__()
        self.binary = binary
        self.server = make_url(server_url)
        self.database = database
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/{database}"
        self.config = self.folder / "pgbouncer.ini"
        self.log = self.folder / "pgbouncer.log"

    def write_config(self) -> None:
        target = {
            "host": self.server.host or "127.0.0.1",
            "port": self.server.port or 5432,
            "dbname": self.database,
            # auth_type = any takes any client; each connects to the server as this user.
            "user": self.server.username or "postgres",
        }
        if self.server.password:
            target["password"] = self.server.password
        self.config.write_text(
            "[databases]\n"
            + f"{self.database} = "
            + " ".join(f"{name}={value}" for name, value in target.items())
            + "\n\n[pgbouncer]\n"
            + f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\n"
            + "unix_socket_dir =\n"
            + "auth_type = any\n"
            + "pool_mode = transaction\n"
            + f"default_pool_size = {POOL_SIZE}\n"
            + "max_client_conn = 500\n"
            + "log_connections = 1\n"
            + f"ignore_startup_parameters = {IGNORED_STARTUP_PARAMETERS}\n"
            + f"logfile = {self.log}\n"
            + f"pidfile = {self.folder / 'pgbouncer.pid'}\n"
        )

    def start(self) -> "PgBouncer":
        self.write_config()
        command = [self.binary, str(self.config)]
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
            command[1:1] = ["-u", "postgres"]
        self.launch(command)
        return self

    def client_logins(self) -> int:
        """Client connections made so far (each is logged as it logs in)."""
        return self.log_text().count("login attempt")

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"


@contextmanager
def pgbouncer(database: str) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode in front of `database` on the TEST_DATABASE_URL
    server; its `.url` reaches that database through it."""
    binary = _binary()
    if binary is None:
        pytest.skip("needs the pgbouncer program (Debian's `pgbouncer` package)")
    server_url = postgres_test_url()
    assert server_url is not None, "PgBouncer forwards to TEST_DATABASE_URL's server"
    bouncer = PgBouncer(
        binary, server_url.replace("postgres://", "postgresql://", 1), database
    )
    try:
        yield bouncer.start()
    finally:
        bouncer.close()
