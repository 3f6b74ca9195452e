"""A program the tests run in the background (nginx, PgBouncer), from a temporary folder
of its own that holds its configuration and logs: started in a process session of its
own, awaited until it listens on its loopback port, stopped with its own signal and killed
if it lingers. Every wait here is bounded."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import ClassVar

from tests.servers import free_port


class Daemon:
    name: ClassVar[str]
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    start_seconds: ClassVar[float] = 30
    stop_seconds: ClassVar[float] = 10

    def __init__(self) -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix=f"blogapi-{self.name}-"))
        self.process: subprocess.Popen[bytes] | None = None

    def log_text(self) -> str:
        """What the program logged, for the failure messages."""
        raise NotImplementedError

    def launch(self, command: list[str]) -> None:
        """Run `command` and return once it listens on `self.port`. Its own log file
        takes what it says; its stdout and stderr are dropped."""
        self.process = subprocess.Popen(
            command,
            cwd=self.folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.start_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited:\n{self.log_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError(
            f"{self.name} not listening in {self.start_seconds} s:\n{self.log_text()}"
        )

    def stop(self) -> None:
        """`stop_signal`, then SIGKILL to its whole session if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, self.stop_signal)
        try:
            self.process.wait(timeout=self.stop_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=self.stop_seconds)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
