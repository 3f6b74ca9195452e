"""Importing blogapi does nothing but define things: no file written, no connection opened,
no password hashed. Scripts, the migrations and the tests pay only for what they use."""

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
