"""gunicorn's server hooks for `python -m blogapi` with metrics on (`--config
python:blogapi.gunicorn_hooks`, added by blogapi.server). gunicorn reads the hooks from
this module's names: keep other names out of it."""

from typing import Any

from prometheus_client import multiprocess


def child_exit(_server: Any, worker: Any) -> None:
    """In the master, after a worker exited (or was killed): drop its `live*` gauges
    (requests in progress, pool connections), which would otherwise stay as it left
    them. Its counters stay: what it counted happened."""
    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
