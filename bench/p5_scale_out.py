"""P5 scale-out: the P1 lock cycle on ``tablelock serve --workers 2`` vs on one worker, one Redis.

    .venv/bin/python bench/p5_scale_out.py               # 3 rounds of 2 + 8 s windows
    .venv/bin/python bench/p5_scale_out.py --client-procs 2

Two coordinators run on one private Redis: ``tablelock serve`` (one process) and ``tablelock
serve --workers 2`` (a supervising parent and two workers sharing one port with SO_REUSEPORT).
Each round measures, with the same 32 ERP clients (bench/loadgen.py), all of them on the single
process, then all of them on the two-worker port (the kernel spreads their connections over the
workers), in alternating order. It prints cycles/s, p50/p99, the cores the load generator, each
worker (w1, w2: the single process is w1 in its rows), the setup not under load ("idle": it still
receives every store's events over pub/sub) and Redis used, and the machine's load.

The figures: **CPU per cycle** (µs of coordinator CPU, all workers and the parent, per acquire +
release) two workers / one — target within 10 %, i.e. no coordination tax for a second process —
and the throughput ratio. Throughput can only rise if a core is free for the second worker: on a
2-core machine the clients and redis-server need CPU too, so it is "CPU budget bound", not a
property of the design; the CPU per cycle is the figure that says whether workers cost extra.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine_line, median, start_coordinator, start_redis  # noqa: E402
from p1_lock_cycle import measure, pool_for, seed  # noqa: E402


def children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (the workers of a ``--workers`` parent)."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return sorted(int(x) for x in f.read().split())


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
            single = start_coordinator(redis.url, work / "one")
            procs.append(single)
            multi = start_coordinator(redis.url, work / "two", workers=2)
            procs.append(multi)
            deadline = time.monotonic() + 30
            while len(children(multi.pid)) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            workers = children(multi.pid)
            assert len(workers) == 2, f"expected 2 workers, found {workers}"
            clients = asyncio.run(seed(single.url, args.clients, args.orders))
            assert redis.pid is not None
            # Both setups are watched in every window: the idle one's CPU is what receiving every
            # store's events over pub/sub costs a process that serves none of them.
            pids = {"single": single.pid, "a": workers[0], "b": workers[1], "parent": multi.pid, "redis": redis.pid}
            print(f"{'setup':<22} {'cycles/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} {'client':>7} "
                  f"{'w1':>6} {'w2':>6} {'idle':>6} {'redis':>6} {'machine':>8} {'us CPU/cycle':>13}")
            rounds = []
            for n in range(args.rounds):
                r = {}
                order = (("one", single.url), ("two", multi.url))
                for name, url in order if n % 2 == 0 else order[::-1]:
                    m = r[name] = measure(pool, "coordinator", [url], clients, procs=args.client_procs,
                                          warmup=args.warmup, duration=args.duration, watch=pids)
                    used = m["cpu"]
                    two = used["a"] + used["b"] + used["parent"]
                    cpu = ({"w1": used["single"], "idle": two} if name == "one" else
                           {"w1": used["a"], "w2": used["b"], "idle": used["single"]})
                    cpu["redis"] = used["redis"]
                    m["cores"] = used["single"] if name == "one" else two
                    m["idle"] = cpu["idle"]
                    m["us"] = m["cores"] / m["rate"] * 1e6 if m["rate"] else float("nan")
                    label = "one process" if name == "one" else "--workers 2"
                    print(f"[{n + 1}] {label:<18} {m['rate']:>9.0f} {m['p50']:>7.2f} {m['p99']:>7.2f} "
                          f"{m['errors']:>6} {m['client_cpu']:>7.2f} {cpu['w1']:>6.2f} "
                          f"{cpu.get('w2', float('nan')):>6.2f} {cpu['idle']:>6.2f} {cpu['redis']:>6.2f} "
                          f"{m['machine'] * 100:>7.0f}% "
                          f"{m['us']:>13.0f}")
                rounds.append(r)
            for name in ("one", "two"):
                print(f"{name:<4} median {median(r[name]['rate'] for r in rounds):.0f} cycles/s, "
                      f"p99 {median(r[name]['p99'] for r in rounds):.1f} ms, "
                      f"coordinator {median(r[name]['cores'] for r in rounds):.2f} cores, "
                      f"{median(r[name]['us'] for r in rounds):.0f} us CPU/cycle, "
                      f"load generator {median(r[name]['client_cpu'] for r in rounds):.2f} cores, "
                      f"idle setup {median(r[name]['idle'] for r in rounds):.2f} cores, "
                      f"machine {median(r[name]['machine'] for r in rounds) * 100:.0f}% busy")
            cpu_ratio = median(r["two"]["us"] / r["one"]["us"] for r in rounds)
            rate_ratio = median(r["two"]["rate"] / r["one"]["rate"] for r in rounds)
            print(f"CPU per cycle, --workers 2 / one: {cpu_ratio:.2f}x (target <= 1.10x) "
                  f"{'met' if cpu_ratio <= 1.10 else 'NOT met'}")
            print(f"throughput, --workers 2 / one: {rate_ratio:.2f}x")
        finally:
            pool.shutdown(cancel_futures=True)
            for p in procs:
                p.stop()
            redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
