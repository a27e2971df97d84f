"""Failover cost: what ``TABLELOCK_REDIS_WAIT_REPLICAS=1`` costs on the P1 cycle (acquire + release of a payment lock).

    .venv/bin/python bench/failover_wait_cost.py                 # 3 rounds of 6 s windows, each setting
    .venv/bin/python bench/failover_wait_cost.py --rounds 5 --seconds 8

A primary with one replica and three sentinels on loopback (tests/support/sentinel.py), the
LockEngine in this process on the sentinel URL, 32 tasks each cycling over its own orders (every
acquire is granted). Rounds alternate WAIT off / WAIT 1 (timeout 100 ms) so machine noise hits both.
Prints cycles/s and p50/p99 per cycle for each, then the medians. The engine alone, without HTTP:
it isolates what WAIT adds (one round trip and the replica's acknowledgement).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from coordinator.core.models import OrderIn, StoreConfig  # noqa: E402
from coordinator.core.rules import Kind  # noqa: E402
from coordinator.store.engine import LockEngine  # noqa: E402
from coordinator.store.redis_conn import open_redis  # noqa: E402
from tests.support.app import order_body  # noqa: E402
from tests.support.sentinel import SentinelGroup  # noqa: E402

TASKS, ORDERS_PER_TASK = 32, 8
ACTOR = {"role": "erp", "terminal_id": "TP6", "name": "bench"}


async def window(engine: LockEngine, store: str, seconds: float) -> tuple[float, float, float]:
    """Run the cycle for ``seconds``; return (cycles/s, p50 ms, p99 ms)."""
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    async def worker(n: int) -> None:
        i = 0
        while time.monotonic() < stop:
            order = f"o{n}-{i % ORDERS_PER_TASK}"
            t0 = time.perf_counter()
            lock, _ = await engine.acquire(store, order, ACTOR, Kind.PAYMENT)
            await engine.release(store, order, Kind.PAYMENT, lock["token"], ACTOR)
            latencies.append(time.perf_counter() - t0)
            i += 1

    started = time.monotonic()
    await asyncio.gather(*(worker(n) for n in range(TASKS)))
    ran = time.monotonic() - started
    latencies.sort()
    return len(latencies) / ran, latencies[len(latencies) // 2] * 1000, latencies[int(len(latencies) * 0.99)] * 1000


async def main(args: argparse.Namespace) -> None:
    """Alternate WAIT off / on over the rounds and print the figures."""
    with tempfile.TemporaryDirectory(prefix="tablelock-p6-") as tmp, SentinelGroup(Path(tmp)) as group:
        redis = await open_redis(group.url)
        try:
            engines = {0: LockEngine(redis, defaults=StoreConfig()),
                       1: LockEngine(redis, defaults=StoreConfig(), wait_replicas=1, wait_timeout_ms=100)}
            store = "s-p6"
            for n in range(TASKS):
                for i in range(ORDERS_PER_TASK):
                    await engines[0].put_order(store, OrderIn.model_validate(order_body(f"o{n}-{i}")), ACTOR)
            results: dict[int, list[tuple[float, float, float]]] = {0: [], 1: []}
            for r in range(args.rounds):
                for replicas in (0, 1) if r % 2 == 0 else (1, 0):
                    figures = await window(engines[replicas], store, args.seconds)
                    results[replicas].append(figures)
                    print(f"round {r + 1} WAIT {replicas}: {figures[0]:7.0f} cycles/s  "
                          f"p50 {figures[1]:5.1f} ms  p99 {figures[2]:5.1f} ms", flush=True)
        finally:
            await redis.aclose()
    med = {k: [statistics.median(f[i] for f in v) for i in range(3)] for k, v in results.items()}
    print(f"median WAIT 0: {med[0][0]:.0f} cycles/s, p50 {med[0][1]:.1f} ms, p99 {med[0][2]:.1f} ms")
    print(f"median WAIT 1: {med[1][0]:.0f} cycles/s, p50 {med[1][1]:.1f} ms, p99 {med[1][2]:.1f} ms")
    print(f"WAIT 1 / WAIT 0 throughput: {med[1][0] / med[0][0]:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    asyncio.run(main(parser.parse_args()))
