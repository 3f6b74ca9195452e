"""Time GET /users/me/export for an account with 100,000 posts, and show its plans.

    python bench/export.py             # seed bench_export if needed, then 3 exports
    python bench/export.py --runs 5 --reseed

Seeds `bench_export` (BENCH_DATABASE_URL overrides it; created and migrated if missing)
with one user, export@bench.example, who has 100,000 posts (one in ten a draft, about
330 bytes each in the document) and 1,000 votes, beside 100,000 posts of 100 other users
interleaved with them. Then starts `uvicorn blogapi.main:app` with one worker on a free
loopback port and downloads the export `--runs` times, one after the other, printing for
each: the time to the first byte and to the last, the size, the worker's CPU time, and
how much its peak resident memory grew (Linux's /proc: the peak is reset before each
run). Last, EXPLAIN (ANALYZE, BUFFERS) of a batch of posts from the middle of the
account and of the votes' first batch, as the app sends them.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psycopg
from load import call, cpu_seconds, free_port, login
from seed import ROOT, create_database, dsn, migrate, server_env
from sqlalchemy import Select
from sqlalchemy.dialects.postgresql.psycopg import dialect

sys.path.insert(0, str(ROOT))
os.environ.setdefault("SECRET_KEY", "bench-secret-key-" + "x" * 32)

from blogapi.export import BATCH_ROWS, POSTS_BATCH, VOTES_BATCH

EMAIL = "export@bench.example"
PASSWORD = "bench-password"
POSTS = 100_000
VOTES = 1_000
OTHERS = 100
CONTENT = "A paragraph of text that stands for a post of ordinary length. " * 4


def database_url() -> str:
    return os.environ.get(
        "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/bench_export"
    )


def seeded(url: str) -> int | None:
    """The exporting user's id, when the database holds the seeded account."""
    with psycopg.connect(dsn(url)) as connection:
        found = connection.execute(
            "SELECT users.id, count(posts.id) FROM users "
            "LEFT JOIN posts ON posts.owner_id = users.id "
            "WHERE users.email = %s GROUP BY users.id",
            (EMAIL,),
        ).fetchone()
    return found[0] if found and found[1] == POSTS else None


def seed(url: str, base: str) -> int:
    """Register the exporting user through the API (its password hashed by the server),
    then write the other users (who never log in), the posts and the votes in bulk."""
    with psycopg.connect(dsn(url), autocommit=True) as connection:
        connection.execute("TRUNCATE votes, posts, users RESTART IDENTITY CASCADE")
    body = json.dumps({"email": EMAIL, "password": PASSWORD}).encode()
    user_id = call(base, "/users/", body, **{"Content-Type": "application/json"})["id"]
    with psycopg.connect(dsn(url), autocommit=True) as connection:
        connection.execute("SET statement_timeout = 0")
        with connection.transaction():
            connection.execute(
                """
                INSERT INTO users (email, password_hash, created_at)
                SELECT 'other' || i || '@bench.example', 'not a hash', now()
                FROM generate_series(1, %(others)s) AS i
                """,
                {"others": OTHERS},
            )
            # Every other post is the exporting user's; the rest go round the others.
            connection.execute(
                """
                INSERT INTO posts (owner_id, title, content, published, created_at, votes)
                SELECT CASE WHEN i %% 2 = 0 THEN %(user)s
                            ELSE %(user)s + 1 + i %% %(others)s END,
                       'Post ' || i, %(content)s, i %% 20 <> 0,
                       now() - (2 * %(posts)s - i) * interval '1 minute', 0
                FROM generate_series(1, 2 * %(posts)s) AS i
                """,
                {"user": user_id, "others": OTHERS, "content": CONTENT, "posts": POSTS},
            )
            connection.execute(
                """
                INSERT INTO votes (user_id, post_id, created_at)
                SELECT %(user)s, id, now() FROM posts
                WHERE owner_id <> %(user)s ORDER BY id LIMIT %(votes)s
                """,
                {"user": user_id, "votes": VOTES},
            )
        connection.execute("VACUUM ANALYZE")
    return user_id


def start(url: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    log = Path(tempfile.gettempdir()) / "blogapi-bench-export.log"
    env = {**server_env(url), "WEB_CONCURRENCY": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "blogapi.main:app", "--host", "127.0.0.1"]
        + ["--port", str(port), "--workers", "1", "--no-access-log"]
        + ["--log-level", "warning"],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            call(base, "/health/ready")
            return server, base, log
        except OSError:
            if server.poll() is not None:
                break
            time.sleep(0.2)
    server.kill()
    sys.exit(f"the server did not start; see {log}")


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def export_once(base: str, token: str, pid: int) -> dict[str, float]:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak starts from now
    rss_kb, cpu = status_kb(pid, "VmRSS"), cpu_seconds(pid)
    request = urllib.request.Request(
        base + "/users/me/export", headers={"Authorization": f"Bearer {token}"}
    )
    started = time.perf_counter()
    size, first = 0, 0.0
    with urllib.request.urlopen(request, timeout=600) as response:
        while chunk := response.read(1 << 16):
            first = first or time.perf_counter() - started
            size += len(chunk)
    seconds = time.perf_counter() - started
    return {
        "first_byte_s": first,
        "seconds": seconds,
        "mb": size / 2**20,
        "cpu_s": cpu_seconds(pid) - cpu,
        "peak_growth_mb": (status_kb(pid, "VmHWM") - rss_kb) / 1024,
    }


def explain(url: str, user_id: int) -> None:
    """The batches' plans, as the app runs them: the values bound on the server."""
    batches: dict[str, tuple[Select, int]] = {
        "posts: a batch from the middle of the account": (POSTS_BATCH, POSTS),
        "votes: the first batch": (VOTES_BATCH, 0),
    }
    with psycopg.connect(dsn(url), prepare_threshold=None) as connection:
        for title, (statement, after) in batches.items():
            params = {"user_id": user_id, "after": after, "limit": BATCH_ROWS}
            plan = connection.execute(
                "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) "
                + str(statement.compile(dialect=dialect())),
                params,
            ).fetchall()
            print(f"--- {title}")
            print("\n".join(line for (line,) in plan))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--reseed", action="store_true")
    args = parser.parse_args()
    url = database_url()
    create_database(url)
    migrate(url)
    server, base, log = start(url)
    try:
        user_id = None if args.reseed else seeded(url)
        if user_id is None:
            started = time.perf_counter()
            user_id = seed(url, base)
            print(f"seeded in {time.perf_counter() - started:.1f} s")
        token = login(base, EMAIL, PASSWORD)
        print(f"load average before: {os.getloadavg()[0]:.1f}")
        for run in range(1, args.runs + 1):
            result = export_once(base, token, server.pid)
            print(
                f"run {run}: {result['mb']:.1f} MB, first byte {result['first_byte_s'] * 1000:.0f} ms, "
                f"all in {result['seconds']:.2f} s ({result['mb'] / result['seconds']:.1f} MB/s), "
                f"worker CPU {result['cpu_s']:.2f} s, peak memory +{result['peak_growth_mb']:.1f} MB"
            )
        print(f"load average after: {os.getloadavg()[0]:.1f}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    explain(url, user_id)
    print(f"server log: {log}")


if __name__ == "__main__":
    main()
