"""The README's curl session works as pasted: its ```sh block under "A session with curl",
run by bash against a real server on a new database, from a folder laid out like a fresh
clone (`.venv` holds this interpreter's environment, with the `blogapi` script), no
virtual environment activated. Every status the session shows is the one its comments
promise, and it exits 0 under `set -euo pipefail`."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT, running_server, scratch_database

SESSION_HEADING = "## A session with curl"
SHOWN_STATUS = re.compile(r" -> (\d{3})$", re.MULTILINE)
PROMISED_STATUS = re.compile(r"-> (\d{3})\b")
MADE_ADMIN = re.compile(
    r"^ada@example.com \(user \d+\) is now an admin\.$", re.MULTILINE
)
SESSION_SECONDS = 120


def session_block() -> str:
    readme = (ROOT / "README.md").read_text()
    assert SESSION_HEADING in readme, f"README.md has no {SESSION_HEADING!r}"
    section = readme[readme.index(SESSION_HEADING) :]
    block = re.search(r"^```sh\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    assert block, f"no ```sh block under {SESSION_HEADING!r}"
    return block.group(1)


def promised_statuses(block: str) -> list[str]:
    """The statuses the comments announce (`# register -> 201`), in order."""
    comments = [line for line in block.splitlines() if line.lstrip().startswith("#")]
    return [code for line in comments for code in PROMISED_STATUS.findall(line)]


def test_the_session_takes_ids_from_answers_and_runs_from_the_clone() -> None:
    block = session_block()
    assert not re.search(r"/(posts|users)/\d", block), "an id is hard-coded"
    assert "python -m" not in block and "python3" not in block, (
        "use .venv/bin/...: no virtual environment is active in a new shell"
    )
    assert "BASE=${BASE:-" in block
    assert {"201", "200", "202", "401", "204"} <= set(promised_statuses(block))


def installed_venv() -> Path:
    """This interpreter's virtual environment, with the project's `blogapi` script."""
    if sys.prefix == sys.base_prefix:
        pytest.skip("the tests run outside a virtual environment: no .venv to link")
    venv = Path(sys.prefix)
    if not (venv / "bin" / "blogapi").exists():
        pytest.skip("the project is not installed: pip install --no-deps -e .")
    return venv


def test_the_curl_session_runs_as_pasted(tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("needs curl")
    venv = installed_venv()
    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / ".venv").symlink_to(venv, target_is_directory=True)
    script = tmp_path / "session.sh"
    block = session_block()
    script.write_text(block)
    # A new shell: the system's PATH, without this environment's bin folder.
    path = os.pathsep.join(
        folder
        for folder in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
        if not Path(folder).resolve().is_relative_to(venv.resolve())
    )

    with (
        scratch_database("readme") as database_url,
        running_server(database_url) as server,
    ):
        done = subprocess.run(
            ["bash", "-e", "-u", "-o", "pipefail", str(script)],
            cwd=clone,
            env={
                "PATH": path,
                "HOME": str(tmp_path),
                "LANG": "C.UTF-8",
                "BASE": server.url,
                # make-admin reaches the server's database, as the README says.
                "DATABASE_URL": database_url,
            },
            capture_output=True,
            text=True,
            timeout=SESSION_SECONDS,
            check=False,
        )

    output = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, output
    assert SHOWN_STATUS.findall(done.stdout) == promised_statuses(block), output
    assert MADE_ADMIN.search(done.stdout), output
    assert sorted(path.name for path in clone.iterdir()) == [".venv"], (
        "the session left files in the clone (make-admin made its own database?)"
    )
