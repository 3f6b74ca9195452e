"""Load-test blogapi with wrk against seeded databases, and print what it measured.

    python bench/load.py small large        # both sizes, then the ratios between them
    python bench/load.py small --duration 5  # one size, shorter scenarios
    python bench/load.py small large --baseline 0d5659f  # and that commit, side by side

For each size: migrate bench_<size> to head (seed it first with bench/seed.py), start
`uvicorn blogapi.main:app` with one worker on a loopback port against it, log in as a
seeded user and register the load's own writers, and warm up. Then every scenario runs
for a fixed time with a fixed number of connections, on one server after the other, so
every server sees the same machine. Between runs the script waits until the server has
drained the last run's queue. At the end it reads each worker's resident memory, stops
the servers and deletes what the load wrote.

With `--baseline REV`, the commit REV is checked out into a temporary git worktree and
each size gets a second server, run from that worktree against a copy of bench_<size>
(bench_<size>_baseline) migrated to REV's own head; every scenario then runs on the two
servers in turn, and the report puts them side by side. The worktree and the copies are
removed at the end.

With `--course`, each size also gets the course's app (bench/course_app.py) on
bench_<size>, driven with the same tokens: `GET /` and `POST /posts` run on it right after
the same scenarios on blogapi, and the report gives blogapi's create_post throughput as a
multiple of the course app's (the issue's target: at least 1.5x).

With `--metrics`, each size also gets the same code with metrics on (METRICS_TOKEN set,
and PROMETHEUS_MULTIPROC_DIR as gunicorn's workers have it) on bench_<size>, driven with
the same reader and writers of its own; the two servers take turns at each scenario (the
order swapped every round), and the report gives each round's req/s with metrics on as a
share of off, and the median of those ratios (the target for the list: within 5%).
"""

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

import psycopg
from psycopg import errors, sql
from seed import (
    PASSWORD,
    SEARCH_WORD,
    SIZES,
    database_url,
    dsn,
    migrate,
    server_env,
)
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk.lua"
RESULTS = Path(__file__).resolve().parent / "results"
LOAD_EMAILS = "load-%@load.example.com"
WRITERS = 12
READER = "user1@bench.example"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
COURSE_TARGET = 1.5
"""The issue's target: blogapi's `POST /posts/` throughput at least this times the course app's."""
DEEP = 0.99
"""How far down the reader's posts `list_deep` reads: past about 99,000 of 100,000."""
DEEP_TARGET = 1.5
"""The issue's target: `list_deep`'s p50 at most this times `list`'s."""
METRICS_TOKEN = "bench-metrics-token-" + "x" * 16
METRICS_TARGET = 0.95
"""The target: the list's throughput with metrics on at least this share of off."""
METRICS_ENV = ("METRICS_TOKEN", "METRICS_DIR", "PROMETHEUS_MULTIPROC_DIR")


@dataclass
class Scenario:
    name: str
    method: str
    path: str
    body: str | None = None
    content_type: str | None = None
    connections: int | None = None
    writes: bool = False
    voting: bool = False


def scenarios(size: str) -> list[Scenario]:
    recent_post = SIZES[size]["posts"] - 1  # published: seed.py drafts every tenth
    login_form = urllib.parse.urlencode({"username": READER, "password": PASSWORD})
    post_body = json.dumps({"title": "A load test post", "content": "Written by wrk."})
    json_type, form_type = "application/json", "application/x-www-form-urlencoded"
    return [
        Scenario("root", "GET", "/"),
        Scenario("list", "GET", "/posts/?limit=10"),
        Scenario("list_search", "GET", f"/posts/?limit=10&search={SEARCH_WORD}"),
        # 99% of the way down the reader's posts, by cursor and by skip: see deep_page().
        Scenario("list_deep", "GET", "/posts/?limit=10&cursor={cursor}"),
        Scenario("list_skip_deep", "GET", "/posts/?limit=10&skip={skip}"),
        Scenario("one", "GET", f"/posts/{recent_post}"),
        Scenario("create_post", "POST", "/posts/", post_body, json_type, writes=True),
        Scenario("vote", "POST", "/vote/", None, json_type, writes=True, voting=True),
        # bcrypt-bound by design: a few connections saturate the cores, more only queue.
        Scenario("login", "POST", "/login", login_form, form_type, connections=4),
        Scenario("list_c256", "GET", "/posts/?limit=10", connections=256),
    ]


def course_scenarios(size: str) -> dict[str, Scenario]:
    """What the course app serves of blogapi's scenarios: `GET /`, and create_post with
    the same body and tokens on its route, `POST /posts` (no trailing slash)."""
    shared = {s.name: s for s in scenarios(size)}
    return {
        "root": shared["root"],
        "create_post": replace(shared["create_post"], path="/posts"),
    }


@dataclass
class Target:
    """One size's database and the server running against it."""

    size: str
    url: str
    base: str
    server: subprocess.Popen
    label: str = "new"
    """`new` (this working tree), `baseline` (the --baseline revision), `course`
    (bench/course_app.py, with --course) or `metrics` (this tree with metrics on, with
    --metrics; `new` has them off)."""
    reader: str = ""
    writers: list[str] = field(default_factory=list)
    deep: dict[str, str] = field(default_factory=dict)
    """The `cursor` and `skip` of the deep page, once deep_page() found them; none on a
    server whose code has no cursors."""
    results: dict[str, dict] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.size if self.label == "new" else f"{self.size}-{self.label}"

    def scenarios(self) -> dict[str, Scenario]:
        if self.label == "course":
            return course_scenarios(self.size)
        return {
            s.name: replace(s, path=s.path.format(**self.deep))
            for s in scenarios(self.size)
            if "{" not in s.path or self.deep
        }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def call(base: str, path: str, data: bytes | None = None, **headers: str) -> dict:
    request = urllib.request.Request(base + path, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def login(base: str, email: str, password: str) -> str:
    form = urllib.parse.urlencode({"username": email, "password": password}).encode()
    return call(base, "/login", form)["access_token"]


def register_and_login(base: str, email: str, password: str) -> str:
    body = json.dumps({"email": email, "password": password}).encode()
    call(base, "/users/", body, **{"Content-Type": "application/json"})
    return login(base, email, password)


def remove_load_writes(url: str, vacuum: bool) -> None:
    """Delete the load's users with their posts and votes; the vote-count triggers
    (migration 0004) take the deleted votes off the posts' counts."""
    with psycopg.connect(dsn(url), autocommit=True) as connection:
        connection.execute("SET statement_timeout = 0")
        connection.execute("DELETE FROM users WHERE email LIKE %s", (LOAD_EMAILS,))
        if vacuum:
            connection.execute("VACUUM ANALYZE users, posts, votes")


@dataclass
class Baseline:
    """A git revision of this repository, checked out into a temporary worktree."""

    revision: str
    path: Path


def git(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    )
    return done.stdout.rstrip()


def check_out(revision: str) -> Baseline:
    path = Path(tempfile.mkdtemp(prefix="blogapi-baseline-")) / "blogapi"
    git("worktree", "add", "--quiet", "--detach", str(path), revision)
    return Baseline(revision, path)


def remove(baseline: Baseline) -> None:
    git("worktree", "remove", "--force", str(baseline.path))
    shutil.rmtree(baseline.path.parent, ignore_errors=True)


def install_missing(baseline: Baseline) -> None:
    """Install into this venv what the baseline requires and the venv lacks (an older
    revision's drivers: asyncpg, aiosqlite, psycopg2), without their dependencies and
    without touching what is installed. For the benchmark only: not in requirements."""
    missing = []
    lines = (baseline.path / "requirements.txt").read_text().splitlines()
    for line in lines:
        line = line.split("#", 1)[0].strip()
        name = re.match(r"[A-Za-z0-9._-]+", line)
        if not name or line.startswith("-"):
            continue
        try:
            importlib.metadata.version(name.group())
        except importlib.metadata.PackageNotFoundError:
            missing.append(line)
    if missing:
        print(
            f"note: installing for the baseline ({baseline.revision}) only, not added "
            f"to requirements: {' '.join(missing)}",
            flush=True,
        )
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *missing],
            check=True,
        )


def alembic(url: str, cwd: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=cwd,
        env=server_env(url),
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def admin() -> psycopg.Connection:
    return psycopg.connect(
        dsn(str(make_url(database_url("small")).set(database="postgres"))),
        autocommit=True,
    )


def copy_database(url: str, copy_url: str) -> None:
    """Make copy_url's database a copy of url's. CREATE DATABASE ... TEMPLATE needs the
    source to have no other sessions; if others keep it busy, copy it with pg_dump."""
    source, copy = make_url(url).database, make_url(copy_url).database
    drop_database(copy_url)
    create = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
        sql.Identifier(copy), sql.Identifier(source)
    )
    with admin() as connection:
        for _ in range(10):
            try:
                connection.execute(create)
                return
            except errors.ObjectInUse:
                time.sleep(1)
        print(f"note: {source} is in use by other sessions: copying it with pg_dump")
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(copy)))
    dump = subprocess.Popen(
        ["pg_dump", "--format=custom", "--dbname", dsn(url)], stdout=subprocess.PIPE
    )
    subprocess.run(
        ["pg_restore", "--no-owner", "--dbname", dsn(copy_url)],
        stdin=dump.stdout,
        check=True,
    )
    if dump.wait() != 0:
        sys.exit(f"pg_dump of {source} failed")


def drop_database(url: str) -> None:
    name = sql.Identifier(make_url(url).database)
    with admin() as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name)
        )


def baseline_database(url: str, baseline: Baseline) -> str:
    """A copy of url's database at the baseline's own migration head, as that revision
    had it: the later migrations undone by this tree's alembic (the baseline's does not
    know them), then checked by the baseline's, and the database-level settings they
    add (statement_timeout) left out."""
    parsed = make_url(url)
    copy_url = parsed.set(database=f"{parsed.database}_baseline").render_as_string(
        hide_password=False
    )
    copy_database(url, copy_url)
    head = alembic(copy_url, baseline.path, "heads").split()[0]
    alembic(copy_url, ROOT, "downgrade", head)
    alembic(copy_url, baseline.path, "upgrade", "head")
    with admin() as connection:
        connection.execute(
            sql.SQL("ALTER DATABASE {} RESET ALL").format(
                sql.Identifier(make_url(copy_url).database)
            )
        )
    return copy_url


def launch(
    size: str, url: str, label: str, app: list[str], env: dict[str, str], tree: Path
) -> Target:
    """Start `uvicorn <app>` with one worker on a free loopback port; wait for `GET /`."""
    port = free_port()
    suffix = "" if label == "new" else f"-{label}"
    log = Path(tempfile.gettempdir()) / f"blogapi-bench-{size}{suffix}.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", *app, "--host", "127.0.0.1"]
        + ["--port", str(port), "--workers", "1", "--no-access-log"]
        + ["--log-level", "warning"],
        cwd=tree,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    target = Target(size, url, f"http://127.0.0.1:{port}", server, label)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            call(target.base, "/")
            break
        except OSError:
            if server.poll() is not None:
                break
            time.sleep(0.2)
    else:
        server.kill()
    if server.poll() is not None:
        sys.exit(f"the {target.name} server did not start; see {log}")
    return target


def deep_page(target: Target) -> dict[str, str]:
    """The deep page's `skip` (DEEP of the posts the reader sees) and the `cursor` of the
    same page, from the `Link` header after the post just above it; none if the server
    sends no such header (a baseline from before cursors)."""
    with psycopg.connect(dsn(target.url)) as connection:
        (visible,) = connection.execute(
            "SELECT count(*) FROM posts p JOIN users u ON u.email = %s "
            "WHERE p.published OR p.owner_id = u.id",
            (READER,),
        ).fetchone()
    skip = int(visible * DEEP)
    request = urllib.request.Request(
        f"{target.base}/posts/?limit=1&skip={skip - 1}",
        headers={"Authorization": f"Bearer {target.reader}"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        link = response.headers.get("Link", "")
    found = re.search(r"[?&]cursor=([^&>]+)", link)
    return {"cursor": found.group(1), "skip": str(skip)} if found else {}


def blogapi_env(url: str) -> dict[str, str]:
    env = server_env(url)
    env.setdefault("BCRYPT_ROUNDS", "12")
    # One worker: its pool gets the whole connection budget (DB_MAX_CONNECTIONS).
    env["WEB_CONCURRENCY"] = "1"
    # Metrics off, unless start_metered() turns them on.
    for name in METRICS_ENV:
        env.pop(name, None)
    return env


def start(size: str, url: str, label: str = "new", tree: Path = ROOT) -> Target:
    env = blogapi_env(url)
    target = launch(size, url, label, ["blogapi.main:app"], env, tree)
    target.reader = login(target.base, READER, PASSWORD)
    target.writers = [
        register_and_login(target.base, f"load-{i}@load.example.com", PASSWORD)
        for i in range(WRITERS)
    ]
    target.deep = deep_page(target)
    return target


def start_course(blogapi: Target) -> Target:
    """The course app on blogapi's database with blogapi's tokens (same SECRET_KEY), so its
    posts belong to the load's writers and go with them at the end."""
    env = dict(
        os.environ,
        BENCH_DATABASE_URL=make_url(blogapi.url)
        .set(drivername="postgresql+psycopg")
        .render_as_string(hide_password=False),
        SECRET_KEY=server_env(blogapi.url)["SECRET_KEY"],
    )
    app = ["course_app:app", "--app-dir", "bench"]
    target = launch(blogapi.size, blogapi.url, "course", app, env, ROOT)
    target.reader, target.writers = blogapi.reader, blogapi.writers
    return target


def start_metered(blogapi: Target, folder: Path, control: bool = False) -> Target:
    """This tree again with metrics on, on the same database with the same reader, and
    writers of its own (the same writers would vote for the posts they voted for on
    `blogapi`). Its values go to files in `folder`, as under gunicorn (`python -m
    blogapi` sets PROMETHEUS_MULTIPROC_DIR for its workers), so it pays what production
    pays. With `control`, metrics stay off: both servers run the same, and the ratios
    show how far the machine's noise alone moves them."""
    env = blogapi_env(blogapi.url)
    if not control:
        env.update(METRICS_TOKEN=METRICS_TOKEN, PROMETHEUS_MULTIPROC_DIR=str(folder))
    target = launch(
        blogapi.size, blogapi.url, "metrics", ["blogapi.main:app"], env, ROOT
    )
    target.reader, target.deep = blogapi.reader, blogapi.deep
    target.writers = [
        register_and_login(target.base, f"load-metrics-{i}@load.example.com", PASSWORD)
        for i in range(WRITERS)
    ]
    return target


def counted_requests(target: Target) -> int:
    """What the metered server's /metrics says it answered, all routes together."""
    request = urllib.request.Request(
        f"{target.base}/metrics",
        headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        text = response.read().decode()
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("http_requests_total{")
        )
    )


def in_turns(targets: list[Target], round_number: int) -> list[Target]:
    """The servers in their order, except that each size's metered server goes before
    its unmetered one every other round, so neither always runs first."""
    if round_number % 2 == 0:
        return targets
    ordered = list(targets)
    for i, target in enumerate(ordered):
        if target.label == "metrics" and i > 0 and ordered[i - 1].label == "new":
            ordered[i - 1], ordered[i] = ordered[i], ordered[i - 1]
    return ordered


def stop(target: Target) -> None:
    target.server.terminate()
    target.server.wait(timeout=30)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def rss_mb(pid: int) -> tuple[float, float]:
    """The process's resident memory now and at its peak, in MB."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status)
    return (
        int(fields["VmRSS"].split()[0]) / 1024,
        int(fields["VmHWM"].split()[0]) / 1024,
    )


def settle(target: Target) -> None:
    """Wait until the server answers an authenticated read quickly: the queue is drained.
    The course app has no list: its `GET /`, a `def` route too, queues in the same
    thread pool as its writes."""
    headers = {"Authorization": f"Bearer {target.reader}"}
    probe = "/posts/?limit=1"
    if target.label == "course":
        headers, probe = {}, "/"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        started = time.monotonic()
        call(target.base, probe, **headers)
        if time.monotonic() - started < 0.1:
            break
        time.sleep(0.5)
    time.sleep(1)


def run_wrk(
    target: Target, scenario: Scenario, duration: int, args: argparse.Namespace
) -> dict:
    connections = scenario.connections or args.connections
    tokens = target.writers if scenario.writes else [target.reader]
    env = dict(
        os.environ,
        BENCH_METHOD=scenario.method,
        BENCH_PATH=scenario.path,
        BENCH_TOKENS=",".join(tokens),
    )
    if scenario.body:
        env["BENCH_BODY"] = scenario.body
    if scenario.content_type:
        env["BENCH_CONTENT_TYPE"] = scenario.content_type
    if scenario.voting:
        env["BENCH_VOTE_POSTS"] = str(SIZES[target.size]["posts"])
    threads = min(args.threads, connections)
    cpu_before = cpu_seconds(target.server.pid)
    result = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s"]
        + ["--timeout", "10s", "-s", str(WRK_SCRIPT), target.base + scenario.path]
        + ["--", str(threads)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    cpu = cpu_seconds(target.server.pid) - cpu_before
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    errors = sum(stats[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {
        "connections": connections,
        "requests": stats["requests"],
        "rps": stats["requests"] / (stats["duration_us"] / 1e6),
        "p50_ms": stats["p50_us"] / 1000,
        "p99_ms": stats["p99_us"] / 1000,
        "max_ms": stats["max_us"] / 1000,
        "errors": errors,
        "cpu_ms_per_request": 1000 * cpu / max(stats["requests"], 1),
    }


def report(target: Target, args: argparse.Namespace) -> dict:
    rss, peak = rss_mb(target.server.pid)
    return {
        "size": target.size,
        "server": target.label,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "duration_s": args.duration,
        "rounds": args.rounds,
        "connections": args.connections,
        "bcrypt_rounds": int(os.environ.get("BCRYPT_ROUNDS", "12")),
        "scenarios": target.results,
        "rss_mb": round(rss, 1),
        "peak_rss_mb": round(peak, 1),
    }


def print_report(result: dict) -> None:
    print(
        f"\n{result['size']}, {result['server']} at {result['commit']} "
        f"({result['when']}, {result['duration_s']} s per scenario, "
        f"the median of {result['rounds']} rounds, "
        f"BCRYPT_ROUNDS={result['bcrypt_rounds']})"
    )
    print(
        f"{'scenario':<12} {'conns':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'errors':>6} {'cpu ms/req':>10}"
    )
    for name, r in result["scenarios"].items():
        print(
            f"{name:<12} {r['connections']:>5} {rate(r['rps']):>8} {r['p50_ms']:>8.1f} "
            f"{r['p99_ms']:>8.1f} {r['max_ms']:>8.1f} {r['errors']:>6} "
            f"{r['cpu_ms_per_request']:>10.2f}"
        )
    s = result["scenarios"]
    if "list" in s and "root" in s:
        print(f"list/root throughput: {s['list']['rps'] / s['root']['rps']:.0%}")
    for deep in ("list_deep", "list_skip_deep"):
        if deep in s and "list" in s:
            print(
                f"{deep} p50 {s[deep]['p50_ms']:.1f} ms beside list's "
                f"{s['list']['p50_ms']:.1f} ms: x{s[deep]['p50_ms'] / s['list']['p50_ms']:.2f}"
                + (f" (target <= {DEEP_TARGET})" if deep == "list_deep" else "")
            )
    print(
        f"worker RSS after the run: {result['rss_mb']} MB (peak {result['peak_rss_mb']} MB)"
    )


def print_ratios(small: dict, large: dict) -> None:
    print(f"\nlarge / small ({small['server']})")
    for name in ("list", "list_search", "list_deep", "one"):
        if name in small["scenarios"] and name in large["scenarios"]:
            a, b = small["scenarios"][name], large["scenarios"][name]
            print(
                f"{name:<12} p50 x{b['p50_ms'] / a['p50_ms']:.2f}   "
                f"req/s x{b['rps'] / a['rps']:.2f}"
            )


SHARED = ("list", "list_search", "one", "create_post", "vote")
"""The scenarios whose throughput the side-by-side report also shows as a share of root's."""


def rate(rps: float) -> str:
    return f"{rps:.0f}" if rps >= 100 else f"{rps:.1f}"


def print_side_by_side(new: dict, baseline: dict) -> None:
    """Each scenario on both servers, its throughput as a share of the same server's
    `GET /`, and its CPU per request: measured seconds apart on one machine, these are
    steadier than req/s on a noisy VM."""
    a, b = new["scenarios"], baseline["scenarios"]
    print(f"\n{new['size']}: new ({new['commit']}) vs baseline ({baseline['commit']})")
    print(
        f"{'scenario':<12} {'new req/s':>9} {'base req/s':>10} {'new/base':>8} "
        f"{'new/root':>8} {'base/root':>9} {'new p50':>8} {'base p50':>8} "
        f"{'new cpu':>7} {'base cpu':>8} {'errors':>7}"
    )
    for name in [n for n in a if n in b]:
        x, y = a[name], b[name]
        shares = ["", ""]
        if name in SHARED and "root" in a and "root" in b:
            shares = [
                f"{x['rps'] / a['root']['rps']:.1%}",
                f"{y['rps'] / b['root']['rps']:.1%}",
            ]
        print(
            f"{name:<12} {rate(x['rps']):>9} {rate(y['rps']):>10} "
            f"{x['rps'] / y['rps']:>7.2f}x {shares[0]:>8} {shares[1]:>9} "
            f"{x['p50_ms']:>8.1f} {y['p50_ms']:>8.1f} "
            f"{x['cpu_ms_per_request']:>7.2f} {y['cpu_ms_per_request']:>8.2f} "
            f"{str(x['errors']) + '/' + str(y['errors']):>7}"
        )
    print("p50 in ms; cpu: the worker's CPU ms per request")


def print_metrics_cost(
    size: str, runs: dict[tuple[str, str], list[dict]], counted: int | None
) -> None:
    """Each scenario with metrics on against off: the median and the geometric mean of
    the rounds' on/off throughput ratios (a round's two runs were seconds apart), the
    median CPU per request of each server, and every round's req/s in the order run."""
    print(
        f"\n{size}: metrics on against off "
        f"(target: list at >= {METRICS_TARGET:.0%} of off's req/s)"
    )
    for (name, scenario), off in runs.items():
        on = runs.get((f"{size}-metrics", scenario))
        if name != size or not on:
            continue
        ratios = [b["rps"] / a["rps"] for a, b in zip(off, on, strict=True)]
        cpu = [
            statistics.median(r["cpu_ms_per_request"] for r in server)
            for server in (off, on)
        ]
        print(
            f"{scenario:<12} on/off req/s: median {statistics.median(ratios):.1%}, "
            f"geometric mean {statistics.geometric_mean(ratios):.1%} over "
            f"{len(ratios)} rounds; cpu ms/req off {cpu[0]:.2f}, on {cpu[1]:.2f}"
        )
        print(f"{'':<12} off: {' '.join(rate(r['rps']) for r in off)}")
        print(f"{'':<12} on:  {' '.join(rate(r['rps']) for r in on)}")
    if counted is None:
        print("--metrics-control: metrics were off on both servers")
    else:
        print(
            f"the metered server's /metrics counted {counted:,} requests "
            "(the load, its warm-up and the probes between runs)"
        )


def print_against_course(size: str, results: dict) -> None:
    """blogapi's create_post and root against the course app's, run seconds apart."""
    course = results[f"{size}-course"]["scenarios"]
    print(
        f"\n{size}: blogapi against the course app "
        f"(target: create_post ratio >= {COURSE_TARGET})"
    )
    for name, label in ((size, "blogapi"), (f"{size}-baseline", "baseline")):
        if name not in results:
            continue
        ours = results[name]["scenarios"]
        for scenario in ("create_post", "root"):
            if scenario not in ours or scenario not in course:
                continue
            x, y = ours[scenario], course[scenario]
            print(
                f"{scenario + ':':<12} {label} {rate(x['rps'])} req/s, "
                f"course {rate(y['rps'])} req/s, ratio {x['rps'] / y['rps']:.2f} "
                f"(cpu ms/req {x['cpu_ms_per_request']:.2f} vs "
                f"{y['cpu_ms_per_request']:.2f}; errors {x['errors']}/{y['errors']})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="+", choices=SIZES)
    parser.add_argument("--duration", type=int, default=10, help="seconds per scenario")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--only", nargs="*", help="run only these scenarios")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the scenarios this many times in turn and report each one's median "
        "run by p50: steadier on a shared machine",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run git revision REV of this repository, side by side",
    )
    parser.add_argument(
        "--course",
        action="store_true",
        help="also run root and create_post on bench/course_app.py, side by side",
    )
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="also run this tree with metrics on (METRICS_TOKEN), in turns with it off",
    )
    parser.add_argument(
        "--metrics-control",
        action="store_true",
        help="with --metrics: leave metrics off on the second server too (an A/A run, "
        "to see the noise)",
    )
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    commit = git("rev-parse", "--short", "HEAD")
    changed = git("status", "--short")
    print(f"new: the working tree at {commit}" + (", with changes:" if changed else ""))
    if changed:
        print(changed)
    servers = len(args.sizes) * (1 + bool(args.baseline) + args.metrics)
    runs = args.rounds * len(
        [s for s in scenarios("small") if not args.only or s.name in args.only]
    )
    minutes = servers * (4 * 2 + runs * (args.duration + 2)) / 60
    print(f"{servers} servers, {runs} scenarios each: about {minutes:.0f} min of load")
    if args.course:
        course = [
            n for n in course_scenarios("small") if not args.only or n in args.only
        ]
        minutes = len(args.sizes) * (2 + len(course) * (args.duration + 2)) / 60
        print(
            f"and the course app at each size, {len(course)} scenarios "
            f"({' '.join(course)}): about {minutes:.0f} min more"
        )
    baseline: Baseline | None = None
    copies: list[str] = []
    targets: list[Target] = []
    metrics_dirs: list[Path] = []
    counted: dict[str, int] = {}
    try:
        if args.baseline:
            baseline = check_out(args.baseline)
            install_missing(baseline)
        for size in args.sizes:
            url = database_url(size)
            migrate(url)
            remove_load_writes(url, vacuum=True)
            if baseline:
                copies.append(baseline_database(url, baseline))
            new = start(size, url)
            targets.append(new)
            if args.metrics:
                metrics_dirs.append(Path(tempfile.mkdtemp(prefix="blogapi-bench-")))
                targets.append(
                    start_metered(new, metrics_dirs[-1], args.metrics_control)
                )
            if baseline:
                targets.append(start(size, copies[-1], "baseline", baseline.path))
            if args.course:
                targets.append(start_course(new))
        for target in targets:
            for warm_up in ("root", "list", "list_search", "list_deep", "one"):
                if warm_up in target.scenarios():
                    run_wrk(target, target.scenarios()[warm_up], 2, args)
        runs: dict[tuple[str, str], list[dict]] = {}
        for round_number in range(args.rounds):
            for scenario in scenarios("small"):
                if args.only and scenario.name not in args.only:
                    continue
                for target in in_turns(targets, round_number):
                    run = target.scenarios().get(scenario.name)
                    if run is None:
                        continue
                    settle(target)
                    result = run_wrk(target, run, args.duration, args)
                    runs.setdefault((target.name, run.name), []).append(result)
                    print(
                        f"  {target.name:<14} {run.name:<12} {result['rps']:>7.0f} req/s"
                        f"  p50 {result['p50_ms']:.1f} ms",
                        flush=True,
                    )
        for target in targets:
            for (name, scenario_name), done in runs.items():
                if name == target.name:
                    by_p50 = sorted(done, key=lambda r: r["p50_ms"])
                    target.results[scenario_name] = by_p50[len(by_p50) // 2]
        results = {target.name: report(target, args) for target in targets}
        for target in targets:
            if target.label == "metrics" and not args.metrics_control:
                counted[target.size] = counted_requests(target)
            tree = baseline.path if baseline and target.label == "baseline" else ROOT
            results[target.name]["commit"] = git(
                "rev-parse", "--short", "HEAD", cwd=tree
            )
    finally:
        for target in targets:
            stop(target)
        for (
            target
        ) in targets:  # after every server: the course app writes as new's writers
            if target.label == "new":
                remove_load_writes(target.url, vacuum=True)
        for copy_url in copies:
            drop_database(copy_url)
        for folder in metrics_dirs:
            shutil.rmtree(folder, ignore_errors=True)
        if baseline:
            remove(baseline)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    RESULTS.mkdir(exist_ok=True)
    for name, result in results.items():
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
        print_report(result)
    if "small" in results and "large" in results:
        print_ratios(results["small"], results["large"])
    if "small-baseline" in results and "large-baseline" in results:
        print_ratios(results["small-baseline"], results["large-baseline"])
    for size in args.sizes:
        if f"{size}-baseline" in results:
            print_side_by_side(results[size], results[f"{size}-baseline"])
    for size in args.sizes:
        if f"{size}-course" in results:
            print_against_course(size, results)
    for size in args.sizes if args.metrics else []:
        print_metrics_cost(size, runs, counted.get(size))


if __name__ == "__main__":
    main()
