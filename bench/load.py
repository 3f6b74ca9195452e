"""Load-test blogapi with wrk against seeded databases, and print what it measured.

    python bench/load.py small large        # both sizes, then the ratios between them
    python bench/load.py small --duration 5  # one size, shorter scenarios

For each size: migrate bench_<size> to head (seed it first with bench/seed.py), start
`uvicorn blogapi.main:app` with one worker on a loopback port against it, log in as a
seeded user and register the load's own writers, and warm up. Then every scenario runs
for a fixed time with a fixed number of connections, one size after the other, so both
sizes see the same machine. Between runs the script waits until the server has drained
the last run's queue. At the end it reads each worker's resident memory, stops the
servers and deletes what the load wrote.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
from seed import (
    PASSWORD,
    SEARCH_WORD,
    SIZES,
    database_url,
    dsn,
    migrate,
    server_env,
)

ROOT = Path(__file__).resolve().parent.parent
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk.lua"
RESULTS = Path(__file__).resolve().parent / "results"
LOAD_EMAILS = "load-%@load.example.com"
WRITERS = 12
READER = "user1@bench.example"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


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
        Scenario("one", "GET", f"/posts/{recent_post}"),
        Scenario("create_post", "POST", "/posts/", post_body, json_type, writes=True),
        Scenario("vote", "POST", "/vote/", None, json_type, writes=True, voting=True),
        # bcrypt-bound by design: a few connections saturate the cores, more only queue.
        Scenario("login", "POST", "/login", login_form, form_type, connections=4),
        Scenario("list_c256", "GET", "/posts/?limit=10", connections=256),
    ]


@dataclass
class Target:
    """One size's database and the server running against it."""

    size: str
    url: str
    base: str
    server: subprocess.Popen
    reader: str = ""
    writers: list[str] = field(default_factory=list)
    results: dict[str, dict] = field(default_factory=dict)


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
    """Delete the load's users, posts and votes, and take their votes off the counts."""
    connection = psycopg2.connect(dsn(url))
    with connection, connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE posts SET votes = posts.votes - gone.n
            FROM (SELECT post_id, count(*) AS n FROM votes JOIN users ON users.id = user_id
                  WHERE users.email LIKE %(emails)s GROUP BY post_id) AS gone
            WHERE posts.id = gone.post_id
            """,
            {"emails": LOAD_EMAILS},
        )
        cursor.execute("DELETE FROM users WHERE email LIKE %s", (LOAD_EMAILS,))
    if vacuum:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE users, posts, votes")
    connection.close()


def start(size: str) -> Target:
    url = database_url(size)
    migrate(url)
    remove_load_writes(url, vacuum=True)
    port = free_port()
    env = server_env(url)
    env.setdefault("BCRYPT_ROUNDS", "12")
    log = Path(tempfile.gettempdir()) / f"blogapi-bench-{size}.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "blogapi.main:app", "--host", "127.0.0.1"]
        + ["--port", str(port), "--workers", "1", "--no-access-log"]
        + ["--log-level", "warning"],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    target = Target(size, url, f"http://127.0.0.1:{port}", server)
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
        sys.exit(f"the {size} server did not start; see {log}")
    target.reader = login(target.base, READER, PASSWORD)
    target.writers = [
        register_and_login(target.base, f"load-{i}@load.example.com", PASSWORD)
        for i in range(WRITERS)
    ]
    return target


def stop(target: Target) -> None:
    target.server.terminate()
    target.server.wait(timeout=30)
    remove_load_writes(target.url, vacuum=True)


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
    """Wait until the server answers an authenticated read quickly: the queue is drained."""
    headers = {"Authorization": f"Bearer {target.reader}"}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        started = time.monotonic()
        call(target.base, "/posts/?limit=1", **headers)
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
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "duration_s": args.duration,
        "connections": args.connections,
        "bcrypt_rounds": int(os.environ.get("BCRYPT_ROUNDS", "12")),
        "scenarios": target.results,
        "rss_mb": round(rss, 1),
        "peak_rss_mb": round(peak, 1),
    }


def print_report(result: dict) -> None:
    print(
        f"\n{result['size']} ({result['when']}, {result['duration_s']} s per scenario, "
        f"BCRYPT_ROUNDS={result['bcrypt_rounds']})"
    )
    print(
        f"{'scenario':<12} {'conns':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'errors':>6} {'cpu ms/req':>10}"
    )
    for name, r in result["scenarios"].items():
        print(
            f"{name:<12} {r['connections']:>5} {r['rps']:>8.0f} {r['p50_ms']:>8.1f} "
            f"{r['p99_ms']:>8.1f} {r['max_ms']:>8.1f} {r['errors']:>6} "
            f"{r['cpu_ms_per_request']:>10.2f}"
        )
    s = result["scenarios"]
    if "list" in s and "root" in s:
        print(f"list/root throughput: {s['list']['rps'] / s['root']['rps']:.0%}")
    print(
        f"worker RSS after the run: {result['rss_mb']} MB (peak {result['peak_rss_mb']} MB)"
    )


def print_ratios(small: dict, large: dict) -> None:
    print("\nlarge / small")
    for name in ("list", "list_search", "one"):
        if name in small["scenarios"] and name in large["scenarios"]:
            a, b = small["scenarios"][name], large["scenarios"][name]
            print(
                f"{name:<12} p50 x{b['p50_ms'] / a['p50_ms']:.2f}   "
                f"req/s x{b['rps'] / a['rps']:.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="+", choices=SIZES)
    parser.add_argument("--duration", type=int, default=10, help="seconds per scenario")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--only", nargs="*", help="run only these scenarios")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    targets: list[Target] = []
    try:
        for size in args.sizes:
            targets.append(start(size))
        for target in targets:
            for warm_up in scenarios(target.size)[:4]:  # root, list, list_search, one
                run_wrk(target, warm_up, 2, args)
        for position, scenario in enumerate(scenarios("small")):
            if args.only and scenario.name not in args.only:
                continue
            for target in targets:
                settle(target)
                run = scenarios(target.size)[position]
                target.results[run.name] = run_wrk(target, run, args.duration, args)
                rps = target.results[run.name]["rps"]
                print(
                    f"  {target.size:<5} {run.name:<12} {rps:>7.0f} req/s", flush=True
                )
        results = {target.size: report(target, args) for target in targets}
    finally:
        for target in targets:
            stop(target)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    RESULTS.mkdir(exist_ok=True)
    for size, result in results.items():
        (RESULTS / f"{size}.json").write_text(json.dumps(result, indent=2))
        print_report(result)
    if "small" in results and "large" in results:
        print_ratios(results["small"], results["large"])


if __name__ == "__main__":
    main()
