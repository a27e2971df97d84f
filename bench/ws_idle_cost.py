"""Where the memory of an idle websocket goes (the breakdown behind P4), measured in one process.

    .venv/bin/python bench/ws_idle_cost.py            # 600 sockets
    .venv/bin/python bench/ws_idle_cost.py --clients 1000 --top 30

Runs the coordinator app in this process (aiohttp AppRunner on a private Redis) under
tracemalloc, opens ``--clients`` idle sockets from a subscriber process (bench/sockets.py, the
P4 mix: 40 % ERP terminals, 60 % H5 sessions), and prints the Python allocations that grew, per
socket, by allocating line, and the objects that grew, per socket, by type. Python heap only:
RSS (P4) adds allocator slack and the kernel's socket buffers are in neither.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import tracemalloc
from collections import Counter
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ADMIN_TOKEN, SECRET_KEY, raise_nofile, start_redis  # noqa: E402
from sockets import seed_stores, subscriber_main  # noqa: E402

from coordinator.redis_embedded import free_port  # noqa: E402


def drop_parser_after_upgrade() -> None:
    """Free the request parser aiohttp keeps on an upgraded connection (what it would save; not in the product)."""
    from aiohttp import web

    prepare = web.WebSocketResponse.prepare

    async def prepare_and_drop(self, request):  # type: ignore[no-untyped-def]
        writer = await prepare(self, request)
        request.protocol._parser = None  # unused once upgraded; aiohttp 3.14 checks for None
        return writer

    web.WebSocketResponse.prepare = prepare_and_drop  # type: ignore[method-assign]


def type_counts() -> Counter[str]:
    """Live gc-tracked objects by type name."""
    return Counter(type(o).__name__ for o in gc.get_objects())


async def measure(args: argparse.Namespace, redis_url: str) -> None:
    from aiohttp import web

    from coordinator.app import build_app
    from coordinator.settings import Settings

    settings = Settings(redis_url=redis_url, admin_token=ADMIN_TOKEN, secret_key=SECRET_KEY, log_level="WARNING",
                        session_rate_per_minute=10**8, h5_rate_per_minute=10**8, ws_per_address=10**8,
                        ws_connect_rate_per_minute=10**8)
    runner = web.AppRunner(build_app(settings), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    seeds = await seed_stores(base, max(1, args.clients // 5), args.clients + args.warmup, 0.4, "diag")
    listeners = [(s.store_id, role, token) for s in seeds for role, token in s.listeners]
    ctx = get_context("spawn")
    stop, report = ctx.Event(), ctx.Queue()
    loop = asyncio.get_running_loop()
    ws_url = f"ws://127.0.0.1:{port}/api/v1/ws"
    children = []

    async def hold(chunk: list) -> int:
        child = ctx.Process(target=subscriber_main, args=(ws_url, chunk, report, stop))
        child.start()
        children.append(child)
        _, ok, failed = await loop.run_in_executor(None, report.get, True, 600)
        if failed:
            print(f"{failed} sockets failed to open")
        await asyncio.sleep(2)  # let closing/settling work of the handshakes finish
        return ok

    try:
        await hold(listeners[:args.warmup])
        gc.collect()
        types_before = type_counts()
        before = tracemalloc.take_snapshot()
        n = await hold(listeners[args.warmup:])
        gc.collect()
        after = tracemalloc.take_snapshot()
        types_after = type_counts()
        stats = after.compare_to(before, "lineno")
        total = sum(s.size_diff for s in stats)
        print(f"{n} idle sockets: Python heap +{total / n:.0f} bytes per socket (tracemalloc)")
        print(f"\n{'bytes/socket':>12} {'blocks/socket':>13}  allocated at")
        for s in sorted(stats, key=lambda s: -s.size_diff)[:args.top]:
            frame = s.traceback[0]
            print(f"{s.size_diff / n:>12.0f} {s.count_diff / n:>13.2f}  {frame.filename.split('site-packages/')[-1]}:"
                  f"{frame.lineno}")
        print(f"\n{'objects/socket':>14}  type")
        grown = Counter({t: types_after[t] - types_before.get(t, 0) for t in types_after})
        for name, count in grown.most_common(args.top):
            print(f"{count / n:>14.2f}  {name}")
    finally:
        stop.set()
        for child in children:
            try:
                while child.is_alive():
                    report.get(timeout=1)
            except Exception:
                pass
            child.join(timeout=30)
        await runner.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=600)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--drop-parser", action="store_true",
                        help="experiment: free aiohttp's HTTP parser after each upgrade (a private attribute)")
    args = parser.parse_args()
    if args.drop_parser:
        drop_parser_after_upgrade()
    raise_nofile(args.clients + args.warmup + 4096)
    tracemalloc.start(1)
    with tempfile.TemporaryDirectory(prefix="tablelock-diag-") as tmp:
        redis = start_redis(Path(tmp))
        try:
            asyncio.run(measure(args, redis.url))
        finally:
            redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
