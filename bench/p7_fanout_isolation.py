"""P7 fan-out isolation: one coordinator process serving 100 stores while 10,000 other stores are busy.

    .venv/bin/python bench/p7_fanout_isolation.py                      # 100 served, 10,000 others
    .venv/bin/python bench/p7_fanout_isolation.py --others 20000 --other-rate 2000 --rounds 5
    .venv/bin/python bench/p7_fanout_isolation.py --source /path/to/older/checkout   # the same on older code

One ``tablelock serve`` process (P) on a private Redis. ``--served`` stores are seeded through
P's API, each with one ERP terminal whose websocket a subscriber child process holds on P.
``--others`` stores get an order straight into Redis. Two driver child processes run a
``LockEngine`` on the same Redis, as other coordinators would (never through P, so P's CPU is
its fan-out alone): one takes and releases a payment lock in the served stores (``--rate``
cycles/s, 2 events each), the other pushes new order versions in the other stores
(``--other-rate`` events/s). Windows alternate:

    quiet   only the served stores are busy
    busy    the same, and the other stores too

    CPU per delivered event = P's CPU seconds in the window / events its sockets received

Target: busy within 20 % of quiet (median of the per-round ratios). P's pub/sub message count
(``tablelock_pubsub_messages_total``) per window shows what reached it: with per-store channels
the other stores' events never do.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CpuWindow, fmt, machine_line, median, raise_nofile, start_coordinator, start_redis  # noqa: E402
from sockets import seed_stores, subscriber_main  # noqa: E402


async def pubsub_messages(base: str) -> float:
    """P's pub/sub messages so far, from its /metrics."""
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as r:
        text = await r.text()
    for line in text.splitlines():
        if line.startswith("tablelock_pubsub_messages_total "):
            return float(line.split()[1])
    return float("nan")


async def _drive(redis_url: str, stores: list[str], rate: float, kind: str, on: Any, stop: Any, report: Any,
                 source: str | None, counter: Any) -> None:
    if source is not None:
        # The drivers publish as the coordinator under test expects: its package, not this tree's
        # (which bench/common.py imported already).
        sys.path.insert(0, source)
        for name in [m for m in sys.modules if m == "coordinator" or m.startswith("coordinator.")]:
            del sys.modules[name]
    from coordinator.core.models import OrderIn, StoreConfig
    from coordinator.core.rules import Kind
    from coordinator.settings import load_store_defaults
    from coordinator.store import redis_conn
    from coordinator.store.engine import LockEngine

    redis = await redis_conn.open_redis(redis_url)
    engine = LockEngine(redis, defaults=StoreConfig.model_validate(load_store_defaults()))
    holder = {"role": "erp", "terminal_id": "bench-driver", "name": "driver"}
    versions = dict.fromkeys(stores, 1)

    def order(store_id: str) -> OrderIn:
        return OrderIn.model_validate({"order_id": "o1", "table_id": "T1", "version": versions[store_id],
                                       "status": "open", "items": [], "total_cents": 0})

    if kind == "others":  # their orders, once
        sem = asyncio.Semaphore(32)

        async def seed(store_id: str) -> None:
            async with sem:
                await engine.put_order(store_id, order(store_id), holder)
        await asyncio.gather(*(seed(s) for s in stores))
    report.put(("ready", kind))
    done, i, interval = 0, 0, 1 / rate
    next_at = time.monotonic()
    while not stop.is_set():
        if not on.is_set():
            await asyncio.sleep(0.05)
            next_at = time.monotonic()
            continue
        store_id = stores[i % len(stores)]
        i += 1
        if kind == "served":
            lock, _ = await engine.acquire(store_id, "o1", holder, Kind.PAYMENT)
            await engine.release(store_id, "o1", Kind.PAYMENT, lock["token"], holder)
        else:
            versions[store_id] += 1
            await engine.put_order(store_id, order(store_id), holder)
        done += 1
        counter.value = done
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -1:
            next_at = time.monotonic()  # cannot keep up: do not burst to catch up
    report.put(("done", kind, done))
    await redis.aclose()


def driver_main(redis_url: str, stores: list[str], rate: float, kind: str, on: Any, stop: Any, report: Any,
                source: str | None, counter: Any) -> None:
    """Child process entry: run ``kind`` operations at ``rate``/s on ``stores`` while ``on`` is set (``counter`` = done)."""
    asyncio.run(_drive(redis_url, stores, rate, kind, on, stop, report, source, counter))


def _wait_for(report: Any, tag: str, timeout: float = 600) -> tuple:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = report.get(timeout=max(0.1, deadline - time.monotonic()))
        if item[0] == tag:
            return item
    raise TimeoutError(tag)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--served", type=int, default=100, help="stores with a socket on the process")
    parser.add_argument("--others", type=int, default=10_000, help="busy stores with no socket on it")
    parser.add_argument("--rate", type=float, default=100, help="lock cycles/s over the served stores (2 events each)")
    parser.add_argument("--other-rate", type=float, default=1000, help="events/s over the other stores")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--source", type=Path, help="run the coordinator (and drivers) of another checkout")
    args = parser.parse_args()
    raise_nofile(4096)
    print(f"P7 fan-out isolation{' (' + str(args.source) + ')' if args.source else ''}: {args.served} served stores ({args.rate:g} lock cycles/s), "
          f"{args.others:,} other stores ({args.other_rate:g} events/s), {args.rounds} rounds of "
          f"quiet/busy windows of {args.window:g} s")
    print(machine_line())
    ctx = get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="p7-") as tmp:
        work = Path(tmp)
        redis = start_redis(work)
        coordinator = None
        children = []
        stop, served_on, others_on = ctx.Event(), ctx.Event(), ctx.Event()
        report = ctx.Queue()
        others_done = ctx.Value("q", 0, lock=False)  # the other stores' events so far (the driver's count)
        try:
            source = args.source.resolve() if args.source else None
            coordinator = start_coordinator(redis.url, work / "coord", source=source)
            base = coordinator.url
            seeds = asyncio.run(seed_stores(base, args.served, args.served, 1.0, "p7s-"))
            listeners = [(s.store_id, role, token) for s in seeds for role, token in s.listeners]
            sub = ctx.Process(target=subscriber_main, args=(base.replace("http", "ws") + "/api/v1/ws", listeners,
                                                            report, stop))
            sub.start()
            children.append(sub)
            _, connected, failed = _wait_for(report, "connected")
            print(f"{connected} sockets on the process ({failed} failed)")
            others = [f"p7o-{i}" for i in range(args.others)]
            for stores, rate, kind, on in ((seeds, args.rate, "served", served_on),
                                           (others, args.other_rate, "others", others_on)):
                ids = [s.store_id for s in stores] if kind == "served" else stores
                counter = others_done if kind == "others" else ctx.Value("q", 0, lock=False)
                child = ctx.Process(target=driver_main, args=(redis.url, ids, rate, kind, on, stop, report,
                                                              str(source) if source else None, counter))
                child.start()
                children.append(child)
            for _ in range(2):
                _wait_for(report, "ready")
            served_on.set()
            windows: list[tuple[str, float, float, float, float, float, float]] = []
            for _ in range(args.rounds):
                for phase in ("quiet", "busy"):
                    (others_on.set if phase == "busy" else others_on.clear)()
                    time.sleep(args.warmup)
                    cpu = CpuWindow({"P": coordinator.proc.pid, "redis": redis.pid})
                    messages = asyncio.run(pubsub_messages(base))
                    cpu.start()
                    t0, others0 = time.monotonic(), others_done.value
                    time.sleep(args.window)
                    t1, others1 = time.monotonic(), others_done.value
                    cpu.stop()
                    messages = asyncio.run(pubsub_messages(base)) - messages
                    windows.append((phase, t0, t1, cpu.used["P"] * (t1 - t0), messages, cpu.machine,
                                    (others1 - others0) / (t1 - t0)))
            others_on.clear()
            served_on.clear()
            stop.set()
            # The subscriber's ("done", receipts, pings) and each driver's ("done", kind, count).
            done_items = [_wait_for(report, "done") for _ in range(3)]
            receipts = next(item[1] for item in done_items if isinstance(item[1], list))
            print("operations: " + ", ".join(f"{item[1]} {item[2]}" for item in done_items
                                             if isinstance(item[1], str)))
        finally:
            stop.set()
            for child in children:
                child.join(timeout=30)
                if child.is_alive():
                    child.kill()
            if coordinator is not None:
                coordinator.stop()
            redis.stop()
    times = sorted(at for *_, at in receipts)
    print(f"\n{'window':<8} {'events':>8} {'P CPU s':>8} {'us/event':>9} {'pub/sub msgs':>13} "
          f"{'others ev/s':>12} {'machine':>8}")
    per: dict[str, list[float]] = {"quiet": [], "busy": []}
    for phase, t0, t1, cpu_s, messages, machine, others_rate in windows:
        delivered = sum(1 for at in times if t0 <= at < t1)
        us = cpu_s / max(1, delivered) * 1e6
        per[phase].append(us)
        print(f"{phase:<8} {delivered:>8} {cpu_s:>8.3f} {us:>9.1f} {messages:>13.0f} {others_rate:>12.0f} "
              f"{machine * 100:>7.0f}%")
    ratios = [b / q for q, b in zip(per["quiet"], per["busy"], strict=True)]
    print(f"\nCPU per delivered event: quiet {fmt(median(per['quiet']))} us, busy {fmt(median(per['busy']))} us; "
          f"busy/quiet per round {', '.join(f'{r:.2f}' for r in ratios)}, median **{median(ratios):.2f}x** "
          f"(target <= 1.20x: {'met' if median(ratios) <= 1.2 else 'not met'})")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
