"""A real nginx in front of server processes, configured by the site file `deploy/` ships.

`Nginx(site, ports)` runs Debian's `/usr/sbin/nginx` in the foreground (`daemon off`) from a
temporary folder holding its main configuration, pid file, logs and temporary files, listening
on 127.0.0.1:<free port>. The main configuration is the test's own (the `http` block and the
access log); the site inside it is the shipped file with only its ports changed: its
`listen 80` becomes the free port on 127.0.0.1 (its IPv6 `listen` is left out), and its
upstream servers, in order, the ports given. `reload()` applies the site again, e.g. with
an instance marked `down`, and returns once the worker processes of the old configuration
have exited.

The access log names, for each request, the id the client sent in X-Request-ID, and each
instance nginx tried (`$upstream_addr`) with what it got (`$upstream_status`): which
instance answered, and which requests were passed on to another.

As root, nginx's worker processes run as root too (`user root`), so they can use the
temporary folder. Every wait here is bounded.
"""

import os
import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.daemons import Daemon
from tests.servers import ROOT

BINARY = "/usr/sbin/nginx"
RELOAD_SECONDS = 90
"""Old worker processes finish the requests they have before exiting."""
LOG_SECONDS = 10

UPSTREAM_SERVER = re.compile(r"^(\s*server )127\.0\.0\.1:\d+( [^;]*)?;$", re.MULTILINE)
LISTEN = re.compile(r"^(\s*listen )80;$", re.MULTILINE)
LISTEN_IPV6 = re.compile(r"^\s*listen \[::\]:80;\n", re.MULTILINE)

LOG_FORMAT = (
    '$http_x_request_id $request_method $status "$upstream_addr" "$upstream_status"'
)


def render_site(
    template: str, port: int, upstreams: list[int], down: frozenset[int] = frozenset()
) -> str:
    """The shipped site with its ports changed, and the upstreams in `down` marked so."""
    servers = UPSTREAM_SERVER.findall(template)
    assert len(servers) == len(upstreams), (
        f"the site lists {len(servers)} upstream servers, the test runs {len(upstreams)}"
    )
    assert len(LISTEN.findall(template)) == 1, "the site should have one `listen 80;`"
    ports = iter(upstreams)

    def server(match: re.Match[str]) -> str:
        upstream = next(ports)
        flags = (match.group(2) or "") + (" down" if upstream in down else "")
        return f"{match.group(1)}127.0.0.1:{upstream}{flags};"

    site = UPSTREAM_SERVER.sub(server, template)
    site = LISTEN.sub(rf"\g<1>127.0.0.1:{port};", site)
    return LISTEN_IPV6.sub("", site)


@dataclass(frozen=True)
class Passage:
    """One request as nginx's access log tells it."""

    request_id: str
    method: str
    status: int
    tried: list[str]
    """The instances tried, in order (`127.0.0.1:<port>`), or the upstream's name when
    none could be."""
    answers: list[str]
    """What each gave: its status, or 502 (504) when it couldn't be reached (timed out)."""


_LOG_LINE = re.compile(r'^(\S+) (\S+) (\d{3}) "([^"]*)" "([^"]*)"$')


class Nginx(Daemon):
    """SIGQUIT stops nginx gracefully: it finishes the requests in hand, then exits."""

    name = "nginx"
    stop_signal = signal.SIGQUIT

    def __init__(
        self, site_template: Path, upstreams: list[int], workers: int = 2
    ) -> None:
        super().__init__()
        self.template = site_template.read_text()
        self.upstreams = upstreams
        self.url = f"http://127.0.0.1:{self.port}"
        self.site = self.folder / "site.conf"
        self.config = self.folder / "nginx.conf"
        self.access_log = self.folder / "access.log"
        self.error_log = self.folder / "error.log"
        self.workers = workers

    def write_config(self) -> None:
        user = "user root;\n" if os.geteuid() == 0 else ""
        temp = "\n".join(
            f"    {kind}_temp_path {self.folder / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        self.config.write_text(
            f"{user}worker_processes {self.workers};\n"
            f"pid {self.folder / 'nginx.pid'};\n"
            f"error_log {self.error_log} notice;\n"
            "events {\n    worker_connections 1024;\n}\n"
            "http {\n"
            f"    log_format balancer '{LOG_FORMAT}';\n"
            f"    access_log {self.access_log} balancer;\n"
            f"{temp}\n"
            f"    include {self.site};\n"
            "}\n"
        )

    def write_site(
        self, upstreams: list[int] | None = None, down: frozenset[int] = frozenset()
    ) -> None:
        ports = self.upstreams if upstreams is None else upstreams
        self.site.write_text(render_site(self.template, self.port, ports, down))

    def start(self) -> "Nginx":
        self.write_config()
        self.write_site()
        command = [BINARY, "-p", str(self.folder), "-c", str(self.config)]
        command += ["-e", str(self.error_log), "-g", "daemon off;"]
        self.launch(command)
        return self

    def worker_pids(self) -> set[int]:
        """The master's children: its worker processes."""
        assert self.process is not None
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return {int(child) for child in children.split()}

    def reload(
        self, upstreams: list[int] | None = None, down: frozenset[int] = frozenset()
    ) -> None:
        """Apply the site again, to other upstreams if given and with those in `down`
        marked so, and wait until every worker process of the old configuration has
        finished its requests and exited."""
        assert self.process is not None
        old = self.worker_pids()
        self.write_site(upstreams, down)
        os.kill(self.process.pid, signal.SIGHUP)
        deadline = time.monotonic() + RELOAD_SECONDS
        while time.monotonic() < deadline:
            current = self.worker_pids()
            if not current & old and len(current) == self.workers:
                return
            time.sleep(0.05)
        raise AssertionError(
            f"nginx's old workers still running {RELOAD_SECONDS} s after a reload:\n"
            f"{self.log_text()}"
        )

    def passage(self, request_id: str) -> Passage:
        """The access log's line for one request, once nginx has written it (just after
        its answer)."""
        deadline = time.monotonic() + LOG_SECONDS
        while time.monotonic() < deadline:
            found = self.passages().get(request_id)
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"request {request_id} is not in nginx's access log")

    def passages(self) -> dict[str, Passage]:
        """The access log, by the id each client request carried."""
        found = {}
        for line in self.access_log.read_text().splitlines():
            match = _LOG_LINE.match(line)
            assert match, f"unexpected access log line: {line}"
            request_id, method, status, tried, answers = match.groups()
            found[request_id] = Passage(
                request_id, method, int(status), tried.split(", "), answers.split(", ")
            )
        return found

    def log_text(self) -> str:
        try:
            return self.error_log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"


SHIPPED_SITE = ROOT / "deploy" / "nginx-upstreams.conf"


@contextmanager
def nginx_in_front(upstreams: list[int]) -> Iterator[Nginx]:
    """nginx on the shipped multi-instance site, in front of the ports `upstreams`."""
    if not os.access(BINARY, os.X_OK):
        pytest.skip(f"needs nginx at {BINARY} (Debian's nginx-light package)")
    nginx = Nginx(SHIPPED_SITE, upstreams)
    try:
        yield nginx.start()
    finally:
        nginx.close()
