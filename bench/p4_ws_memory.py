"""P4 memory per idle websocket: the coordinator's RSS growth per open, idle socket.

    .venv/bin/python bench/p4_ws_memory.py                  # 2,000 sockets, 3 runs
    .venv/bin/python bench/p4_ws_memory.py --clients 4000 --stages 8

Each run starts a fresh ``tablelock serve`` on a private Redis, seeds ``clients / 5`` stores
(one order on T1; 40 % ERP terminals, 60 % H5 sessions, as in P2), opens ``--warmup`` sockets
first (first-use allocations: imports, caches, pymalloc arenas), then the rest in ``--stages``
equal steps, each held by its own subscriber process (bench/sockets.py). After each step,
when every socket has its hello and snapshot and the process has settled, it reads the
coordinator's RSS. The figure is the least-squares slope of RSS over sockets (KB per socket;
1 KB = 1,024 bytes), median over runs. Target (issue 18): <= 16 KB. Kernel socket buffers are not in RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine_line, median, raise_nofile, rss_bytes, start_coordinator, start_redis  # noqa: E402
from sockets import seed_stores, subscriber_main  # noqa: E402


def slope(points: list[tuple[int, int]]) -> float:
    """Least-squares slope of y over x."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


def settle(pid: int, seconds: float = 2.0, limit: float = 15.0) -> int:
    """RSS once it stops moving (two readings ``seconds`` apart within 64 KB), bounded by ``limit``."""
    deadline = time.monotonic() + limit
    last = rss_bytes(pid)
    while time.monotonic() < deadline:
        time.sleep(seconds)
        now = rss_bytes(pid)
        if abs(now - last) < 65536:
            return now
        last = now
    return last


def run(args: argparse.Namespace, n: int) -> dict[str, Any]:
    """One fresh coordinator: RSS at each step of open sockets."""
    ctx = get_context("spawn")
    total = args.warmup + args.clients
    with tempfile.TemporaryDirectory(prefix="tablelock-p4-") as tmp:
        work = Path(tmp)
        redis = start_redis(work)
        coordinator = None
        children: list[Any] = []
        stop = ctx.Event()
        report = ctx.Queue()
        try:
            coordinator = start_coordinator(redis.url, work / "coordinator")
            seeds = asyncio.run(seed_stores(coordinator.url, max(1, total // 5), total, 0.4, f"r{n}s"))
            listeners = [(s.store_id, role, token) for s in seeds for role, token in s.listeners]
            ws_url = f"ws://127.0.0.1:{coordinator.port}/api/v1/ws"
            chunks = [listeners[:args.warmup]]
            rest = listeners[args.warmup:]
            step = -(-len(rest) // args.stages)
            chunks += [rest[i:i + step] for i in range(0, len(rest), step)]
            before = settle(coordinator.pid)
            points: list[tuple[int, int]] = []
            held = 0
            for i, chunk in enumerate(chunks):
                child = ctx.Process(target=subscriber_main, args=(ws_url, chunk, report, stop))
                child.start()
                children.append(child)
                _, ok, failed = report.get(timeout=600)
                held += ok
                if failed:
                    print(f"  {failed} sockets failed to open")
                rss = settle(coordinator.pid)
                if i > 0 or args.warmup == 0:
                    points.append((held, rss))
                print(f"  run {n + 1}: {held:>5} sockets  RSS {rss / 2**20:7.1f} MiB")
            per_socket = slope(points)
        finally:
            stop.set()
            for child in children:
                try:
                    while child.is_alive():
                        report.get(timeout=1)  # drain "done" messages so the child can exit
                except Exception:
                    pass
                child.join(timeout=30)
                if child.is_alive():
                    child.kill()
            if coordinator is not None:
                coordinator.stop()
            redis.stop()
    return {"before": before, "points": points, "per_socket": per_socket,
            "overall": (points[-1][1] - before) / points[-1][0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=2000, help="sockets measured (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=100, help="sockets opened before the first reading")
    parser.add_argument("--stages", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    limit = raise_nofile(args.clients + args.warmup + 4096)
    print(f"P4 memory per idle websocket: {args.warmup} warm-up + {args.clients} sockets in {args.stages} steps, "
          f"{args.runs} runs (fresh coordinator each)")
    print(f"machine: {machine_line()}; open-file limit {limit}")
    results = [run(args, n) for n in range(args.runs)]
    print(f"\n{'run':<4} {'RSS idle MiB':>12} {'RSS full MiB':>12} {'slope KB/socket':>16} {'incl. warm-up KB':>17}")
    for n, r in enumerate(results):
        print(f"{n + 1:<4} {r['before'] / 2**20:>12.1f} {r['points'][-1][1] / 2**20:>12.1f} "
              f"{r['per_socket'] / 1024:>16.1f} {r['overall'] / 1024:>17.1f}")
    per = median(r["per_socket"] for r in results) / 1024
    print(f"median: {per:.1f} KB per idle websocket (target <= 16 KB) {'met' if per <= 16 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
