"""Serving: migrations, then the production or development server (`python -m blogapi`).

By default it runs the production server, gunicorn with uvicorn workers bound to
HOST:PORT (0.0.0.0:8000 unless set). `--reload` runs plain uvicorn for development,
on 127.0.0.1 unless HOST is set, restarting on code changes.
"""

import argparse
import os
import sys
from pathlib import Path
from typing import Any, ClassVar

import uvicorn
from alembic import command
from alembic.config import Config
from uvicorn_worker import UvicornWorker

from blogapi.config import settings

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"
GRACEFUL_SHUTDOWN_SECONDS = 30


class Worker(UvicornWorker):
    """gunicorn's uvicorn worker, without the `server` banner in responses."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        **UvicornWorker.CONFIG_KWARGS,
        "server_header": False,
    }


def migrate() -> None:
    config = Config(ALEMBIC_INI)
    config.attributes["configure_logging"] = False
    command.upgrade(config, "head")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m blogapi",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default=settings.host, help="HOST; see above")
    parser.add_argument("--port", type=int, default=settings.port, help="PORT (8000)")
    parser.add_argument(
        "--workers",
        type=int,
        default=settings.web_concurrency,
        help="WEB_CONCURRENCY (the CPU count)",
    )
    parser.add_argument(
        "--reload", action="store_true", help="development server, reload on change"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    migrate()
    if args.reload:
        uvicorn.run(
            "blogapi.main:app",
            host=args.host or "127.0.0.1",
            port=args.port,
            reload=True,
            reload_dirs=[str(Path(__file__).resolve().parent)],
            access_log=False,
            server_header=False,
        )
        return
    gunicorn = [sys.executable, "-m", "gunicorn", "blogapi.main:app"]
    os.execv(
        sys.executable,
        [
            *gunicorn,
            "--worker-class=blogapi.server.Worker",
            f"--workers={args.workers}",
            f"--bind={args.host or '0.0.0.0'}:{args.port}",
            f"--graceful-timeout={GRACEFUL_SHUTDOWN_SECONDS}",
            "--no-control-socket",
        ],
    )
