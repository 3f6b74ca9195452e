"""Real processes for the tests a TestClient can't stand in for.

- `ServerProcess`: `python -m blogapi` (migrations, then gunicorn) on a free loopback port,
  with the environment a test gives it; it can be stopped, or killed with SIGKILL, and it
  names its workers and the one serving a given connection. Starting it waits until it is
  ready (`/health/ready`), database included.
- `serving_in_thread`: an app object served by uvicorn in a thread of the test's process,
  for tests that reach into the running app (its engine) while real HTTP goes through it.
- `scratch_database`: a database of its own for those servers, made on the PostgreSQL server
  TEST_DATABASE_URL names (dropped afterwards), or a SQLite file in a temporary folder;
  migrated to head, or to the revision a test names.
- `PostgresCluster`: a throwaway PostgreSQL cluster (`initdb` + `pg_ctl`) on a spare port,
  for tests that stop the database; the shared one is never touched.

Every wait here is bounded, and every request goes to 127.0.0.1.
"""

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Self

import httpx
import pytest
import uvicorn
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool
from starlette.types import ASGIApp

ROOT = Path(__file__).resolve().parent.parent
SECRET_KEY = "server-test-secret-key-that-is-long-enough-for-hs256"
START_SECONDS = 120
STOP_SECONDS = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_test_url() -> str | None:
    """TEST_DATABASE_URL when the suite runs on PostgreSQL, else None."""
    url = os.environ.get("TEST_DATABASE_URL", "")
    return url if url.startswith(("postgres://", "postgresql")) else None


def requires_postgres(why: str) -> pytest.MarkDecorator:
    """Skip on the SQLite run, saying why the test needs PostgreSQL."""
    return pytest.mark.skipif(
        postgres_test_url() is None,
        reason=f"{why}: runs when TEST_DATABASE_URL names a PostgreSQL database",
    )


class ServerProcess:
    """`python -m blogapi` in its own process group, serving on 127.0.0.1:<free port>."""

    def __init__(
        self,
        database_url: str,
        workers: int = 1,
        *,
        reload: bool = False,
        dotenv: str = "",
        **env: str,
    ) -> None:
        """`reload`: the development server (`--reload`, uvicorn) instead of gunicorn;
        `dotenv`: the text of a `.env` file in its working directory."""
        self.database_url = database_url
        self.workers = workers
        self.reload = reload
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.folder = Path(tempfile.mkdtemp(prefix="blogapi-server-"))
        self.log = self.folder / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        if dotenv:
            (self.folder / ".env").write_text(dotenv)

    def start(self) -> Self:
        self.launch()
        self.wait_until_healthy()
        return self

    def __enter__(self) -> Self:
        """Started, and closed when the block ends."""
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *_: object) -> None:
        self.close()

    def launch(self) -> None:
        """Start the process without waiting for it to serve."""
        inherited = {
            name: value
            for name, value in os.environ.items()
            if name in {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV"}
        }
        environment = {
            **inherited,
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": self.database_url,
            "SECRET_KEY": SECRET_KEY,
            "BCRYPT_ROUNDS": "4",
            "SIGNUP_MAX_PER_ADDRESS": os.environ["SIGNUP_MAX_PER_ADDRESS"],
            **self.env,
        }
        command = [sys.executable, "-m", "blogapi", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--workers", str(self.workers)]
        if self.reload:
            command.append("--reload")
        with self.log.open("ab") as log:
            # The folder as working directory: no stray .env or blogapi.db is picked up.
            self.process = subprocess.Popen(
                command,
                cwd=self.folder,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_until_healthy(self, seconds: float = START_SECONDS) -> None:
        """Until the server is ready: it answers, and so does its database, migrated."""
        self._wait_for("/health/ready", seconds)

    def wait_until_alive(self, seconds: float = START_SECONDS) -> None:
        """Until the process answers (`/health`), whether or not the database does."""
        self._wait_for("/health", seconds)

    def _wait_for(self, path: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"server exited:\n{self.log_text()}")
            try:
                if httpx.get(f"{self.url}{path}", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.kill()
        raise AssertionError(
            f"{path} did not answer 200 in {seconds} s:\n{self.log_text()}"
        )

    def client(self, timeout: float = 10) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def worker_pids(self) -> set[int]:
        """gunicorn's workers: the master's children (Linux's /proc)."""
        assert self.process is not None
        master = self.process.pid
        children = Path(f"/proc/{master}/task/{master}/children").read_text()
        return {int(pid) for pid in children.split()}

    def worker_serving(self, connection: socket.socket) -> int:
        """The worker that accepted this client connection: the one holding the server's
        end of it, found through /proc/net/tcp and each worker's open files."""
        client_port = connection.getsockname()[1]
        inode = None
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if (int(local.split(":")[1], 16), int(remote.split(":")[1], 16)) == (
                self.port,
                client_port,
            ):
                inode = fields[9]
        assert inode is not None, f"no server end for client port {client_port}"
        for pid in self.worker_pids():
            for descriptor in Path(f"/proc/{pid}/fd").iterdir():
                with suppress(OSError):
                    if os.readlink(descriptor) == f"socket:[{inode}]":
                        return pid
        raise AssertionError(f"no worker holds the connection from {client_port}")

    def _signal(self, number: signal.Signals) -> None:
        # gunicorn's master and its workers share the group this process leads.
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, number)

    def kill(self) -> None:
        """SIGKILL the master and its workers at once, as a crash or an OOM kill would."""
        self._signal(signal.SIGKILL)
        self._reap()

    def stop(self) -> None:
        self._signal(signal.SIGTERM)
        try:
            self._reap()
        except subprocess.TimeoutExpired:
            self.kill()

    def close(self) -> None:
        """Stop, and remove the folder with the log."""
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _reap(self) -> None:
        if self.process is None:
            return
        self.process.wait(timeout=STOP_SECONDS)
        # Workers that outlive their master would keep the port; none may be left.
        deadline = time.monotonic() + STOP_SECONDS
        while _group_alive(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _group_alive(self.process.pid):
            os.killpg(self.process.pid, signal.SIGKILL)


@contextmanager
def serving_in_thread(app: ASGIApp) -> Iterator[str]:
    """`app` served by uvicorn on a free loopback port, in a thread of this process (so a
    test can reach the app's resources while real HTTP goes through it); its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    try:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if server.started or not thread.is_alive():
                break
            time.sleep(0.01)
        assert server.started, "the in-process server did not start"
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=STOP_SECONDS)
        sock.close()


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def running_servers(
    count: int, database_url: str, workers: int = 1, **env: str
) -> Iterator[list[ServerProcess]]:
    """Servers started side by side on one database, which should be migrated already:
    each still runs the (then empty) migrations, as `python -m blogapi` always does."""
    servers = [ServerProcess(database_url, workers, **env) for _ in range(count)]
    try:
        for server in servers:
            server.launch()
        for server in servers:
            server.wait_until_healthy()
        yield servers
    finally:
        for server in servers:
            server.close()


@contextmanager
def running_server(
    database_url: str, workers: int = 1, **env: str
) -> Iterator[ServerProcess]:
    with running_servers(1, database_url, workers, **env) as (server,):
        yield server


def migrate(database_url: str, revision: str = "head") -> None:
    """Bring a scratch database to the latest schema, as `python -m blogapi` would, or
    to an earlier revision."""
    config = Config(ROOT / "alembic.ini")
    config.attributes["configure_logging"] = False
    url = _driver_url(database_url).render_as_string(hide_password=False)
    config.attributes["database_url"] = url
    command.upgrade(config, revision)


@contextmanager
def scratch_database(label: str, revision: str = "head") -> Iterator[str]:
    """A new database at the latest schema (or at `revision`), for server processes;
    removed afterwards.

    On the PostgreSQL run it is created beside TEST_DATABASE_URL (same server and
    credentials, a unique name), so concurrent runs never share it; otherwise it is
    a SQLite file in a temporary folder.
    """
    server_url = postgres_test_url()
    if server_url is None:
        folder = Path(tempfile.mkdtemp(prefix=f"blogapi-{label}-"))
        try:
            url = f"sqlite:///{folder / 'blogapi.db'}"
            migrate(url, revision)
            yield url
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    base = _driver_url(server_url)
    name = f"{base.database}_{label}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(
        base.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = base.set(database=name).render_as_string(hide_password=False)
            migrate(url, revision)
            yield url
        finally:
            with admin.connect() as connection:
                connection.execute(
                    text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                )
    finally:
        admin.dispose()


def _postgres_bin() -> Path | None:
    """The folder holding initdb and pg_ctl: Debian's versioned one, else the PATH's."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda path: int(Path(path).parent.name),
        reverse=True,
    )
    found = shutil.which("initdb")
    if found:
        candidates.append(str(Path(found).parent))
    for folder in map(Path, candidates):
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    return None


class PostgresCluster:
    """A PostgreSQL cluster of the test's own, in a temporary folder on a spare port.

    PostgreSQL refuses to run as root, so as root its commands run as the `postgres` user.
    Authentication is `trust`, listening on 127.0.0.1 only.
    """

    def __init__(self) -> None:
        self.bin = _postgres_bin()
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="blogapi-cluster-"))
        self.data = self.folder / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/blogapi"

    @classmethod
    def skip_reason(cls) -> str | None:
        if _postgres_bin() is None:
            return "needs PostgreSQL's initdb and pg_ctl to start a cluster of its own"
        if os.geteuid() == 0 and shutil.which("runuser") is None:
            return "running as root, and no runuser to start PostgreSQL as postgres"
        if os.geteuid() == 0:
            try:
                import pwd

                pwd.getpwnam("postgres")
            except KeyError:
                return (
                    "running as root, and there is no postgres user to run PostgreSQL"
                )
        return None

    def _run(self, *command: str, timeout: float = 60) -> None:
        assert self.bin is not None
        argv = [str(self.bin / command[0]), *command[1:]]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False
        )
        assert result.returncode == 0, f"{argv}:\n{result.stdout}\n{result.stderr}"

    def create(self) -> "PostgresCluster":
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run(
            "initdb", "--no-sync", "--no-instructions", "--auth=trust",
            "--username=postgres", "--encoding=UTF8", "--locale=C", f"--pgdata={self.data}",
        )  # fmt: skip
        self.start()
        self._run(
            "psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
            "-d", "postgres", "-qc", "CREATE DATABASE blogapi",
        )  # fmt: skip
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        self._run(
            "pg_ctl", "start", "--wait", "--timeout=30", f"--pgdata={self.data}",
            f"--log={self.folder / 'postgres.log'}", f"--options={options}",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(
            "pg_ctl", "stop", "--wait", "--timeout=30", f"--mode={mode}",
            f"--pgdata={self.data}",
        )  # fmt: skip

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    reason = PostgresCluster.skip_reason()
    if reason:
        pytest.skip(reason)
    cluster = PostgresCluster()
    try:
        yield cluster.create()
    finally:
        cluster.destroy()


def _driver_url(database_url: str) -> URL:
    """The URL with the driver the app uses, as its settings would normalise it."""
    url = make_url(database_url.replace("postgres://", "postgresql://", 1))
    if url.drivername == "postgresql":
        return url.set(drivername="postgresql+psycopg")
    return url


def _inspection_engine(database_url: str) -> Engine:
    return create_engine(_driver_url(database_url), poolclass=NullPool)


def vote_count_mismatches(database_url: str) -> dict[int, tuple[int, int]]:
    """Posts whose `votes` differs from their rows in votes: {post id: (votes, rows)}."""
    engine = _inspection_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT posts.id, posts.votes, COUNT(votes.post_id) FROM posts "
                    "LEFT JOIN votes ON votes.post_id = posts.id "
                    "GROUP BY posts.id, posts.votes"
                )
            )
            return {
                post: (votes, count) for post, votes, count in rows if votes != count
            }
    finally:
        engine.dispose()


def vote_rows(database_url: str) -> set[tuple[int, int]]:
    """Every (user id, post id) in the votes table."""
    engine = _inspection_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT user_id, post_id FROM votes"))
            return {(user, post) for user, post in rows}
    finally:
        engine.dispose()


def post_ids(database_url: str) -> set[int]:
    """The id of every post in the posts table."""
    engine = _inspection_engine(database_url)
    try:
        with engine.connect() as connection:
            return set(connection.execute(text("SELECT id FROM posts")).scalars())
    finally:
        engine.dispose()
