"""Prometheus metrics at GET /metrics (blogapi.metrics, blogapi.http_metrics).

- In one process (TestClient, an app built with METRICS_TOKEN set): the endpoint is off
  without the setting and wants the bearer token; requests are counted by route
  template, not path; the pool gauges follow the connections; the output passes
  `promtool check metrics`.
- A real server, `python -m blogapi` with two gunicorn workers: the workers' counts add
  up, a killed worker leaves no request in progress behind, and a Prometheus server the
  test starts scrapes it.

promtool and prometheus come from Debian's `prometheus` package; the tests that need them
are skipped, saying so, where they are missing.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlmodel.ext.asyncio.session import AsyncSession

from blogapi import __version__
from blogapi.config import METRICS_DIR_NEEDED, settings
from blogapi.db import _connect_in_turn, build_engine
from blogapi.http_metrics import MeteredRoute
from blogapi.main import FEATURES, app, create_app
from blogapi.metrics import OTHER_METHOD, UNMATCHED_ROUTE
from blogapi.server import prepare_metrics_dir
from tests.factories import (
    assert_unauthorized,
    bearer,
    create_post,
    create_user_and_login,
    metric_value,
)
from tests.servers import ServerProcess, free_port, scratch_database

TOKEN = "metrics-token-for-the-tests"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
NEEDS_PROMTOOL = pytest.mark.skipif(
    PROMTOOL is None,
    reason="needs promtool: Debian's prometheus package (apt-get install prometheus)",
)
NEEDS_PROMETHEUS = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="needs a Prometheus server: Debian's prometheus package "
    "(apt-get install prometheus)",
)
WAIT_SECONDS = 60
"""How long to wait for what another process does: generous, for a loaded machine."""
POST_ROUTE = "/posts/{post_id}"
DISTINCT_POSTS = 1000

T = TypeVar("T")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(exposition: str) -> Samples:
    """Every sample of a Prometheus text exposition: (name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def requests_counted(samples: Samples, method: str, route: str, status: int) -> float:
    found = value(
        samples, "http_requests_total", method=method, route=route, status=str(status)
    )
    return found or 0.0


def scrape(client: TestClient | httpx.Client) -> str:
    response = client.get("/metrics", headers=bearer(TOKEN))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return response.text


def wait_for(what: str, check: Callable[[], T | None]) -> T:
    """Poll `check` until it returns something truthy, for WAIT_SECONDS at most."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {WAIT_SECONDS} s")
        time.sleep(0.2)


def promtool_check(exposition: str) -> None:
    assert PROMTOOL is not None
    checked = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == ""


@pytest.fixture
def metered(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """An app built with METRICS_TOKEN set, in this process."""
    monkeypatch.setattr(settings, "metrics_token", SecretStr(TOKEN))
    with TestClient(create_app()) as client:
        yield client


# The endpoint


def test_metrics_are_off_without_a_token(client: TestClient) -> None:
    response = client.get("/metrics", headers=bearer(TOKEN))

    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("a-wrong-token-of-the-right-size"),
        bearer(TOKEN + "x"),
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
)
def test_a_missing_or_wrong_token_is_401(
    metered: TestClient, headers: dict[str, str]
) -> None:
    response = metered.get("/metrics", headers=headers)

    assert_unauthorized(response, "A valid metrics token is required")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-request-id"]


def test_the_token_gets_the_metrics_past_the_usual_middleware(
    metered: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    response = metered.get("/metrics", headers=bearer(TOKEN))

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-request-id"]
    samples = parse(response.text)
    (build,) = [labels for name, labels in samples if name == "blogapi_build_info"]
    assert dict(build)["version"] == __version__
    assert dict(build)["commit"]


def test_metrics_are_not_in_the_openapi_document(metered: TestClient) -> None:
    document = metered.get("/openapi.json").json()

    assert "/metrics" not in document["paths"]


@NEEDS_PROMTOOL
def test_the_output_passes_promtool(metered: TestClient) -> None:
    _, headers = create_user_and_login(metered)
    post = create_post(metered, headers)
    metered.get(f"/posts/{post['id']}", headers=headers)
    metered.get("/no/such/page")

    promtool_check(scrape(metered))


# What is counted


def test_requests_are_counted_by_method_route_template_and_status(
    metered: TestClient,
) -> None:
    _, headers = create_user_and_login(metered)
    post = create_post(metered, headers)
    before = parse(scrape(metered))

    assert metered.get(f"/posts/{post['id']}", headers=headers).status_code == 200
    assert metered.get("/posts/999999", headers=headers).status_code == 404
    assert metered.get("/posts/", headers=headers).status_code == 200
    assert metered.get("/no/such/page").status_code == 404
    assert metered.request("PROPFIND", "/posts").status_code == 405
    after = parse(scrape(metered))

    counted = {
        (method, route, status): requests_counted(after, method, route, status)
        - requests_counted(before, method, route, status)
        for method, route, status in [
            ("GET", POST_ROUTE, 200),
            ("GET", POST_ROUTE, 404),
            ("GET", "/posts", 200),
            ("GET", UNMATCHED_ROUTE, 404),
            (OTHER_METHOD, "/posts", 405),
        ]
    }
    assert set(counted.values()) == {1}, counted
    durations = "http_request_duration_seconds_count"
    assert (value(after, durations, method="GET", route=POST_ROUTE) or 0) - (
        value(before, durations, method="GET", route=POST_ROUTE) or 0
    ) == 2
    in_progress = "http_requests_in_progress"
    assert value(after, in_progress, method="GET", route=POST_ROUTE) == 0
    assert value(after, in_progress, method="GET", route="/metrics") == 1
    routes = {dict(labels).get("route") for _, labels in after}
    assert not {route for route in routes if route and "999999" in route}


def test_a_thousand_post_ids_add_no_series(metered: TestClient) -> None:
    before = parse(scrape(metered))

    for post_id in range(1, DISTINCT_POSTS + 1):
        assert metered.get(f"/posts/{post_id}").status_code == 401
    after = parse(scrape(metered))

    new_series = set(after) - set(before)
    assert {dict(labels).get("route") for _, labels in new_series} <= {POST_ROUTE}
    counters = [name for name, _ in new_series if name == "http_requests_total"]
    assert len(counters) <= 1
    assert (
        requests_counted(after, "GET", POST_ROUTE, 401)
        - requests_counted(before, "GET", POST_ROUTE, 401)
        == DISTINCT_POSTS
    )
    routes = {dict(labels).get("route") or "" for _, labels in after}
    assert not [route for route in routes if re.fullmatch(r"/posts/\d+", route)]


def test_every_api_route_counts_its_requests_in_progress() -> None:
    routes = [route for feature in FEATURES for route in feature.router.routes]
    routes += [route for route in app.routes if isinstance(route, APIRoute)]

    assert len(routes) > 20
    assert [route.path for route in routes if not isinstance(route, MeteredRoute)] == []


def pool(state: str) -> float:
    return metric_value("blogapi_db_pool_connections", state=state)


def test_pool_connections_in_use_idle_and_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On the app's own engine: a connection out is in use, back in the pool idle, and
    a request held in line for one is waiting."""
    monkeypatch.setattr(settings, "metrics_token", SecretStr(TOKEN))
    engine = build_engine(settings.database_url)
    start = {state: pool(state) for state in ("in_use", "idle", "waiting")}

    def changed() -> dict[str, float]:
        return {state: pool(state) - start[state] for state in start}

    async def scenario() -> None:
        async with engine.connect():
            assert changed() == {"in_use": 1, "idle": 0, "waiting": 0}
        assert changed() == {"in_use": 0, "idle": 1, "waiting": 0}

        line = anyio.Lock()
        await line.acquire()
        async with AsyncSession(engine) as session:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(_connect_in_turn, session, line)
                with anyio.fail_after(WAIT_SECONDS):
                    while changed()["waiting"] != 1:
                        await anyio.sleep(0.01)
                assert changed() == {"in_use": 0, "idle": 1, "waiting": 1}
                line.release()
            assert changed() == {"in_use": 1, "idle": 0, "waiting": 0}
        assert changed() == {"in_use": 0, "idle": 1, "waiting": 0}
        await engine.dispose()
        assert changed() == {"in_use": 0, "idle": 0, "waiting": 0}

    anyio.run(scenario)


def test_requests_leave_no_connection_counted_in_use(metered: TestClient) -> None:
    _, headers = create_user_and_login(metered)
    for _ in range(3):
        assert metered.get("/posts/", headers=headers).status_code == 200

    samples = parse(scrape(metered))

    assert value(samples, "blogapi_db_pool_connections", state="in_use") == 0
    assert value(samples, "blogapi_db_pool_connections", state="waiting") == 0
    assert (value(samples, "blogapi_db_pool_connections", state="idle") or 0) >= 1


# A real server: gunicorn with two workers


def test_the_default_metrics_dir_is_one_per_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "metrics_dir", "")
    port = free_port()
    folder = Path(tempfile.gettempdir()) / f"blogapi-metrics-{port}"
    try:
        assert prepare_metrics_dir(port) == folder
        assert folder.is_dir()
        assert folder.stat().st_mode & 0o777 == 0o700
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_metrics_dir_that_is_a_link_or_a_file_stops_the_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "real").mkdir()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "real")
    afile = tmp_path / "file"
    afile.write_text("")

    monkeypatch.setattr(settings, "metrics_dir", str(link))
    with pytest.raises(SystemExit) as linked:
        prepare_metrics_dir(8000)
    monkeypatch.setattr(settings, "metrics_dir", str(afile))
    with pytest.raises(SystemExit) as filed:
        prepare_metrics_dir(8000)

    assert str(linked.value) == (
        f"{link} belongs to another user or is a link: {METRICS_DIR_NEEDED}"
    )
    assert str(filed.value) == f"{afile}: File exists: {METRICS_DIR_NEEDED}"


def counted_by_each_worker(folder: Path, route: str) -> dict[int, float]:
    """`GET <route>` answered 200, per worker, from the workers' own files."""
    counts = {}
    for path in folder.glob("counter_*.db"):
        pid = int(path.stem.removeprefix("counter_"))
        samples = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in MultiProcessCollector.merge([str(path)])
            for sample in family.samples
        }
        counts[pid] = requests_counted(samples, "GET", route, 200)
    return counts


def write_stale_counter(folder: Path) -> None:
    """A file as a worker of an earlier run would have left it: GET /stale counted."""
    program = (
        "from prometheus_client import Counter\n"
        "Counter('http_requests', '', ['method', 'route', 'status'])"
        ".labels('GET', '/stale', '200').inc()\n"
    )
    subprocess.run(
        [sys.executable, "-c", program],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)},
        check=True,
        timeout=WAIT_SECONDS,
    )


@pytest.fixture(scope="module")
def metrics_dir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="blogapi-metrics-test-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def server(metrics_dir: Path) -> Iterator[ServerProcess]:
    """`python -m blogapi --workers 2` with metrics on, its METRICS_DIR holding the files
    of an earlier run and a file of someone else's."""
    write_stale_counter(metrics_dir)
    (metrics_dir / "keep.txt").write_text("not prometheus_client's")
    with scratch_database("metrics") as url:
        process = ServerProcess(
            url, workers=2, METRICS_TOKEN=TOKEN, METRICS_DIR=str(metrics_dir)
        )
        try:
            yield process.start()
        finally:
            process.close()


def test_the_last_run_s_files_are_emptied_at_start(
    server: ServerProcess, metrics_dir: Path
) -> None:
    with server.client() as client:
        samples = parse(scrape(client))

    assert not [key for key in samples if ("route", "/stale") in key[1]]
    assert (metrics_dir / "keep.txt").exists()


def test_the_workers_counts_add_up(server: ServerProcess, metrics_dir: Path) -> None:
    """Requests on new connections until both workers have answered some: /metrics,
    whichever worker answers it, counts them all."""
    with server.client() as client:
        before = requests_counted(parse(scrape(client)), "GET", "/", 200)
    each_before = counted_by_each_worker(metrics_dir, "/")
    sent = 0

    def get_root(_: int) -> int:
        return httpx.get(f"{server.url}/", timeout=10).status_code

    def both_answered() -> bool:
        nonlocal sent
        with ThreadPoolExecutor(4) as pool:
            assert set(pool.map(get_root, range(20))) == {200}
        sent += 20
        each = counted_by_each_worker(metrics_dir, "/")
        served = [pid for pid in each if each[pid] > each_before.get(pid, 0)]
        return len(served) >= 2

    wait_for("requests answered by both workers", both_answered)
    with server.client() as client:
        exposition = scrape(client)
    samples = parse(exposition)

    assert requests_counted(samples, "GET", "/", 200) - before == sent
    assert sum(counted_by_each_worker(metrics_dir, "/").values()) == before + sent
    if PROMTOOL:
        promtool_check(exposition)


def scrape_afresh(server: ServerProcess) -> Samples:
    """The metrics, on a connection of their own: a kept-alive one may lead to a worker
    that is gone."""
    response = httpx.get(f"{server.url}/metrics", headers=bearer(TOKEN), timeout=10)
    assert response.status_code == 200, response.text
    return parse(response.text)


def in_progress(server: ServerProcess, method: str, route: str) -> float:
    found = value(
        scrape_afresh(server), "http_requests_in_progress", method=method, route=route
    )
    return found or 0.0


def test_a_killed_worker_leaves_no_request_in_progress(
    server: ServerProcess, metrics_dir: Path
) -> None:
    """A login whose body never comes is in progress on one worker; that worker is
    killed. gunicorn starts another, and the dead one's gauges go with it."""
    workers = server.worker_pids()
    assert len(workers) == 2
    counted_before = requests_counted(scrape_afresh(server), "GET", "/", 200)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as held:
        held.sendall(
            b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 64\r\n\r\n"
        )
        wait_for(
            "the held login in progress",
            lambda: in_progress(server, "POST", "/login") == 1,
        )
        victim = server.worker_serving(held)
        os.kill(victim, signal.SIGKILL)

        def replaced() -> bool:
            now = server.worker_pids()
            return victim not in now and len(now) == 2

        wait_for("a new worker in the killed one's place", replaced)

    wait_for(
        "the dead worker's gauges gone",
        lambda: in_progress(server, "POST", "/login") == 0,
    )
    assert not (metrics_dir / f"gauge_livesum_{victim}.db").exists()
    samples = scrape_afresh(server)
    assert requests_counted(samples, "GET", "/", 200) == counted_before
    assert value(samples, "blogapi_db_pool_connections", state="in_use") in (0, None)


@pytest.fixture
def prometheus(server: ServerProcess, tmp_path: Path) -> Iterator[str]:
    """A Prometheus server scraping `server` every second with the token; its URL."""
    assert PROMETHEUS is not None
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "scrape_configs:\n"
        "  - job_name: blogapi\n"
        "    authorization:\n"
        f"      credentials: {TOKEN}\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{server.port}']\n"
    )
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert process.poll() is None, log.read_text(errors="replace")
            try:
                return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for("Prometheus ready", ready)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=WAIT_SECONDS)


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{prometheus}/api/v1/query", params={"query": promql}, timeout=10
    )
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()["data"]["result"]
    return result


@NEEDS_PROMETHEUS
def test_prometheus_scrapes_the_server(server: ServerProcess, prometheus: str) -> None:
    with server.client() as client:
        assert client.get("/posts/1").status_code == 401

    up = wait_for("up == 1", lambda: query(prometheus, "up") or None)
    assert up[0]["metric"]["job"] == "blogapi"
    wait_for("up == 1", lambda: query(prometheus, "up")[0]["value"][1] == "1")
    series = wait_for(
        "the post route's requests",
        lambda: query(prometheus, f'http_requests_total{{route="{POST_ROUTE}"}}'),
    )
    assert {s["metric"]["status"] for s in series} >= {"401"}
    assert {s["metric"]["method"] for s in series} == {"GET"}
