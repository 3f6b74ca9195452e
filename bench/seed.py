"""Fill a PostgreSQL database with a named amount of users, posts and votes, fast.

    python bench/seed.py small   # 100 users, 1,000 posts, 10,000 votes   -> bench_small
    python bench/seed.py large   # 1,000 users, 100,000 posts, 1,000,000 votes -> bench_large

Creates the database if it is missing, runs `alembic upgrade head` on it, empties the
tables and fills them with `generate_series` in one transaction, then runs VACUUM ANALYZE.
Every seeded user's password is PASSWORD below, hashed once with BCRYPT_ROUNDS (default
12, as the server's).

`posts.votes` is kept by row triggers on `votes` (migration 0004): left on, the bulk insert
of a million votes would run a million triggers, each updating a post. So the transaction
turns the table's own triggers off (`DISABLE TRIGGER USER`: the foreign keys' triggers stay
on), inserts the votes, counts them into `posts.votes` in one UPDATE and turns the triggers
back on before it commits; no other session ever sees them off.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from passlib.context import CryptContext
from psycopg import sql
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
SIZES = {
    "small": {"users": 100, "posts": 1_000, "votes": 10_000},
    "large": {"users": 1_000, "posts": 100_000, "votes": 1_000_000},
}
PASSWORD = "bench-password"
SEARCH_WORD = "zephyr"
"""Appears in exactly SEARCH_HITS titles at every size: the `list_search` scenario's word."""
SEARCH_HITS = 5
TOPICS = ["fastapi", "postgres", "python", "sqlmodel", "alembic", "pydantic", "uvicorn"]


def database_url(size: str) -> str:
    return os.environ.get(
        "BENCH_DATABASE_URL", f"postgresql://postgres@127.0.0.1:5432/bench_{size}"
    )


def dsn(url: str) -> str:
    """A libpq DSN from a SQLAlchemy-style URL (drops a `+driver` suffix)."""
    parsed = make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


def create_database(url: str) -> None:
    name = make_url(url).database
    admin_dsn = dsn(str(make_url(url).set(database="postgres")))
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        found = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if found.fetchone() is None:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def server_env(url: str) -> dict[str, str]:
    """The environment the app (and its migrations) need to run against `url`."""
    env = dict(os.environ, DATABASE_URL=url)
    env.setdefault("SECRET_KEY", "bench-secret-key-" + "x" * 32)
    return env


def migrate(url: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env=server_env(url),
        check=True,
    )


def fill(url: str, users: int, posts: int, votes: int) -> None:
    rounds = int(os.environ.get("BCRYPT_ROUNDS", "12"))
    password_hash = CryptContext(schemes=["bcrypt"], bcrypt__rounds=rounds).hash(
        PASSWORD
    )
    per_post, extra = divmod(votes, posts)
    assert per_post < users and extra == 0, "votes must be a multiple of posts"
    params = {
        "users": users,
        "posts": posts,
        "per_post": per_post,
        "hash": password_hash,
        "word": SEARCH_WORD,
        "every": posts // SEARCH_HITS,
        "topics": TOPICS,
    }
    statements = [
        "TRUNCATE votes, posts, users RESTART IDENTITY CASCADE",
        # The vote-count triggers, off until the counts are set below (see the docstring).
        "ALTER TABLE votes DISABLE TRIGGER USER",
        # Users u1..uN, one shared password hash, created over the past two years.
        """
        INSERT INTO users (id, email, password_hash, created_at)
        SELECT i, 'user' || i || '@bench.example', %(hash)s,
               now() - interval '730 days' + i * interval '1 minute'
        FROM generate_series(1, %(users)s) AS i
        """,
        # Posts: owners round-robin, one in ten a draft, one a minute up to now, titles
        # with a topic word and an md5 fragment so the trigram index sees varied text;
        # SEARCH_WORD in exactly SEARCH_HITS titles.
        """
        INSERT INTO posts (id, title, content, published, owner_id, created_at, votes)
        SELECT i,
               'Post ' || i || ' on ' || (%(topics)s::text[])[1 + i %% 7] || ' '
                 || left(md5(i::text), 10)
                 || CASE WHEN i %% %(every)s = 0 THEN ' ' || %(word)s ELSE '' END,
               repeat('Some benchmark content. ', 8) || md5(i::text),
               i %% 10 <> 0,
               1 + i %% %(users)s,
               now() - (%(posts)s - i) * interval '1 minute',
               0
        FROM generate_series(1, %(posts)s) AS i
        """,
        # per_post distinct voters on every post: users (post + k) mod N, k < per_post.
        """
        INSERT INTO votes (user_id, post_id, created_at)
        SELECT 1 + (p + k) %% %(users)s, p, now()
        FROM generate_series(1, %(posts)s) AS p,
             generate_series(0, %(per_post)s - 1) AS k
        """,
        """
        UPDATE posts SET votes = counted.n
        FROM (SELECT post_id, count(*) AS n FROM votes GROUP BY post_id) AS counted
        WHERE posts.id = counted.post_id
        """,
        "ALTER TABLE votes ENABLE TRIGGER USER",
        "SELECT setval(pg_get_serial_sequence('users', 'id'), %(users)s)",
        "SELECT setval(pg_get_serial_sequence('posts', 'id'), %(posts)s)",
    ]
    with psycopg.connect(dsn(url), autocommit=True) as connection:
        # The migrations give the database the app's statement timeout; this takes longer.
        connection.execute("SET statement_timeout = 0")
        with connection.transaction(), connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement, params)
        connection.execute("VACUUM ANALYZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size", choices=SIZES)
    args = parser.parse_args()
    url = database_url(args.size)
    started = time.perf_counter()
    create_database(url)
    migrate(url)
    fill(url, **SIZES[args.size])
    counts = SIZES[args.size]
    print(
        f"seeded {make_url(url).database}: {counts['users']:,} users, "
        f"{counts['posts']:,} posts, {counts['votes']:,} votes "
        f"in {time.perf_counter() - started:.1f} s"
    )


if __name__ == "__main__":
    main()
