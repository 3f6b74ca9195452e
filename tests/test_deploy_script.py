"""deploy/deploy.sh, run end to end on this machine.

A local "origin" repository holds this checkout's files (as they are, uncommitted changes
included) and the releases the test commits on top; the "host" is a clone of it with a venv
and a real server process, started by the restart command the test passes (a script that
stops the previous process by its pid file and starts `python -m blogapi` on a free port, and
fails, as the broken release needs, when that process is gone a second later). The database is
a SQLite file, or a scratch PostgreSQL database on the PostgreSQL run.

The venv sees the packages of the interpreter running the tests (a `.pth` file), so the
script's `pip install -r requirements.txt` finds them all installed: no network.
"""

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import NullPool

from tests.servers import ROOT, SECRET_KEY, _driver_url, free_port, scratch_database

SCRIPT = ROOT / "deploy" / "deploy.sh"
WAIT_SECONDS = 60
GIT_IDENTITY = [
    "-c",
    "user.name=Deploy Test",
    "-c",
    "user.email=deploy@example.com",
]

if shutil.which("git") is None or shutil.which("curl") is None:
    pytest.skip("deploy.sh needs git and curl", allow_module_level=True)

RESTART = """\
#!/bin/bash
# Stands in for `systemctl restart blogapi`: stop the running server, start the checkout's.
set -euo pipefail
if [ -f {pid} ]; then
  kill -TERM -- "-$(cat {pid})" 2>/dev/null || true
  while kill -0 -- "-$(cat {pid})" 2>/dev/null; do sleep 0.1; done
  rm -f {pid}
fi
set -a
. {env_file}
set +a
cd {app}
setsid {venv}/bin/python -m blogapi --host 127.0.0.1 --port {port} --workers 1 \\
  </dev/null >>{log} 2>&1 &
echo $! > {pid}
# Like a unit whose process exits at once, a server that dies while starting fails the restart.
sleep 1
kill -0 "$(cat {pid})"
"""

NEW_MIGRATION = '''\
"""deploy test: a table the broken release adds"""

import sqlalchemy as sa
from alembic import op

revision = "deploy_probe"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("deploy_probe", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    op.drop_table("deploy_probe")
'''


def code_head() -> str:
    """The Alembic head of this checkout's migrations."""
    head = ScriptDirectory.from_config(Config(ROOT / "alembic.ini")).get_current_head()
    assert head is not None
    return head


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", *GIT_IDENTITY, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


@dataclass
class Host:
    origin: Path
    app: Path
    venv: Path
    env: dict[str, str]
    url: str
    database_url: str
    pid_file: Path
    log: Path

    def commit(self, message: str, files: dict[str, str]) -> str:
        """A new release on the origin's main branch."""
        for name, content in files.items():
            path = self.origin / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        git("add", "--all", cwd=self.origin)
        git("commit", "--quiet", "-m", message, cwd=self.origin)
        return git("rev-parse", "HEAD", cwd=self.origin)

    def deploy(self, commit: str) -> "subprocess.CompletedProcess[str]":
        return subprocess.run(
            ["bash", str(SCRIPT), commit],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=4 * WAIT_SECONDS,
            check=False,
        )

    def health(self) -> dict[str, str]:
        response = httpx.get(f"{self.url}/health", timeout=5)
        assert response.status_code == 200
        liveness: dict[str, str] = response.json()
        return liveness

    def ready(self) -> int:
        return httpx.get(f"{self.url}/health/ready", timeout=5).status_code

    def schema(self) -> tuple[str, bool]:
        """The database's Alembic revision, and whether the new migration's table exists."""
        engine = create_engine(_driver_url(self.database_url), poolclass=NullPool)
        try:
            with engine.connect() as connection:
                revision = connection.execute(
                    text("SELECT version_num FROM alembic_version")
                ).scalar_one()
                return revision, inspect(connection).has_table("deploy_probe")
        finally:
            engine.dispose()

    def stop(self) -> None:
        if self.pid_file.exists():
            try:
                os.killpg(int(self.pid_file.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass


def wait_until_ready(host: Host) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        try:
            if host.ready() == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the first release did not start:\n{host.log.read_text()}")


def copy_checkout(destination: Path) -> None:
    """The checkout's files as they are now, without what git ignores."""
    listed = git(
        "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT
    )
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Host]:
    if not (ROOT / ".git").exists():
        pytest.skip("needs the code as a git checkout, to copy its files")
    origin, app, venv = tmp_path / "origin", tmp_path / "app", tmp_path / "venv"
    origin.mkdir()
    copy_checkout(origin)
    git("init", "--quiet", "--initial-branch=main", cwd=origin)
    git("add", "--all", cwd=origin)
    git("commit", "--quiet", "-m", "the release serving", cwd=origin)
    git("clone", "--quiet", str(origin), str(app), cwd=tmp_path)
    git("checkout", "--quiet", "--detach", "HEAD", cwd=app)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    (site_packages,) = venv.glob("lib/python*/site-packages")
    (site_packages / "test-interpreter.pth").write_text(
        sysconfig.get_paths()["purelib"]
    )

    with scratch_database("deploy") as database_url:
        env_file = tmp_path / "blogapi.env"
        env_file.write_text(
            f"DATABASE_URL={database_url}\nSECRET_KEY={SECRET_KEY}\nBCRYPT_ROUNDS=4\n"
        )
        port = free_port()
        restart = tmp_path / "restart"
        restart.write_text(
            RESTART.format(
                pid=tmp_path / "server.pid",
                env_file=env_file,
                app=app,
                venv=venv,
                port=port,
                log=tmp_path / "server.log",
            )
        )
        restart.chmod(0o755)
        inherited = {
            name: value
            for name, value in os.environ.items()
            if name in {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR"}
        }
        host = Host(
            origin=origin,
            app=app,
            venv=venv,
            env={
                **inherited,
                "DEPLOY_APP_DIR": str(app),
                "DEPLOY_VENV": str(venv),
                "DEPLOY_ENV_FILE": str(env_file),
                "DEPLOY_RESTART": str(restart),
                "DEPLOY_HEALTH_URL": f"http://127.0.0.1:{port}",
                "DEPLOY_TIMEOUT": str(WAIT_SECONDS),
                "PIP_NO_INDEX": "1",
            },
            url=f"http://127.0.0.1:{port}",
            database_url=database_url,
            pid_file=tmp_path / "server.pid",
            log=tmp_path / "server.log",
        )
        try:
            subprocess.run([restart], check=True, timeout=WAIT_SECONDS)
            wait_until_ready(host)
            yield host
        finally:
            host.stop()


def test_deploys_a_release_then_rolls_back_a_broken_one_across_its_migration(
    host: Host,
) -> None:
    serving = git("rev-parse", "HEAD", cwd=host.app)
    head = code_head()
    good = host.commit("a good release", {"RELEASE": "good\n"})

    first = host.deploy(good)
    assert first.returncode == 0, first.stdout + first.stderr
    assert host.health()["commit"] == good, host.log.read_text()
    assert host.ready() == 200
    assert f"deploying {good} (serving: {serving})" in first.stdout
    for step in ("fetch", "install", "apply the migrations", "restart", "wait"):
        assert f"] {step}" in first.stdout, first.stdout

    again = host.deploy(good)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing to do" in again.stdout
    assert host.health()["commit"] == good
    assert host.ready() == 200

    broken = host.commit(
        "a release that migrates, then cannot start",
        {
            "migrations/versions/9999_deploy_probe.py": NEW_MIGRATION.format(head=head),
            "blogapi/__main__.py": 'raise SystemExit("this release cannot start")\n',
        },
    )
    failed = host.deploy(broken)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"previous head: {head}" in failed.stdout
    assert f"rolling back to {good}" in failed.stderr
    assert "this release cannot start" in host.log.read_text()
    assert f"downgrade the schema to {head}" in failed.stdout
    assert f"Running upgrade {head} -> deploy_probe" in failed.stderr
    assert f"Running downgrade deploy_probe -> {head}" in failed.stderr
    assert f"rolled back to {good}" in failed.stderr
    assert host.schema() == (head, False)
    assert host.health()["commit"] == good
    assert host.ready() == 200
    assert git("rev-parse", "HEAD", cwd=host.app) == good


def test_refuses_to_run_without_exactly_one_commit(tmp_path: Path) -> None:
    for arguments in ([], ["a", "b"], [""]):
        done = subprocess.run(
            ["bash", str(SCRIPT), *arguments],
            env={"PATH": os.environ["PATH"], "DEPLOY_APP_DIR": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        assert done.returncode == 64
        assert "usage:" in done.stderr
