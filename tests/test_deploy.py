"""The deployment files, checked without a Docker engine: Dockerfile, compose, Procfile, CI.

The image's start command is also run for real: the files the Dockerfile copies are staged in a
scratch directory standing in for its WORKDIR, and its CMD runs there with its ENV until its
HEALTHCHECK command passes. Installing requirements.txt into a fresh virtual environment, as the
image does, takes half a minute or more, so that test runs only with BLOGAPI_SLOW_TESTS=1.
"""

import configparser
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.request import urlopen

import pytest
import yaml
from fastapi.testclient import TestClient

from blogapi import __version__
from blogapi.config import Settings, settings
from blogapi.main import app
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
CI_RUN = (ROOT / ".ci" / "run").read_text()


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [
        (keyword.upper(), arguments.strip())
        for keyword, _, arguments in (
            line.strip().partition(" ") for line in joined.splitlines() if line.strip()
        )
    ]


def instructions(keyword: str) -> list[str]:
    return [arguments for name, arguments in dockerfile() if name == keyword]


def position(keyword: str, pattern: str) -> int:
    """Where the first KEYWORD instruction matching pattern is, in Dockerfile order."""
    for index, (name, arguments) in enumerate(dockerfile()):
        if name == keyword and re.search(pattern, arguments):
            return index
    raise AssertionError(f"no {keyword} matching {pattern!r} in the Dockerfile")


def dockerfile_args() -> dict[str, str]:
    """ARG defaults, as a build without --build-arg sees them."""
    return dict(
        (pair.split("=", 1) + [""])[:2]
        for arguments in instructions("ARG")
        for pair in shlex.split(arguments)
    )


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    args = dockerfile_args()
    for arguments in instructions("ENV"):
        for pair in shlex.split(arguments):
            name, value = pair.split("=", 1)
            env[name] = re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], value)
    return env


def healthcheck_command() -> str:
    (healthcheck,) = instructions("HEALTHCHECK")
    return healthcheck.split(" CMD ", 1)[1].strip()


def copied_sources() -> list[str]:
    return [
        source
        for arguments in instructions("COPY")
        for source in shlex.split(arguments)[:-1]
    ]


def test_base_image_is_slim_official_python_matching_python_version() -> None:
    (base,) = instructions("FROM")
    version = (ROOT / ".python-version").read_text().strip()
    assert re.fullmatch(rf"python:{re.escape(version)}(\.\d+)?-slim(-\w+)?", base), base


def test_dependencies_are_installed_before_the_code_is_copied() -> None:
    requirements_copied = position("COPY", r"^requirements\.txt\b")
    installed = position("RUN", r"pip install .*-r requirements\.txt")
    code_copied = position("COPY", r"^blogapi\b")
    assert requirements_copied < installed < code_copied
    assert all(
        index > installed
        for index, (name, arguments) in enumerate(dockerfile())
        if name in {"COPY", "ADD"} and not arguments.startswith("requirements.txt")
    ), "only requirements.txt may be copied before the dependencies are installed"


def test_runs_as_a_non_root_user_it_creates() -> None:
    users = instructions("USER")
    assert users, "no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert position("RUN", rf"useradd .*\b{user}\b") < position("USER", user)
    assert position("USER", user) > max(
        index for index, (name, _) in enumerate(dockerfile()) if name == "RUN"
    ), "every RUN after USER would run as that user; keep USER after the installs"


def test_listens_on_port_8000_by_default() -> None:
    assert instructions("EXPOSE") == ["8000"]
    assert dockerfile_env()["PORT"] == "8000"


def test_healthcheck_asks_readiness_with_python_not_curl() -> None:
    """Healthy means ready: the database answers, migrated, not only the process."""
    command = healthcheck_command()
    assert "/health/ready" in command
    assert "urllib" in command
    assert "curl" not in command and "wget" not in command


def test_the_commit_build_argument_reaches_the_app_after_the_install() -> None:
    """`--build-arg BLOGAPI_COMMIT=<sha>` becomes the environment variable /health reads;
    declared after the dependencies, so a new commit reuses their cached layer."""
    assert dockerfile_args() == {"BLOGAPI_COMMIT": ""}
    assert "BLOGAPI_COMMIT" in dockerfile_env()
    install = position("RUN", r"pip install .*-r requirements\.txt")
    assert position("ARG", r"^BLOGAPI_COMMIT\b") > install
    assert position("ENV", r"BLOGAPI_COMMIT=\$BLOGAPI_COMMIT") > install


def test_cmd_is_python_m_blogapi_in_exec_form() -> None:
    (cmd,) = instructions("CMD")
    assert json.loads(cmd) == ["python", "-m", "blogapi"]


def test_health_names_the_version_and_the_commit_set() -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(settings, "commit", "0123abc")
        with TestClient(app) as client:
            liveness = client.get("/health")
            info = client.get("/openapi.json").json()["info"]
    assert liveness.status_code == 200
    assert liveness.json() == {
        "status": "ok",
        "version": __version__,
        "commit": "0123abc",
    }
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)
    assert info["version"] == __version__


def test_without_a_commit_set_health_names_the_checkouts_head() -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("the code is not a git checkout here")
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(settings, "commit", "")
        with TestClient(app) as client:
            assert client.get("/health").json()["commit"] == head


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("git") is None,
    reason="needs root to give a checkout to another user, and git",
)
def test_the_checkouts_head_is_read_when_another_user_owns_it(tmp_path: Path) -> None:
    """On a server the deploy user owns the checkout and the app's user reads it: git's
    "dubious ownership" check must not hide the commit."""
    shutil.copytree(ROOT / "blogapi", tmp_path / "blogapi")
    identity = ["-c", "user.name=test", "-c", "user.email=test@example.com"]
    for command in (["init", "-q"], ["add", "blogapi"], ["commit", "-qm", "code"]):
        subprocess.run(["git", *identity, *command], cwd=tmp_path, check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    subprocess.run(["chown", "-R", "nobody", str(tmp_path)], check=True)
    found = subprocess.run(
        [sys.executable, "-c", "from blogapi.health import checkout_head; print(checkout_head())"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path), "SECRET_KEY": "x" * 40},
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert found.stdout.strip() == head


def test_the_commit_comes_from_the_image_then_heroku(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable in ("BLOGAPI_COMMIT", "SOURCE_VERSION", "HEROKU_SLUG_COMMIT"):
        monkeypatch.delenv(variable, raising=False)
    assert Settings().commit == ""
    for variable, commit in [
        ("HEROKU_SLUG_COMMIT", "c0ffee3"),
        ("SOURCE_VERSION", "b0ffee2"),
        ("BLOGAPI_COMMIT", "a0ffee1"),
    ]:
        monkeypatch.setenv(variable, commit)
        assert Settings().commit == commit, f"{variable} does not take precedence"


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str) -> bool:
    return any(
        fnmatch.fnmatch(path, pattern.removeprefix("**/")) for pattern in dockerignore()
    )


@pytest.mark.parametrize(
    "path",
    [".venv", ".git", "blogapi.db", "blogapi.db-wal", "blogapi.db.secret", ".env"],
)
def test_dockerignore_keeps_local_state_and_secrets_out(path: str) -> None:
    assert ignored(path), f"{path} would be sent to the Docker build"


def test_everything_the_image_copies_exists_and_is_not_ignored() -> None:
    for source in copied_sources():
        assert (ROOT / source).exists(), source
        assert not ignored(source), (
            f"{source} is copied but .dockerignore leaves it out"
        )


def test_procfile_runs_the_server_and_migrates_on_release() -> None:
    processes = dict(
        line.split(":", 1)
        for line in (ROOT / "Procfile").read_text().splitlines()
        if line.strip()
    )
    assert {name: command.strip() for name, command in processes.items()} == {
        "web": "python -m blogapi",
        "release": "alembic upgrade head",
    }
    assert (ROOT / ".python-version").read_text().strip() == "3.11"


def compose(name: str = "compose.yaml") -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def test_compose_starts_the_api_after_a_healthy_postgres_with_a_named_volume() -> None:
    services = compose()["services"]
    api, db = services["api"], services["db"]
    assert api["build"] == "."
    assert api["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert {"DATABASE_URL", "SECRET_KEY"} <= set(api["environment"])
    assert "@db:5432/" in api["environment"]["DATABASE_URL"]
    assert "command" not in api, (
        "the image's CMD (python -m blogapi) applies migrations"
    )
    assert db["image"] == "postgres:16"
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    volume, mount_point = db["volumes"][0].split(":")[:2]
    assert volume in compose()["volumes"]
    assert mount_point == "/var/lib/postgresql/data"


def test_compose_override_bind_mounts_the_code_and_reloads() -> None:
    api = compose("compose.override.yaml")["services"]["api"]
    assert api["command"] == ["python", "-m", "blogapi", "--reload"]
    assert "./blogapi:/app/blogapi" in api["volumes"]
    assert api["environment"]["HOST"] == "0.0.0.0"


def test_ci_workflow_lints_then_runs_ci_run_then_builds_the_image() -> None:
    jobs = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())["jobs"]
    assert jobs["test"]["needs"] == "lint"
    assert jobs["docker"]["needs"] == "test"
    steps = {job: [step.get("run", "") for step in jobs[job]["steps"]] for job in jobs}
    assert "bash .ci/run" in steps["test"]
    assert jobs["test"]["services"]["postgres"]["ports"] == ["5432:5432"]
    assert any(run.startswith("docker build") for run in steps["docker"])
    lint = [run for run in steps["lint"] if run.startswith("ruff ")]
    assert lint, "the lint job runs no ruff command"
    for command in lint:
        assert f".venv/bin/{command}" in CI_RUN, f"{command!r} is not what .ci/run runs"


def test_ci_smoke_run_waits_until_the_image_is_ready() -> None:
    jobs = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())["jobs"]
    (smoke,) = [
        step["run"]
        for step in jobs["docker"]["steps"]
        if "docker run" in step.get("run", "")
    ]
    wait = re.search(r"for _ in .*?done", smoke, re.DOTALL)
    assert wait, "the smoke run does not wait for the container"
    assert "/health/ready" in wait.group(), "it must wait for readiness, not liveness"


def workflow() -> dict:
    return yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())


def steps_of(job: str) -> list[dict]:
    steps: list[dict] = workflow()["jobs"][job]["steps"]
    return steps


PINNED = re.compile(r"uses: ([\w.-]+/[\w./-]+)@([0-9a-f]{40}) # v(\d+)\.\d+\.\d+$")
NODE_24_MAJORS = {
    "actions/checkout": 5,
    "actions/setup-python": 6,
    "actions/setup-go": 6,
    "docker/login-action": 4,
    "docker/setup-buildx-action": 4,
    "docker/build-push-action": 7,
    "docker/metadata-action": 6,
}


def test_every_action_is_pinned_to_a_commit_of_a_node_24_release() -> None:
    lines = (ROOT / ".github/workflows/ci.yml").read_text().splitlines()
    uses = [line.strip().removeprefix("- ") for line in lines if "uses:" in line]
    assert uses
    for line in uses:
        pinned = PINNED.fullmatch(line)
        assert pinned, f"{line!r}: pin a full commit SHA, with its version in a comment"
        action, _, major = pinned.groups()
        assert action in NODE_24_MAJORS, f"{action}: which release runs on Node 24?"
        assert int(major) >= NODE_24_MAJORS[action], f"{line!r} runs on Node 20"


def test_the_workflow_runs_for_main_tags_and_pull_requests_read_only() -> None:
    triggers = workflow()[True]  # YAML 1.1 reads the key `on` as true
    assert triggers["push"] == {"branches": ["main"], "tags": ["v*"]}
    assert "pull_request" in triggers
    assert "pull_request_target" not in triggers
    assert workflow()["permissions"] == {"contents": "read"}


def test_only_the_publish_job_may_write_packages() -> None:
    jobs = workflow()["jobs"]
    writers = {
        name
        for name, job in jobs.items()
        if "write" in job.get("permissions", {}).values()
    }
    assert writers == {"publish"}
    assert jobs["publish"]["permissions"] == {"contents": "read", "packages": "write"}


def test_the_image_is_published_after_the_smoke_run_on_pushes_only() -> None:
    publish = workflow()["jobs"]["publish"]
    assert publish["needs"] == "docker"
    assert "github.event_name == 'push'" in publish["if"]
    assert "refs/heads/main" in publish["if"] and "refs/tags/v" in publish["if"]
    steps = {step.get("uses", "").split("@")[0]: step for step in publish["steps"]}
    meta = steps["docker/metadata-action"]["with"]
    assert "type=sha,prefix=,format=long" in meta["tags"]
    assert "type=raw,value=latest,enable={{is_default_branch}}" in meta["tags"]
    assert "type=semver,pattern={{version}}" in meta["tags"]
    build = steps["docker/build-push-action"]["with"]
    assert build["push"] is True
    assert build["build-args"] == "BLOGAPI_COMMIT=${{ github.sha }}"
    assert build["labels"] == "${{ steps.meta.outputs.labels }}"
    assert (
        build["cache-from"] == "type=gha" and build["cache-to"] == "type=gha,mode=max"
    )
    names = next(step["run"] for step in publish["steps"] if step.get("id") == "images")
    assert "ghcr.io/${GITHUB_REPOSITORY,,}" in names


@pytest.mark.parametrize(
    ("job", "secrets"),
    [
        ("deploy-heroku", {"HEROKU_API_KEY", "HEROKU_APP_NAME"}),
        (
            "deploy-ubuntu",
            {"DEPLOY_HOST", "DEPLOY_USER", "DEPLOY_SSH_KEY", "DEPLOY_KNOWN_HOSTS"},
        ),
    ],
)
def test_deploys_run_for_main_one_at_a_time_and_skip_without_their_secrets(
    job: str, secrets: set[str]
) -> None:
    deploy = workflow()["jobs"][job]
    assert deploy["needs"] == "publish"
    assert deploy["if"] == (
        "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    )
    assert deploy["environment"] == "production"
    assert deploy["concurrency"]["cancel-in-progress"] is False
    assert deploy["permissions"] == {"contents": "read"}
    assert {deploy["env"][name] for name in secrets} == {
        f"${{{{ secrets.{name} }}}}" for name in secrets
    }
    check, *rest = deploy["steps"]
    assert check["id"] == "secrets"
    assert "::notice" in check["run"]
    assert all(f'[ -n "${name}" ]' in check["run"] for name in secrets)
    assert all(step["if"] == "steps.secrets.outputs.set == 'true'" for step in rest)


def test_the_heroku_deploy_pushes_the_commit_and_waits_for_it() -> None:
    push, wait = [step["run"] for step in steps_of("deploy-heroku") if "run" in step][
        1:
    ]
    assert '"+$GITHUB_SHA:refs/heads/main"' in push
    assert '"\\"commit\\":\\"$GITHUB_SHA\\""' in wait
    assert "/health/ready" in wait and "exit 1" in wait


def test_the_ubuntu_deploy_pins_the_host_key_and_runs_this_commits_script() -> None:
    text = (ROOT / ".github/workflows/ci.yml").read_text()
    assert "StrictHostKeyChecking=no" not in text
    (ssh,) = [
        step["run"]
        for step in steps_of("deploy-ubuntu")
        if "ssh " in step.get("run", "")
    ]
    assert "-o StrictHostKeyChecking=yes" in ssh
    assert "UserKnownHostsFile=~/.ssh/known_hosts" in ssh
    assert 'bash -s -- "$GITHUB_SHA" < deploy/deploy.sh' in ssh


def test_the_lint_job_checks_the_workflows_as_ci_run_does_and_runs_actionlint() -> None:
    runs = [step.get("run", "") for step in steps_of("lint")]
    assert "pip install -r requirements-dev.txt\npip install --no-deps -e .\n" in runs
    assert not any("grep" in run for run in runs), "the requirements are lock files"
    for command in ("mypy", "ruff check .", "ruff format --check ."):
        assert command in runs
    schema_checks = [run for run in runs if run.startswith("check-jsonschema")]
    assert len(schema_checks) == 2
    for command in schema_checks:
        assert f".venv/bin/{command}" in CI_RUN
    assert re.search(r"go install github\.com/rhysd/actionlint/cmd/actionlint@v[\d.]+$",
                     "\n".join(runs), re.MULTILINE)  # fmt: skip


def test_the_workflow_and_dependabot_config_match_githubs_schemas() -> None:
    for schema, files in [
        ("vendor.github-workflows", sorted((ROOT / ".github/workflows").glob("*.yml"))),
        ("vendor.dependabot", [ROOT / ".github/dependabot.yml"]),
    ]:
        checked = subprocess.run(
            [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, *files],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_dependabot_keeps_the_action_pins_and_the_python_requirements_current() -> None:
    config = yaml.safe_load((ROOT / ".github/dependabot.yml").read_text())
    ecosystems = {update["package-ecosystem"]: update for update in config["updates"]}
    assert set(ecosystems) == {"github-actions", "pip"}
    assert all(update["directory"] == "/" for update in ecosystems.values())


def test_ci_run_never_installs_ubuntus_chromium_stub() -> None:
    """Ubuntu's `chromium` package is a stub for a snap (and its os-release says
    ID_LIKE=debian): .ci/run installs chromium on Debian itself only."""
    code = re.sub(r"#.*", "", CI_RUN)
    install = code.index("packages+=(chromium)")
    condition = code[code.rindex("if ", 0, install) : install]
    assert "grep -qx 'ID=debian' /etc/os-release" in condition
    assert code.count("chromium") == 2  # the test for a browser, and the install


def test_systemd_unit_restarts_on_failure_as_a_dedicated_user() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(ROOT / "deploy" / "blogapi.service")
    service = unit["Service"]
    assert service["Restart"] == "on-failure"
    assert service["EnvironmentFile"].startswith("/etc/")
    assert service["User"] not in {"root", ""}
    assert re.fullmatch(r"/\S+/\.venv/bin/python -m blogapi", service["ExecStart"])
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_nginx_proxies_to_the_app_with_forwarded_headers() -> None:
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    assert re.search(r"server 127\.0\.0\.1:8000;", conf)
    assert re.search(r"proxy_pass http://blogapi;", conf)
    for header in ("Host", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"):
        assert re.search(rf"proxy_set_header {header} \$\w+;", conf), header
    assert re.search(r"listen 80;", conf) and "server_name" in conf


def test_the_site_for_several_instances_retries_only_what_is_safe() -> None:
    """tests/test_balancer.py runs it with a real nginx (on the PostgreSQL run, with
    Redis); this checks the file wherever the suite runs."""
    from gunicorn.config import Config

    conf = re.sub(r"#.*", "", (ROOT / "deploy" / "nginx-upstreams.conf").read_text())
    servers = re.findall(
        r"^\s*server 127\.0\.0\.1:\d+ max_fails=\d+ fail_timeout=\d+s;$",
        conf,
        re.MULTILINE,
    )
    assert len(servers) == 3
    assert re.search(r"proxy_pass http://blogapi;", conf)
    assert re.search(
        r"proxy_next_upstream error timeout http_502 http_503 http_504;", conf
    )
    assert "non_idempotent" not in conf, (
        "a POST that reached an instance is never resent"
    )
    assert re.search(r"proxy_next_upstream_tries \d+;", conf)
    assert re.search(r"proxy_next_upstream_timeout \d+s;", conf)
    assert re.search(r"^\s*keepalive \d+;", conf, re.MULTILINE)
    assert re.search(r'proxy_set_header Connection "";', conf)
    # nginx lets an idle connection go before gunicorn does (its --keep-alive; the server
    # sets none), so nginx never sends a request on a connection the instance is closing.
    idle = re.search(r"keepalive_timeout (\d+)s;", conf)
    assert idle and int(idle.group(1)) < Config().keepalive
    assert "--keep-alive" not in (ROOT / "blogapi" / "server.py").read_text()
    assert re.search(r"proxy_set_header X-Forwarded-For \$remote_addr;", conf)
    assert re.search(r"proxy_set_header X-Forwarded-Proto \$scheme;", conf)
    assert re.search(r"^\s*listen 80;", conf, re.MULTILINE) and "server_name" in conf


def test_requirements_are_pinned_and_installed_here_at_those_versions() -> None:
    """The suite runs on the versions the image installs (a plain pin list, or a
    pip-compile lock file with hashes)."""
    from importlib.metadata import version

    lines = re.sub(r"\\\n", " ", (ROOT / "requirements.txt").read_text())
    requirements = [
        line.split("#")[0].split(";")[0].split() for line in lines.splitlines()
    ]
    pins = [words[0] for words in requirements if words and words[0][0] != "-"]
    for pin in pins:
        match = re.fullmatch(r"([A-Za-z0-9._-]+)(\[[\w,-]+\])?==(\S+)", pin)
        assert match, f"{pin!r} is not pinned with =="
        name, _, pinned = match.groups()
        assert version(name) == pinned, (
            f"{name} {version(name)} is installed, requirements.txt pins {pinned}: "
            "pip install -r requirements-dev.txt"
        )


def answers(url: str) -> bool:
    try:
        with urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def healthcheck_passes(env: dict[str, str]) -> bool:
    check = subprocess.run(
        ["sh", "-c", healthcheck_command()],
        check=False,
        env=env,
        capture_output=True,
        timeout=10,
    )
    return check.returncode == 0


def test_the_image_cmd_serves_and_passes_its_healthcheck(tmp_path: Path) -> None:
    """Stage what the Dockerfile copies into a stand-in WORKDIR and run its CMD there."""
    (workdir,) = instructions("WORKDIR")
    for source in copied_sources():
        copy = shutil.copytree if (ROOT / source).is_dir() else shutil.copy
        copy(ROOT / source, tmp_path / source)
    (tmp_path / "data").mkdir()
    port = str(free_port())
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "SECRET_KEY", "PYTHONPATH", "HOST"}
    }
    env |= {
        key: value.replace(workdir, str(tmp_path))
        for key, value in dockerfile_env().items()
    }
    env |= {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        "PORT": port,
        "HOST": "127.0.0.1",
        "WEB_CONCURRENCY": "1",
    }
    assert not healthcheck_passes(env)
    log = tmp_path / "server.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            json.loads(instructions("CMD")[0]),
            cwd=tmp_path,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not answers(f"http://127.0.0.1:{port}/health/ready"):
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert healthcheck_passes(env), log.read_text()
        assert (tmp_path / "data" / "blogapi.db").exists(), "migrations did not run"
    finally:
        server.terminate()
        server.wait(timeout=40)


@pytest.mark.skipif(
    os.environ.get("BLOGAPI_SLOW_TESTS") != "1",
    reason="installs requirements.txt into a fresh venv (30 s or more); "
    "set BLOGAPI_SLOW_TESTS=1 to run it",
)
def test_the_image_install_command_works_in_a_fresh_venv(tmp_path: Path) -> None:
    (install,) = [run for run in instructions("RUN") if "-r requirements.txt" in run]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["sh", "-c", install], cwd=ROOT, env=env, check=True)
    subprocess.run([venv / "bin" / "pip", "check"], env=env, check=True)
    subprocess.run(
        [venv / "bin" / "python", "-c", "import blogapi.main"],
        cwd=ROOT,
        env={**env, "SECRET_KEY": "x" * 40},
        check=True,
    )
