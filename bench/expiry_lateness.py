"""How late do ``lock.expired`` events reach websocket clients? (SPEC §7: p99 <= 250 ms, exactly once.)

For 1 and then 2 coordinator processes (``tablelock serve`` subprocesses on one Redis), the bench
seeds three stores whose H5 payment locks last 1, 2 and 3 s, opens one ERP websocket per store on
every process, then takes ``--locks`` H5 payment locks at random moments over ``--spread`` seconds,
each on its own order, from its own engine (as another coordinator would). For every lock and
every socket it records when ``lock.expired`` arrived:

    lateness = receipt time (Redis clock) - expires_at (Redis clock)

and prints p50 / p95 / p99 / max, the duplicates (a second lock.expired for the same lock on the
same socket: must be 0) and the missing ones (must be 0).

    .venv/bin/python bench/expiry_lateness.py                 # embedded single redis-server
    .venv/bin/python bench/expiry_lateness.py --cluster       # embedded 3-master cluster
    .venv/bin/python bench/expiry_lateness.py --redis-url redis://127.0.0.1:6379
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import percentile, start_coordinator  # noqa: E402

from coordinator.core.models import OrderIn, StoreConfig, StoreConfigPatch  # noqa: E402
from coordinator.core.rules import Kind  # noqa: E402
from coordinator.realtime.sweeper import RedisClock  # noqa: E402
from coordinator.redis_embedded import EmbeddedCluster, EmbeddedRedis  # noqa: E402
from coordinator.settings import load_store_defaults  # noqa: E402
from coordinator.store.directory import Directory  # noqa: E402
from coordinator.store.engine import LockEngine  # noqa: E402
from coordinator.store.redis_conn import open_redis  # noqa: E402

ADMIN = {"role": "admin"}
DURATIONS = (1, 2, 3)  # h5_payment_lock_seconds of the three stores


async def run(redis_url: str, processes: int, locks: int, spread: float, work: Path) -> dict[str, Any]:
    """One measurement with ``processes`` coordinators; returns the figures."""
    redis = await open_redis(redis_url)
    engine = LockEngine(redis, defaults=StoreConfig.model_validate(load_store_defaults()))
    directory = Directory(engine, "http://bench")
    clock = RedisClock(redis)
    await clock.sync()
    tag = f"{int(time.time())}-{processes}"
    stores, tokens, per_store = [], {}, -(-locks // len(DURATIONS))
    for seconds in DURATIONS:
        store_id = f"bench-{tag}-{seconds}s"
        await directory.put_store(store_id, "bench", ADMIN)
        await directory.patch_config(store_id, StoreConfigPatch(h5_payment_lock_seconds=seconds), ADMIN)
        tokens[store_id] = (await directory.register_terminal(store_id, "cashier", True, ADMIN)).token
        for i in range(per_store):
            order = {"order_id": f"o{i}", "table_id": "T1", "version": 1, "status": "open", "items": [],
                     "total_cents": 0}
            await engine.put_order(store_id, OrderIn.model_validate(order), ADMIN)
        stores.append(store_id)

    procs = [start_coordinator(redis_url, work / f"{tag}-p{i}") for i in range(processes)]
    received: dict[tuple[int, str, str, int], list[float]] = defaultdict(list)
    swept: dict[tuple[str, str, int], int] = {}  # lock -> ts - expires_at: the sweeper's own lateness
    ready = asyncio.Event()
    sockets_open = 0
    session = aiohttp.ClientSession()

    async def listen(socket_id: int, port: int, store_id: str) -> None:
        nonlocal sockets_open
        async with session.ws_connect(f"ws://127.0.0.1:{port}/api/v1/ws?token={tokens[store_id]}") as ws:
            sockets_open += 1
            if sockets_open == processes * len(stores):
                ready.set()
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                at = clock.now()
                event = json.loads(msg.data)
                if event.get("type") == "event" and event["name"] == "lock.expired":
                    lock = event["data"]["lock"]
                    received[(socket_id, store_id, lock["order_id"], lock["fence"])].append(at - lock["expires_at"])
                    swept[(store_id, lock["order_id"], lock["fence"])] = event["ts"] - lock["expires_at"]

    listeners = [asyncio.create_task(listen(i * len(stores) + j, proc.port, store_id))
                 for i, proc in enumerate(procs) for j, store_id in enumerate(stores)]
    try:
        await asyncio.wait_for(ready.wait(), 10)
        plan = [(store_id, f"o{i}") for store_id in stores for i in range(per_store)][:locks]
        random.shuffle(plan)
        start = time.monotonic()
        taken: list[tuple[str, dict[str, Any]]] = []

        async def take(delay: float, store_id: str, order_id: str) -> None:
            await asyncio.sleep(delay)
            lock, _ = await engine.acquire(store_id, order_id, {"role": "h5", "session_id": f"d-{order_id}"},
                                           Kind.PAYMENT)
            taken.append((store_id, lock))

        await asyncio.gather(*(take(random.uniform(0, spread), s, o) for s, o in plan))
        expected = {(sid, s, l["order_id"], l["fence"]) for sid in range(processes * len(stores))
                    for s, l in taken if stores.index(s) == sid % len(stores)}
        deadline = start + spread + max(DURATIONS) + 5
        while not expected <= received.keys() and time.monotonic() < deadline:
            await clock.refresh()
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # room for duplicates to arrive
    finally:
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
        await session.close()
        for proc in procs:
            proc.stop()
        await redis.aclose()

    lateness = [times[0] for key, times in received.items() if key in expected]
    duplicates = sum(len(times) - 1 for times in received.values())
    stray = Counter(key for key in received if key not in expected)
    return {
        "processes": processes, "locks": len(taken), "receipts": len(lateness),
        "missing": len(expected - received.keys()), "duplicates": duplicates + sum(stray.values()),
        "p50": percentile(lateness, 50), "p95": percentile(lateness, 95), "p99": percentile(lateness, 99),
        "max": max(lateness), "min": min(lateness),
        "sweep_p50": percentile(list(swept.values()), 50), "sweep_p99": percentile(list(swept.values()), 99),
    }


async def main() -> int:
    """Run the bench for each process count and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--locks", type=int, default=240, help="locks per run (>= 200)")
    parser.add_argument("--spread", type=float, default=4.0, help="seconds over which locks are taken")
    parser.add_argument("--processes", default="1,2", help="coordinator process counts to measure")
    parser.add_argument("--redis-url", help="an existing Redis or Redis Cluster (default: embedded)")
    parser.add_argument("--cluster", action="store_true", help="embedded 3-master cluster instead of one node")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tablelock-bench-") as tmp:
        work = Path(tmp)
        server: EmbeddedRedis | EmbeddedCluster | None = None
        if args.redis_url:
            url = args.redis_url
        else:
            server = EmbeddedCluster(work / "redis", masters=3) if args.cluster else EmbeddedRedis(work / "redis", tcp=True)
            server.start()
            url = server.url
        try:
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            print(f"redis: {'cluster' if args.cluster else url}; {args.locks} H5 payment locks of 1-3 s "
                  f"taken over {args.spread:.0f} s; one ERP socket per store per process; "
                  f"{os.cpu_count()} CPUs, load average {load:.1f}")
            print("lateness at the client = receipt - expires_at; sweep = the event's ts - expires_at (Redis side)")
            print(f"{'procs':>5} {'locks':>5} {'receipts':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
                  f"{'max ms':>7} {'dups':>5} {'missing':>7} {'sweep p50':>9} {'sweep p99':>9}")
            failed = False
            for n in (int(x) for x in args.processes.split(",")):
                r = await run(url, n, args.locks, args.spread, work)
                print(f"{r['processes']:>5} {r['locks']:>5} {r['receipts']:>8} {r['p50']:>7.1f} {r['p95']:>7.1f} "
                      f"{r['p99']:>7.1f} {r['max']:>7.1f} {r['duplicates']:>5} {r['missing']:>7} "
                      f"{r['sweep_p50']:>9.1f} {r['sweep_p99']:>9.1f}")
                failed |= r["p99"] > 250 or r["duplicates"] > 0 or r["missing"] > 0
        finally:
            if server is not None:
                server.stop()
    print("FAIL: p99 > 250 ms, duplicates or missing events" if failed else "OK: p99 <= 250 ms, no duplicate, none missing")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
