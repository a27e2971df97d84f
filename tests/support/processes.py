"""pytest plugin: coordinator processes as real subprocesses (``tablelock serve``) for multi-process tests.

``coordinators(n)`` starts ``n`` processes on the test's Redis URL through the product's launcher
(``coordinator.launcher``), waits for ``/readyz``, and stops them after the test; ``kill()`` on
one sends SIGKILL for crash tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from coordinator.launcher import ServeProcess, start_serve
from tests.support.app import ADMIN_TOKEN

SECRET_KEY = "test-secret-key-0123456789"


def start_coordinator(redis_url: str, data_dir: Path, *, env: dict[str, str] | None = None,
                      timeout: float = 20.0) -> ServeProcess:
    """Start ``tablelock serve`` on a free port against ``redis_url`` with the tests' secrets; wait until ready."""
    return start_serve(redis_url, data_dir, admin_token=ADMIN_TOKEN, secret_key=SECRET_KEY, timeout=timeout, env={
        # Rate limits out of the way (counted per address across tests); a test may set its own.
        "TABLELOCK_SESSION_RATE_PER_MINUTE": "1000000", "TABLELOCK_H5_RATE_PER_MINUTE": "1000000",
        "TABLELOCK_WS_CONNECT_RATE_PER_MINUTE": "1000000", "TABLELOCK_WS_PER_ADDRESS": "1000000",
        **(env or {}),
    })


@pytest.fixture
def coordinators(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., list[ServeProcess]]]:
    """Factory: ``coordinators(n, env=...)`` → n running processes on the test Redis."""
    started: list[ServeProcess] = []

    def start(n: int = 1, env: dict[str, str] | None = None) -> list[ServeProcess]:
        procs = [start_coordinator(redis_url, tmp_path / f"proc-{len(started) + i}", env=env) for i in range(n)]
        started.extend(procs)
        return procs

    yield start
    for child in started:
        child.stop()
