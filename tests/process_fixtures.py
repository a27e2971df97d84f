"""Coordinator processes as real subprocesses (``tablelock serve``) for multi-process tests.

``coordinators(n)`` starts ``n`` processes on one Redis URL, waits for ``/readyz``, and stops
them after the test; ``kill()`` sends SIGKILL for crash tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

from coordinator.redis_embedded import free_port
from tests.app_fixtures import ADMIN_TOKEN

SECRET_KEY = "test-secret-key-0123456789"


@dataclass
class CoordinatorProcess:
    """One ``tablelock serve`` child process."""

    port: int
    proc: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        """Base HTTP URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """Websocket endpoint URL (without token)."""
        return f"ws://127.0.0.1:{self.port}/api/v1/ws"

    def kill(self) -> None:
        """SIGKILL the process (crash)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM and wait (bounded), then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def start_coordinator(redis_url: str, data_dir: Path, *, env: dict[str, str] | None = None,
                      timeout: float = 20.0) -> CoordinatorProcess:
    """Start ``tablelock serve`` on a free port against ``redis_url`` and wait until ready."""
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / f"coordinator-{port}.log"
    child_env = {
        **os.environ, "TABLELOCK_REDIS_URL": redis_url, "TABLELOCK_PORT": str(port),
        "TABLELOCK_HOST": "127.0.0.1", "TABLELOCK_DATA_DIR": str(data_dir),
        "TABLELOCK_ADMIN_TOKEN": ADMIN_TOKEN, "TABLELOCK_SECRET_KEY": SECRET_KEY,
        "TABLELOCK_PUBLIC_URL": f"http://127.0.0.1:{port}",
        # Rate limits out of the way (counted per address across tests); a test may set its own.
        "TABLELOCK_SESSION_RATE_PER_MINUTE": "1000000", "TABLELOCK_H5_RATE_PER_MINUTE": "1000000",
        **(env or {}),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "coordinator.cli", "serve"], env=child_env,
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )
    child = CoordinatorProcess(port, proc, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"coordinator exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{child.url}/readyz", timeout=1) as r:
                if r.status == 200:
                    return child
        except OSError:
            time.sleep(0.1)
    child.stop()
    raise RuntimeError(f"coordinator not ready in {timeout}s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def coordinators(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., list[CoordinatorProcess]]]:
    """Factory: ``coordinators(n, env=...)`` → n running processes on the test Redis."""
    started: list[CoordinatorProcess] = []

    def start(n: int = 1, env: dict[str, str] | None = None) -> list[CoordinatorProcess]:
        procs = [start_coordinator(redis_url, tmp_path / f"proc-{len(started) + i}", env=env) for i in range(n)]
        started.extend(procs)
        return procs

    yield start
    for child in started:
        child.stop()
