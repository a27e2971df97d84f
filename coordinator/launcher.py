"""Start ``tablelock serve`` as a child process, wait until ``/readyz`` answers, stop it with no orphans.

The test fixtures (``tests/support/processes.py``) and the benchmarks (``bench/common.py``) start
coordinators through this one launcher. The child runs in its own process group, so stopping it
also ends anything it started (an embedded redis-server) even when it does not exit cleanly.
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
from typing import IO

from coordinator.redis_embedded import free_port

#: ``tablelock serve`` under uvloop without touching the product: the policy is set before the
#: CLI creates its loop.
_UVLOOP_SERVE = ("import asyncio, sys, uvloop; asyncio.set_event_loop_policy(uvloop.EventLoopPolicy()); "
                 "from coordinator.cli import main; sys.exit(main(['serve']))")


@dataclass
class ServeProcess:
    """One running ``tablelock serve`` child process on a loopback port."""

    port: int
    proc: subprocess.Popen[bytes]
    data_dir: Path
    log: Path

    @property
    def url(self) -> str:
        """Base HTTP URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """Websocket endpoint URL (without token)."""
        return f"ws://127.0.0.1:{self.port}/api/v1/ws"

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the child's output (for error messages)."""
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the child and its process group (a crash), and reap it."""
        _signal_group(self.proc, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM and wait (bounded); then SIGKILL; finally end whatever its group left behind."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        # A clean serve has stopped its own children; a crashed one may have left some.
        _signal_group(self.proc, signal.SIGKILL)

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    """Send ``signum`` to the child's process group (its own: it was started in a new session)."""
    try:
        os.killpg(proc.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already


def wait_ready(proc: subprocess.Popen[bytes], url: str, *, timeout: float, what: str = "coordinator",
               log: Path | None = None) -> None:
    """Return once ``url``/readyz answers 200; raise RuntimeError if the child dies or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early with {proc.returncode}{_tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} not ready in {timeout:g} s{_tail(log)}")


def _tail(log: Path | None) -> str:
    if log is None:
        return ""
    try:
        return f" ({log}):\n{log.read_text(errors='replace')[-3000:]}"
    except OSError:
        return f" ({log})"


def start_serve(redis_url: str, data_dir: Path, *, admin_token: str, secret_key: str,
                env: dict[str, str] | None = None, log_level: str | None = None, loop: str = "asyncio",
                source: Path | None = None, cwd: Path | None = None, timeout: float = 30.0,
                workers: int = 1) -> ServeProcess:
    """Start ``tablelock serve`` on a free loopback port against ``redis_url`` and wait until it is ready.

    ``env`` adds or overrides ``TABLELOCK_*`` settings; ``log_level`` sets TABLELOCK_LOG_LEVEL;
    ``loop="uvloop"`` runs the same command under uvloop; ``source`` runs the ``coordinator``
    package found in that directory instead of the importable one; ``cwd`` is the child's working
    directory (default: ours); ``workers`` > 1 runs ``--workers`` (``pid`` is then the supervising
    parent's; the workers are in its process group). Output goes to ``data_dir/coordinator-<port>.log``. On failure the child is stopped before the error is raised.
    """
    if loop not in ("asyncio", "uvloop"):
        raise ValueError(f"loop must be asyncio or uvloop, not {loop!r}")
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / f"coordinator-{port}.log"
    child_env = {
        **os.environ, "TABLELOCK_REDIS_URL": redis_url, "TABLELOCK_PORT": str(port),
        "TABLELOCK_HOST": "127.0.0.1", "TABLELOCK_DATA_DIR": str(data_dir),
        "TABLELOCK_ADMIN_TOKEN": admin_token, "TABLELOCK_SECRET_KEY": secret_key,
        "TABLELOCK_PUBLIC_URL": f"http://127.0.0.1:{port}",
        **({"TABLELOCK_LOG_LEVEL": log_level} if log_level else {}),
        **({"TABLELOCK_WORKERS": str(workers)} if workers != 1 else {}),
        **(env or {}),
    }
    if source is not None:
        child_env["PYTHONPATH"] = str(source)
    command = ["-c", _UVLOOP_SERVE] if loop == "uvloop" else ["-m", "coordinator.cli", "serve"]
    out: IO[bytes]
    with log.open("wb") as out:
        # The child keeps its own copy of the descriptor; a new session gives it its own group.
        proc = subprocess.Popen([sys.executable, *command], env=child_env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=source or cwd, start_new_session=True)
    child = ServeProcess(port, proc, data_dir, log)
    try:
        wait_ready(proc, child.url, timeout=timeout, log=log)
    except BaseException:
        child.stop()
        raise
    return child
