"""Importing blogapi does nothing but define things: no file written, no connection opened,
no password hashed. Scripts, the migrations and the tests pay only for what they use."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

IMPORT_EVERYTHING = textwrap.dedent(
    """
    import importlib, pkgutil, socket
    import blogapi

    def refuse(*args, **kwargs):
        raise AssertionError(f"a connection was opened at import: {args}")

    socket.socket.connect = refuse
    socket.create_connection = refuse
    names = [module.name for module in pkgutil.walk_packages(blogapi.__path__, "blogapi.")]
    for name in names:
        if name != "blogapi.__main__":
            importlib.import_module(name)
    from blogapi.security import dummy_hash
    assert dummy_hash.cache_info().currsize == 0, "a password was hashed at import"
    print(len(names))
    """
)


@pytest.mark.parametrize(
    "database_url",
    ["sqlite:///./app.db", "postgresql://blogapi@127.0.0.1:9/blogapi"],
)
def test_importing_every_module_has_no_side_effects(
    tmp_path: Path, database_url: str
) -> None:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("SECRET_KEY", "MIGRATE_ON_START")
    }
    environment.update(DATABASE_URL=database_url, PYTHONPATH=str(ROOT))

    imported = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING],
        check=False,
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert imported.returncode == 0, imported.stderr
    assert int(imported.stdout) > 10
    assert list(tmp_path.iterdir()) == []


SERVE_AND_LIST_TELEMETRY = textwrap.dedent(
    """
    import json, sys, threading
    from fastapi.testclient import TestClient
    from blogapi.main import app

    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/nowhere?q=1").status_code == 404
        threads = [t.name for t in threading.enumerate() if t.name.startswith("Otel")]
    modules = [name for name in sys.argv[1:] if name in sys.modules]
    print(json.dumps({"modules": modules, "threads": threads}))
    """
)
TRACING_MODULES = [
    "blogapi.tracing",
    "google.protobuf",
    "opentelemetry.exporter",
    "opentelemetry.proto",
    "opentelemetry.sdk.trace",
]
"""The SDK's tracing, the exporter and protobuf. Not `opentelemetry` itself: FastAPI
imports OpenTelemetry's API for telemetry of its own (which blogapi turns off), and
redis-py its SDK's metrics module whenever the SDK is installed."""
ERROR_REPORT_MODULES = ["blogapi.error_reports", "sentry_sdk"]
BATCH_THREAD = "OtelBatchSpanRecordProcessor"


@pytest.mark.parametrize(
    ("environment", "modules", "threads"),
    [
        ({}, [], []),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
                "OTEL_TRACES_SAMPLER": "always_off",
            },
            TRACING_MODULES,
            [BATCH_THREAD],
        ),
        ({"SENTRY_DSN": "http://public@127.0.0.1:9/1"}, ERROR_REPORT_MODULES, []),
    ],
    ids=["unset", "traces", "error-reports"],
)
def test_telemetry_is_loaded_only_when_configured(
    tmp_path: Path, environment: dict[str, str], modules: list[str], threads: list[str]
) -> None:
    """Serving requests loads neither OpenTelemetry's tracing nor sentry_sdk, nor starts
    a thread of theirs, unless their variables are set."""
    environment = {
        **{
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("OTEL_", "SENTRY_"))
        },
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "PYTHONPATH": str(ROOT),
        **environment,
    }

    served = subprocess.run(
        [sys.executable, "-c", SERVE_AND_LIST_TELEMETRY]
        + TRACING_MODULES
        + ERROR_REPORT_MODULES,
        check=False,
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert served.returncode == 0, served.stderr
    assert json.loads(served.stdout) == {"modules": modules, "threads": threads}
