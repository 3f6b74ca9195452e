"""`python -m blogapi`: apply the migrations, then serve the API."""

import argparse
import os
from pathlib import Path

import uvicorn
from alembic import command
from alembic.config import Config

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"


def migrate() -> None:
    command.upgrade(Config(ALEMBIC_INI), "head")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m blogapi", description=__doc__)
    parser.add_argument("--host", default="0.0.0.0" if "PORT" in os.environ else "127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--reload", action="store_true", help="restart on code changes")
    parser.add_argument(
        "--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "1"))
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    migrate()
    uvicorn.run(
        "blogapi.main:app",
        host=args.host,
        port=args.port,
        reload=args.reload,
        workers=None if args.reload else args.workers,
    )


if __name__ == "__main__":
    main()
