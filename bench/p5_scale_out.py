"""P5 scale-out: the P1 lock cycle on two coordinator processes sharing one Redis vs on one.

    .venv/bin/python bench/p5_scale_out.py               # 3 rounds of 8 s windows
    .venv/bin/python bench/p5_scale_out.py --client-procs 2

Two ``tablelock serve`` processes run on one private Redis. Each round measures, with the same
32 ERP clients (bench/loadgen.py): all of them on process 1, then half on each process (client i
on process i % 2). It prints cycles/s, p50/p99 and the cores each process used, and the ratio
two/one per round; target >= 1.7x. The CPU columns explain the ratio: two processes can only
be faster if there is a free core for the second one, and on a 2-core machine the clients and
redis-server need CPU too (the figure is "CPU budget bound", not a property of the design).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine_line, median, start_coordinator, start_redis  # noqa: E402
from p1_lock_cycle import measure, pool_for, seed  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--client-procs", type=int, default=1, help="load generator processes")
    args = parser.parse_args()
    print(f"P5 scale-out: {args.clients} ERP clients in {args.client_procs} process(es), {args.orders} orders, "
          f"{args.rounds} rounds of {args.warmup:g} + {args.duration:g} s")
    print(f"machine: {machine_line()}")
    with tempfile.TemporaryDirectory(prefix="tablelock-p5-") as tmp:
        work = Path(tmp)
        redis = start_redis(work)
        pool = pool_for(args.client_procs)
        procs = []
        try:
            procs = [start_coordinator(redis.url, work / f"c{i}") for i in range(2)]
            clients = asyncio.run(seed(procs[0].url, args.clients, args.orders))
            assert redis.pid is not None
            watch = {"c1": procs[0].pid, "c2": procs[1].pid, "redis": redis.pid}
            print(f"{'setup':<22} {'cycles/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} {'client':>7} "
                  f"{'coord 1':>8} {'coord 2':>8} {'redis':>6} {'machine':>8}")
            rounds = []
            for n in range(args.rounds):
                r = {}
                order = (("one", [procs[0].url]), ("two", [p.url for p in procs]))
                for name, targets in order if n % 2 == 0 else order[::-1]:
                    r[name] = measure(pool, "coordinator", targets, clients, procs=args.client_procs,
                                      warmup=args.warmup, duration=args.duration, watch=watch)
                    m = r[name]
                    print(f"[{n + 1}] {name + ' process' + ('es' if name == 'two' else ''):<18} {m['rate']:>9.0f} "
                          f"{m['p50']:>7.2f} {m['p99']:>7.2f} {m['errors']:>6} {m['client_cpu']:>7.2f} "
                          f"{m['cpu']['c1']:>8.2f} {m['cpu']['c2']:>8.2f} {m['cpu']['redis']:>6.2f} "
                          f"{m['machine'] * 100:>7.0f}%")
                rounds.append(r)
            ratio = median(r["two"]["rate"] / r["one"]["rate"] for r in rounds)
            for name in ("one", "two"):
                cores = median(r[name]["cpu"]["c1"] + r[name]["cpu"]["c2"] for r in rounds)
                us = median((r[name]["cpu"]["c1"] + r[name]["cpu"]["c2"]) / r[name]["rate"] * 1e6 for r in rounds)
                print(f"{name:<4} median {median(r[name]['rate'] for r in rounds):.0f} cycles/s, "
                      f"p99 {median(r[name]['p99'] for r in rounds):.1f} ms, coordinators {cores:.2f} cores, "
                      f"{us:.0f} us CPU/cycle, machine {median(r[name]['machine'] for r in rounds) * 100:.0f}% busy")
            print(f"two / one processes: {ratio:.2f}x (target >= 1.7x) {'met' if ratio >= 1.7 else 'NOT met'}")
        finally:
            pool.shutdown(cancel_futures=True)
            for p in procs:
                p.stop()
            redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
