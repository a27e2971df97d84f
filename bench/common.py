"""What every bench shares: coordinator and etcd child processes, /proc readings, seeding, statistics.

Coordinators start through the product's launcher (``coordinator/launcher.py``), as in the tests.

The benches start their own servers on 127.0.0.1 under a temp dir and stop them on exit; nothing
here sends traffic anywhere else. CPU and memory are read from ``/proc`` (Linux), so the benches
need no extra package.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import aiohttp

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from coordinator.launcher import ServeProcess, start_serve, wait_ready  # noqa: E402
from coordinator.redis_embedded import EmbeddedRedis, free_port  # noqa: E402

ADMIN_TOKEN = "bench-admin-token-0123456789"
SECRET_KEY = "bench-secret-key-0123456789"
_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


# --- statistics -----------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered) + 0.5)) - 1))]


def median(values: Iterable[float]) -> float:
    """The median, ignoring NaN; NaN when nothing is left."""
    kept = [v for v in values if v == v]
    return statistics.median(kept) if kept else float("nan")


def fmt(value: float, spec: str = ".1f") -> str:
    """A number for a table cell; '-' for NaN."""
    return "-" if value != value else format(value, spec)


# --- the machine ----------------------------------------------------------------------------


def machine_line() -> str:
    """Cores and load average, printed at the top of every bench."""
    one, five, _ = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {one:.2f} (1 min) {five:.2f} (5 min), Python {sys.version.split()[0]}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far (its threads included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15 of stat)


def rss_bytes(pid: int) -> int:
    """Resident set size of the process."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs, for the machine's load over a window."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


class CpuWindow:
    """CPU used by some processes (and the whole machine) between ``start()`` and ``stop()``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._before: dict[str, float] = {}
        self._machine = (0, 0)
        self._t0 = 0.0
        self.used: dict[str, float] = {}  # name -> cores (CPU seconds / wall seconds)
        self.machine = float("nan")       # busy fraction of all cores, every process on the machine

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._machine = machine_busy()

    def stop(self) -> None:
        wall = time.monotonic() - self._t0
        self.used = {name: (cpu_seconds(pid) - self._before[name]) / wall for name, pid in self.pids.items()}
        busy, total = machine_busy()
        self.machine = (busy - self._machine[0]) / max(1, total - self._machine[1])


def raise_nofile(wanted: int) -> int:
    """Raise this process's open-file limit towards ``wanted`` (children inherit it); returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- child processes ------------------------------------------------------------------------


#: One ``tablelock serve`` child process (or the bare server): the product launcher's type.
Coordinator = ServeProcess


def start_coordinator(redis_url: str, data_dir: Path, *, env: dict[str, str] | None = None,
                      timeout: float = 30.0, loop: str = "asyncio", source: Path | None = None,
                      workers: int = 1) -> Coordinator:
    """Start ``tablelock serve`` on a free loopback port against ``redis_url``; wait for /readyz.

    ``loop="uvloop"`` runs the same command under uvloop; ``source`` runs the ``coordinator``
    package found in that directory instead of this repository's (both for bench/ab.py);
    ``workers`` > 1 runs ``serve --workers`` (P5).
    """
    return start_serve(redis_url, data_dir, admin_token=ADMIN_TOKEN, secret_key=SECRET_KEY, log_level="WARNING",
                       loop=loop, source=source, cwd=REPO, timeout=timeout, workers=workers, env={
                           # The benches create thousands of H5 sessions from one address: rate limits out of the way.
                           "TABLELOCK_SESSION_RATE_PER_MINUTE": "100000000",
                           "TABLELOCK_H5_RATE_PER_MINUTE": "100000000",
                           # ... and thousands of websockets from one address (P2, P4).
                           "TABLELOCK_WS_PER_ADDRESS": "100000000",
                           "TABLELOCK_WS_CONNECT_RATE_PER_MINUTE": "100000000",  # P1 reconnects its sockets each window
                           **(env or {}),
                       })


def start_bare_server(redis_url: str, work: Path, timeout: float = 30.0) -> Coordinator:
    """Start bench/bare_server.py (the HTTP floor) on a free loopback port; wait until it answers."""
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    log = work / f"bare-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, str(REPO / "bench" / "bare_server.py"), str(port), redis_url],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO,
                                start_new_session=True)
    child = Coordinator(port, proc, work, log)
    try:
        wait_ready(proc, child.url, timeout=timeout, what="bare server", log=log)
    except BaseException:
        child.stop()
        raise
    return child


def start_redis(work: Path, *, tcp: bool = False) -> EmbeddedRedis:
    """A private redis-server configured as the coordinator's embedded one: AOF on, on a unix socket
    (the embedded default) or, with ``tcp``, on loopback TCP (as a Redis on another host would be)."""
    return EmbeddedRedis(work / "redis", tcp=tcp).start()


@dataclass
class Etcd:
    """One etcd server child process on loopback with a temp data dir."""

    port: int
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def etcd_binary() -> tuple[str | None, str]:
    """The etcd binary (installing Debian's etcd-server when root and missing), or None and why not."""
    found = shutil.which("etcd")
    if found:
        return found, ""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "etcd not found and not root: install it with `apt-get install etcd-server`"
    print("etcd not found: apt-get install -y etcd-server ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "install", "-y", "etcd-server"],
                ["sh", "-c", "apt-get update -qq && apt-get install -y etcd-server"]):
        try:
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
        except (OSError, subprocess.TimeoutExpired):
            pass
        found = shutil.which("etcd")
        if found:
            return found, ""
    return None, "apt-get install etcd-server failed"


def start_etcd(work: Path, timeout: float = 30.0) -> Etcd:
    """Start etcd (single member, default durability: fsync per write) and wait for /health."""
    binary, why = etcd_binary()
    if binary is None:
        raise RuntimeError(why)
    port, peer = free_port(), free_port()
    data = work / "etcd"
    data.mkdir(parents=True, exist_ok=True)
    log = (work / "etcd.log").open("wb")
    proc = subprocess.Popen([
        binary, "--name", "bench", "--data-dir", str(data),
        "--listen-client-urls", f"http://127.0.0.1:{port}", "--advertise-client-urls", f"http://127.0.0.1:{port}",
        "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-cluster", f"bench=http://127.0.0.1:{peer}", "--log-level", "error",
    ], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    etcd = Etcd(port, proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"etcd exited early: see {work / 'etcd.log'}")
        try:
            with urllib.request.urlopen(f"{etcd.url}/health", timeout=1) as r:
                if json.loads(r.read()).get("health") in ("true", True):
                    return etcd
        except (OSError, ValueError):
            time.sleep(0.1)
    etcd.stop()
    raise RuntimeError("etcd not healthy in 30 s")


# --- seeding through the admin and ERP API --------------------------------------------------


@dataclass
class Api:
    """A small client of the coordinator's admin and ERP API, for seeding."""

    base: str
    session: aiohttp.ClientSession
    calls: int = field(default=0)

    async def call(self, method: str, path: str, token: str = ADMIN_TOKEN, body: Any = None,
                   expect: tuple[int, ...] = (200, 201, 204)) -> Any:
        self.calls += 1
        async with self.session.request(method, f"{self.base}/api/v1{path}", json=body,
                                        headers={"Authorization": f"Bearer {token}"},
                                        timeout=aiohttp.ClientTimeout(total=30)) as r:
            text = await r.text()
            if r.status not in expect:
                raise RuntimeError(f"{method} {path} -> {r.status}: {text[:300]}")
            return json.loads(text) if text else None

    async def store(self, store_id: str, config: dict[str, Any] | None = None) -> None:
        await self.call("PUT", f"/admin/stores/{store_id}", body={"name": store_id})
        if config:
            await self.call("PATCH", f"/admin/stores/{store_id}/config", body=config)

    async def terminal(self, store_id: str, name: str, master: bool = False) -> str:
        reply = await self.call("POST", f"/admin/stores/{store_id}/terminals", body={"name": name, "master": master})
        return reply["token"]

    async def table(self, store_id: str, table_id: str) -> str:
        """Create the table; returns its QR token."""
        reply = await self.call("PUT", f"/admin/stores/{store_id}/tables/{table_id}", body={"name": table_id})
        return reply["qr_url"].split("qr=", 1)[1]

    async def order(self, store_id: str, order_id: str, token: str, table_id: str = "T1") -> None:
        body = {"order_id": order_id, "table_id": table_id, "version": 1, "status": "open",
                "items": [{"line_id": "l1", "sku": "tea", "name": "茶", "qty": 2, "unit_price_cents": 900,
                           "source": "erp"}], "total_cents": 1800}
        await self.call("PUT", f"/stores/{store_id}/orders/{order_id}", token, body)

    async def h5_session(self, qr_token: str) -> str:
        reply = await self.call("POST", "/h5/sessions", token="", body={"qr_token": qr_token})
        return reply["session_token"]


async def bounded_gather(coros: Iterable[Any], limit: int) -> list[Any]:
    """Await the coroutines with at most ``limit`` running at once."""
    gate = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with gate:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))
