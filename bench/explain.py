"""Print the plans PostgreSQL runs for the list statements, as the app sends them.

    python bench/explain.py large

The statements are compiled from blogapi.posts for asyncpg, so the SQL is the app's own,
with its $n parameters. asyncpg sends them as prepared statements, and PostgreSQL may
switch a prepared statement to a generic plan after its fifth run; so each one is
prepared here, run six times, then explained with EXPLAIN (ANALYZE, BUFFERS), reading
as the seeded user 1 with a token nobody revoked.
"""

import argparse
import os
import sys

import psycopg2
from seed import ROOT, SEARCH_WORD, SIZES, database_url, dsn
from sqlalchemy.dialects.postgresql.asyncpg import dialect

sys.path.insert(0, str(ROOT))
os.environ.setdefault("SECRET_KEY", "bench-secret-key-" + "x" * 32)

from blogapi.posts import LIST_PAGE, LIST_SEARCH, contains_pattern

TOKEN = {"user_id": 1, "version": 0, "token_id": "not-revoked", "limit": 10, "skip": 0}
STATEMENTS = {
    "list: GET /posts/?limit=10": (LIST_PAGE, TOKEN),
    f"list_search: GET /posts/?limit=10&search={SEARCH_WORD}": (
        LIST_SEARCH,
        {**TOKEN, "pattern": contains_pattern(SEARCH_WORD)},
    ),
}
RUNS_BEFORE = 6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size", choices=SIZES)
    size = parser.parse_args().size
    connection = psycopg2.connect(dsn(database_url(size)))
    connection.autocommit = True
    with connection.cursor() as cursor:
        for title, (statement, params) in STATEMENTS.items():
            compiled = statement.compile(dialect=dialect())
            values = [params[name] for name in compiled.positiontup]
            placeholders = ", ".join(["%s"] * len(values))
            cursor.execute(f"PREPARE page AS {compiled}")
            for _ in range(RUNS_BEFORE):
                cursor.execute(f"EXECUTE page ({placeholders})", values)
            cursor.execute(
                f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE page ({placeholders})",
                values,
            )
            print(f"--- {title}, user 1, at {size}")
            print("\n".join(row[0] for row in cursor.fetchall()))
            print()
            cursor.execute("DEALLOCATE page")
    connection.close()


if __name__ == "__main__":
    main()
