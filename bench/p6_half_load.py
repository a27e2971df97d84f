"""P6 half load: request latency when the coordinator is loaded at half of its own capacity.

    .venv/bin/python bench/p6_half_load.py                  # 3 rounds: capacity window, then half load
    .venv/bin/python bench/p6_half_load.py --rounds 5 --load 0.5 --duration 10

A private redis-server (AOF on, unix socket) and one ``tablelock serve`` child, seeded as P1
(one store, 32 ERP terminals, 1,000 orders). Each round measures first the coordinator's
capacity right now (P1's closed loop: 32 clients cycling acquire + release of a payment lock as
fast as answers come), then offers ``--load`` (0.5) of that many cycles per second *open loop*:
Poisson arrivals from one client process, each cycle on an order no cycle in flight holds, so
every acquire is granted and a slow answer does not slow the arrivals (latency is taken from the
scheduled arrival). Capacity is re-measured each round because the machine is shared: half of
what it can do now is the load the target speaks of.

Prints, per round, the capacity, the offered and achieved rate, p50/p99/p99.9 of the single HTTP
requests (acquire and release) and p99 of the whole cycle, the coordinator's CPU (cores) and how
busy the machine was; then the medians and the target (p99 per request <= 5 ms).

``--nice -10`` (root) runs redis-server, the coordinator and the load generator at that
priority: on a machine shared with other work it measures the coordinator's latency rather
than the other tenants' scheduler slices. Say so whenever a figure taken with it is quoted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CpuWindow, machine_line, median, percentile, start_coordinator, start_redis
from loadgen import run_open_loop
from p1_lock_cycle import measure, pool_for, seed

TARGET_P99_MS = 5.0


def half_load(pool: Any, coordinator: Any, redis_pid: int, clients: list, rate: float, warmup: float,
              duration: float, seed_n: int) -> dict[str, Any]:
    """One open-loop window at ``rate`` cycles/s; the coordinator's CPU meanwhile."""
    start_at = time.time() + 1.0
    future = pool.submit(run_open_loop, [coordinator.url], clients, rate, start_at, warmup, duration, seed_n)
    time.sleep(max(0.0, start_at + warmup - time.time()))
    window = CpuWindow({"server": coordinator.pid, "redis": redis_pid})
    window.start()
    time.sleep(duration)
    window.stop()
    r = future.result(timeout=warmup + duration + 120)
    r.update(cpu_used=window.used, machine=window.machine, offered=rate, achieved=len(r["cycles"]) / duration)
    return r


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--load", type=float, default=0.5, help="fraction of the measured capacity offered")
    parser.add_argument("--capacity-seconds", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds of the half-load window")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--nice", type=int, default=None, help="priority of redis, coordinator and generator")
    args = parser.parse_args()

    print(f"P6 half load: {args.rounds} rounds; capacity = P1 closed loop ({args.clients} clients, "
          f"{args.capacity_seconds:g} s), then {args.load:g} x capacity open loop for {args.duration:g} s")
    print(f"machine: {machine_line()}")
    if args.nice is not None:
        print(f"redis-server, the coordinator and the load generator run at nice {args.nice}")
    print(f"{'round':<6} {'capacity':>9} {'offered':>8} {'achieved':>9} {'req p50':>8} {'req p99':>8} "
          f"{'p99.9':>7} {'cycle p99':>10} {'errors':>6} {'server':>7} {'client':>7} {'lag ms':>7} {'machine':>8}")
    with tempfile.TemporaryDirectory(prefix="tablelock-p6-") as tmp:
        work = Path(tmp)
        redis = start_redis(work)
        coordinator = None
        pool = pool_for(1)
        rounds = []
        try:
            coordinator = start_coordinator(redis.url, work / "coordinator")
            clients = asyncio.run(seed(coordinator.url, args.clients, args.orders))
            assert redis.pid is not None
            if args.nice is not None:
                pool.submit(os.setpriority, os.PRIO_PROCESS, 0, args.nice).result()
                for pid in (redis.pid, coordinator.pid):
                    os.setpriority(os.PRIO_PROCESS, pid, args.nice)
            for n in range(args.rounds):
                cap = measure(pool, "coordinator", [coordinator.url], clients, procs=1, warmup=args.warmup,
                              duration=args.capacity_seconds, watch={"server": coordinator.pid})
                r = half_load(pool, coordinator, redis.pid, clients, cap["rate"] * args.load, args.warmup,
                              args.duration, n + 1)
                r["capacity"] = cap["rate"]
                rounds.append(r)
                print(f"{n + 1:<6} {cap['rate']:>9.0f} {r['offered']:>8.0f} {r['achieved']:>9.0f} "
                      f"{percentile(r['requests'], 50):>8.2f} {percentile(r['requests'], 99):>8.2f} "
                      f"{percentile(r['requests'], 99.9):>7.2f} {percentile(r['cycles'], 99):>10.2f} "
                      f"{r['errors'] + r['starved']:>6} {r['cpu_used']['server']:>7.2f} {r['cpu']:>7.2f} {r['late_ms']:>7.1f} "
                      f"{r['machine'] * 100:>7.0f}%")
        finally:
            pool.shutdown(cancel_futures=True)
            if coordinator is not None:
                coordinator.stop()
            redis.stop()
    if rounds:
        p99 = median(percentile(r["requests"], 99) for r in rounds)
        print(f"\nmedians: capacity {median(r['capacity'] for r in rounds):.0f} cycles/s "
              f"({2 * median(r['capacity'] for r in rounds):.0f} requests/s); at {args.load:g}x: "
              f"request p50 {median(percentile(r['requests'], 50) for r in rounds):.2f} ms, p99 {p99:.2f} ms, "
              f"cycle p99 {median(percentile(r['cycles'], 99) for r in rounds):.2f} ms")
        print(f"request p99 at half load      {p99:.2f} ms (target <= {TARGET_P99_MS:g} ms) "
              f"{'met' if p99 <= TARGET_P99_MS else 'NOT met'}")
        print("CPU columns: cores used over the window (server = the coordinator, client = the load generator); "
              "lag: the generator's worst delay behind its arrival schedule (its own loop, starved or busy)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
