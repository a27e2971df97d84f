"""``tablelock serve --workers N``: N coordinator processes on one port, sharing nothing but Redis.

Each worker is a whole coordinator (``cli.run_app``) in a fresh interpreter (``python -m
coordinator.workers``; nothing is inherited but the Settings, pickled over its stdin), bound to
the same address with ``SO_REUSEPORT`` so the kernel spreads new connections over them. A worker has everything a
separate ``tablelock serve`` has: its own process id for RPC routing and presence, its own
pub/sub connection, its own sweeper (exactly-once expiry is Redis's, not the process's).

The parent only supervises; it serves nothing:

* SIGTERM or SIGINT: every worker gets SIGTERM (aiohttp's graceful exit: sockets closed with
  1001, closing work settled), is waited for up to ``STOP_SECONDS``, then SIGKILLed. The parent
  returns once every worker is reaped, so nothing is left behind.
* A worker that dies is restarted, up to ``MAX_RESTARTS`` in ``RESTART_WINDOW`` seconds; past
  that (a worker that cannot start: port taken, Redis refuses) the parent stops the others and
  exits 1, so a service manager sees the failure instead of a restart loop.
* A worker whose parent disappears (SIGKILL) stops itself within a second (``_watch_parent``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections import deque

from coordinator.settings import Settings

log = logging.getLogger("tablelock.workers")

#: How long a worker has to exit after SIGTERM (aiohttp's shutdown_timeout is 10 s) before SIGKILL.
STOP_SECONDS = 15.0
#: Restart budget: more than this many worker deaths within the window ends the parent.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
#: How often the parent looks for dead workers.
POLL_SECONDS = 0.25


def run_workers(settings: Settings, count: int) -> int:
    """Run ``count`` workers on ``settings.host:port`` until SIGTERM/SIGINT; the parent's exit status."""
    uvloop = type(asyncio.get_event_loop_policy()).__module__.startswith("uvloop")
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    workers: list[subprocess.Popen[bytes] | None] = [None] * count
    deaths: deque[float] = deque()

    def start(index: int) -> None:
        workers[index] = _spawn(settings, index, uvloop)
        log.info("worker %d started (pid %s)", index, workers[index].pid)  # type: ignore[union-attr]

    try:
        for index in range(count):
            start(index)
        while not stopping.wait(POLL_SECONDS):
            for index, proc in enumerate(workers):
                if proc is None or proc.poll() is None or stopping.is_set():
                    continue
                log.warning("worker %d (pid %s) exited with %s", index, proc.pid, proc.returncode)
                now = time.monotonic()
                deaths.append(now)
                while deaths and now - deaths[0] > RESTART_WINDOW:
                    deaths.popleft()
                if len(deaths) > MAX_RESTARTS:
                    log.error("%d worker deaths in %g s: stopping", len(deaths), RESTART_WINDOW)
                    return 1
                start(index)
    finally:
        # A second signal must not interrupt the shutdown: the workers are being stopped anyway.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop_all([p for p in workers if p is not None])
    return 0


def _spawn(settings: Settings, index: int, uvloop: bool) -> subprocess.Popen[bytes]:
    """Start worker ``index``: a fresh interpreter reading its pickled Settings from stdin (never argv or env)."""
    loop = "uvloop" if uvloop else "asyncio"
    command = [sys.executable, "-m", "coordinator.workers", str(index), str(os.getpid()), loop]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(pickle.dumps(settings))
    proc.stdin.close()
    return proc


def _stop_all(workers: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every worker, wait (bounded), SIGKILL the rest, reap them all."""
    for proc in workers:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + STOP_SECONDS
    for proc in workers:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("worker pid %s did not stop in %g s: killed", proc.pid, STOP_SECONDS)
            proc.kill()
            proc.wait(5)


def worker_main(argv: list[str]) -> int:
    """Entry point of one worker process: serve with SO_REUSEPORT until SIGTERM; its exit status."""
    from coordinator.cli import run_app, setup_logging  # late: only a worker needs the whole app

    index, parent_pid, loop = int(argv[0]), int(argv[1]), argv[2]
    settings: Settings = pickle.loads(sys.stdin.buffer.read())
    if loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    setup_logging(settings, tag=f"w{index}")
    # Until aiohttp installs its own handlers, SIGTERM must still run `finally` blocks.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    _watch_parent(parent_pid)
    try:
        return run_app(settings, reuse_port=True, announce=index == 0)
    except KeyboardInterrupt:  # SIGTERM before the server was up
        return 0


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _watch_parent(parent_pid: int) -> None:
    """Stop this worker (SIGTERM to itself) once its parent is gone, e.g. after a SIGKILL."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="tablelock-parent-watch", daemon=True).start()


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
