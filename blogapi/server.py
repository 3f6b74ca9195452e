"""Serving: migrations, then the production or development server (`python -m blogapi`).

By default it runs the production server, gunicorn with uvicorn workers bound to
HOST:PORT (0.0.0.0:8000 unless set). `--reload` runs plain uvicorn for development,
on 127.0.0.1 unless HOST is set, restarting on code changes. Both take the client's
address from X-Forwarded-For only on connections from FORWARDED_ALLOW_IPS.

The migrations are applied first. If PostgreSQL can't be reached, the server starts
anyway: /health answers, and each worker applies the migrations once the database
answers (MIGRATE_ON_START), answering 503 until then.

With METRICS_TOKEN set, gunicorn's workers keep their metrics in files in METRICS_DIR
(emptied first), which GET /metrics adds up (blogapi.metrics).
"""

import argparse
import errno
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import uvicorn
from sqlalchemy.exc import DBAPIError
from uvicorn_worker import UvicornWorker

from blogapi.config import METRICS_DIR_NEEDED, SettingsError, exit_for, settings
from blogapi.db_errors import is_unreachable, unreachable_message
from blogapi.metrics import MULTIPROCESS_DIR_VARIABLE
from blogapi.migration_state import log_migration_steps, migrate
from blogapi.request_log import configure_logging

GRACEFUL_SHUTDOWN_SECONDS = 25
"""Under the 30 s a PaaS leaves between SIGTERM and SIGKILL."""

log = logging.getLogger("blogapi")


class Worker(UvicornWorker):
    """gunicorn's uvicorn worker, without the `server` banner in responses."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        **UvicornWorker.CONFIG_KWARGS,
        "server_header": False,
    }


def migrate_or_defer() -> None:
    """Apply the migrations; if PostgreSQL can't be reached, leave them to the workers
    (MIGRATE_ON_START), which try again until it answers. Any other failure stops here."""
    log_migration_steps()
    try:
        migrate()
    except DBAPIError as error:
        if not is_unreachable(error):
            raise
        log.warning(
            "%s; starting anyway: each worker applies the migrations once it answers, "
            "and answers 503 until then",
            unreachable_message(error),
        )
        os.environ["MIGRATE_ON_START"] = "true"


class PortUnavailable(SettingsError):
    pass


def check_can_listen(host: str, port: int) -> None:
    """PortUnavailable, in one line, if HOST:PORT can't be listened on: bound and closed
    here as the server will bind it (SO_REUSEADDR), just before it does."""
    address = host.strip("[]")  # gunicorn takes an IPv6 address in brackets
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    other = port + 1 if port < 65535 else port - 1
    pick = f"PORT={other} or --port {other}"
    try:
        socket.getaddrinfo(address, port, family, socket.SOCK_STREAM)
    except socket.gaierror:  # create_server would raise it as a plain OSError
        raise PortUnavailable(
            f"HOST {host} is not a name or address this machine can listen on: use "
            "e.g. HOST=0.0.0.0 (every interface) or HOST=127.0.0.1 (this machine only)"
        ) from None
    try:
        socket.create_server((address, port), family=family).close()
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            problem = f"PORT {port} is already in use on {host}"
            advice = f"stop what listens there, or pick another port: {pick}"
        elif error.errno == errno.EACCES:
            problem = f"PORT {port} may not be listened on by this user"
            advice = f"ports below 1024 need privileges; pick another port: {pick}"
        elif error.errno == errno.EADDRNOTAVAIL:
            problem = f"HOST {host} is not an address of this machine"
            advice = "use e.g. HOST=0.0.0.0 (every interface) or HOST=127.0.0.1"
        else:
            problem = f"PORT {port} on HOST {host} can't be listened on"
            advice = f"{error.strerror or error}; pick another port: {pick}"
        raise PortUnavailable(f"{problem}: {advice}") from None


def port_number(text: str) -> int:
    """--port's type: a number from 1 to 65535."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(
            "not a port number: use a whole number from 1 to 65535, e.g. --port 8000"
        )
    return int(text)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m blogapi",
        description=__doc__,
        epilog="`python -m blogapi make-admin --help`: making an admin.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default=settings.host, help="HOST; see above")
    parser.add_argument(
        "--port", type=port_number, default=settings.port, help="PORT (8000)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=settings.web_concurrency,
        help="WEB_CONCURRENCY (the CPU count), at most DB_MAX_CONNECTIONS",
    )
    parser.add_argument(
        "--reload", action="store_true", help="development server, reload on change"
    )
    return parser.parse_args(argv)


def share_connections(requested_workers: int) -> int:
    """How many workers to start so that all of them together hold at most
    DB_MAX_CONNECTIONS; the workers read their share from the environment."""
    workers = min(requested_workers, settings.db_max_connections)
    if workers < requested_workers:
        log.warning(
            "starting %d workers, not %d: DB_MAX_CONNECTIONS=%d allows one connection "
            "each at most",
            workers,
            requested_workers,
            settings.db_max_connections,
        )
    os.environ["WEB_CONCURRENCY"] = str(workers)
    log.info(
        "database connections: %d workers x %d each (DB_MAX_CONNECTIONS=%d)",
        workers,
        settings.db_max_connections // workers,
        settings.db_max_connections,
    )
    return workers


def warn_if_throttled_per_worker(workers: int) -> None:
    """Without Redis each worker counts attempts (logins, password recovery, sign-ups)
    alone."""
    if workers > 1 and not settings.redis_url:
        log.warning(
            "%d workers and no REDIS_URL: each worker counts login, password recovery "
            "and sign-up attempts in its own memory, so their limits hold per worker (up "
            "to %d times LOGIN_MAX_FAILURES in all); set REDIS_URL to share the counts",
            workers,
            workers,
        )


METRICS_FILE_PREFIXES = ("counter_", "gauge_", "histogram_", "summary_")
"""What prometheus_client names its files in multiprocess mode: `counter_<pid>.db`..."""


def metrics_dir(port: int) -> Path:
    if settings.metrics_dir:
        return Path(settings.metrics_dir)
    return Path(tempfile.gettempdir()) / f"blogapi-metrics-{port}"


def prepare_metrics_dir(port: int) -> Path:
    """Make METRICS_DIR (by default one per port in the temporary directory, so that two
    servers on one machine never share it) and empty it of the files of an earlier run,
    whose values would otherwise be counted again."""
    folder = metrics_dir(port)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if folder.is_symlink() or folder.stat().st_uid != os.geteuid():
            # Someone else's (made first in a shared /tmp, say) could feed us figures.
            sys.exit(
                f"{folder} belongs to another user or is a link: {METRICS_DIR_NEEDED}"
            )
        for stale in folder.glob("*.db"):
            if stale.name.startswith(METRICS_FILE_PREFIXES):
                stale.unlink()
    except OSError as error:
        sys.exit(f"{folder}: {error.strerror}: {METRICS_DIR_NEEDED}")
    return folder


def serve(argv: Sequence[str]) -> None:
    args = parse_args(argv)
    configure_logging(settings.log_format)
    host = args.host or ("127.0.0.1" if args.reload else "0.0.0.0")
    try:
        settings.require_secret_key()
    except SettingsError as error:
        exit_for(error)
    migrate_or_defer()
    workers = share_connections(1 if args.reload else args.workers)
    try:
        check_can_listen(host, args.port)
    except PortUnavailable as error:
        exit_for(error)
    warn_if_throttled_per_worker(workers)
    # One process (--reload) keeps its metrics in memory; gunicorn's workers in files.
    os.environ.pop(MULTIPROCESS_DIR_VARIABLE, None)
    if args.reload:
        uvicorn.run(
            "blogapi.main:app",
            host=host,
            port=args.port,
            reload=True,
            reload_dirs=[str(Path(__file__).resolve().parent)],
            access_log=False,
            server_header=False,
            forwarded_allow_ips=settings.forwarded_allow_ips,
        )
        return
    gunicorn = [
        sys.executable,
        "-m",
        "gunicorn",
        "blogapi.main:app",
        "--worker-class=blogapi.server.Worker",
        f"--workers={workers}",
        f"--bind={host}:{args.port}",
        f"--graceful-timeout={GRACEFUL_SHUTDOWN_SECONDS}",
        # From the settings, so a .env file sets it too (gunicorn would read only the
        # environment).
        f"--forwarded-allow-ips={','.join(settings.forwarded_allow_ips)}",
        "--no-control-socket",
    ]
    if settings.metrics_enabled:
        os.environ[MULTIPROCESS_DIR_VARIABLE] = str(prepare_metrics_dir(args.port))
        gunicorn.append("--config=python:blogapi.gunicorn_hooks")
    os.execv(sys.executable, gunicorn)
