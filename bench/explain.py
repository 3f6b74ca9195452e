"""Print the plans PostgreSQL runs for the list statements, as the app sends them.

    python bench/explain.py large              # as the app sends them by default
    python bench/explain.py large --prepared   # as with DB_PREPARED_STATEMENTS=1

The statements are blogapi.posts' LIST_PAGE and LIST_SEARCH (a page of posts joined to
their owners), and LIST_AFTER and LIST_SEARCH_AFTER with a cursor 99% of the way down
the posts (the deep page of bench/load.py's `list_deep`), compiled for SQLAlchemy's psycopg dialect, so the SQL is the app's own,
with its parameter casts. By default the app lets psycopg bind the values on the server
without a named prepared statement, so PostgreSQL plans each run for its values: here
EXPLAIN (ANALYZE, BUFFERS) runs the statement through psycopg with the same values.
With `--prepared` each statement is prepared, run six times (PostgreSQL may switch a
prepared statement to a generic plan after its fifth run) and then explained. Both read
as the seeded user 1.
"""

import argparse
import os
import sys

import psycopg
from psycopg import sql
from seed import ROOT, SEARCH_WORD, SIZES, database_url, dsn
from sqlalchemy import Select
from sqlalchemy.dialects.postgresql.psycopg import dialect

sys.path.insert(0, str(ROOT))
os.environ.setdefault("SECRET_KEY", "bench-secret-key-" + "x" * 32)

from blogapi.posts import (
    LIST_AFTER,
    LIST_PAGE,
    LIST_SEARCH,
    LIST_SEARCH_AFTER,
    NEWEST_FIRST,
    Post,
    contains_pattern,
)

PAGE = {"viewer_id": 1, "viewer_is_admin": False, "limit": 11}
SEARCH = {"pattern": contains_pattern(SEARCH_WORD)}
DEEP = 0.99
"""How far down the posts the deep page starts."""


def deep_cursor(cursor: psycopg.Cursor) -> str:
    """The cursor of the post DEEP of the way down the posts, newest first."""
    cursor.execute("SELECT count(*) FROM posts")
    (posts,) = cursor.fetchone()
    cursor.execute(
        "SELECT created_at, id FROM posts ORDER BY created_at DESC, id DESC "
        "OFFSET %s LIMIT 1",
        (int(posts * DEEP),),
    )
    created_at, post_id = cursor.fetchone()
    return NEWEST_FIRST.cursor(Post(id=post_id, created_at=created_at))


def statements(cursor: psycopg.Cursor) -> dict[str, tuple[Select, dict]]:
    after = NEWEST_FIRST.params(deep_cursor(cursor))
    return {
        "list: GET /posts/?limit=10": (LIST_PAGE, {**PAGE, "skip": 0}),
        f"list_search: GET /posts/?limit=10&search={SEARCH_WORD}": (
            LIST_SEARCH,
            {**PAGE, "skip": 0, **SEARCH},
        ),
        "list_deep: GET /posts/?limit=10&cursor=(99% down)": (
            LIST_AFTER,
            {**PAGE, **after},
        ),
        f"list_search_deep: GET /posts/?limit=10&search={SEARCH_WORD}&cursor=(99% down)": (
            LIST_SEARCH_AFTER,
            {**PAGE, **SEARCH, **after},
        ),
    }


EXPLAIN = "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) "
RUNS_BEFORE = 6


def explain_bound(cursor: psycopg.Cursor, statement: Select, params: dict) -> None:
    """As the app runs it: the values bound on the server, planned for those values."""
    cursor.execute(EXPLAIN + str(statement.compile(dialect=dialect())), params)


def explain_prepared(cursor: psycopg.Cursor, statement: Select, params: dict) -> None:
    """As with DB_PREPARED_STATEMENTS=1: a prepared statement, explained once warm."""
    compiled = statement.compile(dialect=dialect(paramstyle="numeric_dollar"))
    values = sql.SQL(", ").join(
        sql.Literal(params[name]) for name in compiled.positiontup
    )
    execute = sql.SQL("EXECUTE page ({})").format(values)
    cursor.execute(f"PREPARE page AS {compiled}")
    for _ in range(RUNS_BEFORE):
        cursor.execute(execute)
    cursor.execute(sql.SQL(EXPLAIN) + execute)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size", choices=SIZES)
    parser.add_argument(
        "--prepared",
        action="store_true",
        help="explain prepared statements after six runs (DB_PREPARED_STATEMENTS=1)",
    )
    args = parser.parse_args()
    explain = explain_prepared if args.prepared else explain_bound
    with (
        psycopg.connect(
            dsn(database_url(args.size)), autocommit=True, prepare_threshold=None
        ) as connection,
        connection.cursor() as cursor,
    ):
        for title, (statement, params) in statements(cursor).items():
            explain(cursor, statement, params)
            print(f"--- {title}, user 1, at {args.size}")
            print("\n".join(row[0] for row in cursor.fetchall()))
            print()
            if args.prepared:
                cursor.execute("DEALLOCATE page")


if __name__ == "__main__":
    main()
