"""A/B of two coordinator variants on the P1 lock cycle: same Redis, same clients, alternating windows.

    .venv/bin/python bench/ab.py --a asyncio --b uvloop          # the event loop (needs uvloop)
    .venv/bin/python bench/ab.py --a env:TABLELOCK_LOG_LEVEL=INFO --b env:TABLELOCK_LOG_LEVEL=WARNING
    mkdir /tmp/base && cp -r coordinator config /tmp/base/    # before a change to the product; after it:
    .venv/bin/python bench/ab.py --a src:/tmp/base --b here

A variant is ``here`` (this tree), ``asyncio`` (same as here), ``uvloop`` (this tree under uvloop),
``src:DIR`` (the ``coordinator`` package in DIR) or ``env:NAME=VALUE[,NAME=VALUE]`` (this tree
with those settings). Both processes run on one Redis; only one is loaded at a time. Each round
measures A then B (then B then A in the next round, so drift in the machine's other load does not
favour one side) and prints cycles/s, p50/p99, the server's CPU per cycle, and B/A ratios, whose
medians decide whether a change is kept (bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Coordinator, machine_line, median, start_coordinator, start_redis  # noqa: E402
from p1_lock_cycle import HEADER, measure, pool_for, row, seed  # noqa: E402


def start_variant(spec: str, redis_url: str, work: Path) -> Coordinator:
    """A coordinator process for one variant spec."""
    if spec in ("here", "asyncio"):
        return start_coordinator(redis_url, work)
    if spec == "uvloop":
        return start_coordinator(redis_url, work, loop="uvloop")
    if spec.startswith("src:"):
        return start_coordinator(redis_url, work, source=Path(spec[4:]).resolve())
    if spec.startswith("env:"):
        env = dict(pair.split("=", 1) for pair in spec[4:].split(","))
        return start_coordinator(redis_url, work, env=env)
    raise SystemExit(f"unknown variant {spec!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", default="asyncio")
    parser.add_argument("--b", default="uvloop")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    print(f"A = {args.a}, B = {args.b}; machine: {machine_line()}")
    with tempfile.TemporaryDirectory(prefix="tablelock-ab-") as tmp:
        work = Path(tmp)
        redis = start_redis(work)
        pool = pool_for(1)
        servers: dict[str, Coordinator] = {}
        try:
            servers["A"] = start_variant(args.a, redis.url, work / "a")
            servers["B"] = start_variant(args.b, redis.url, work / "b")
            clients = asyncio.run(seed(servers["A"].url, args.clients, 1000))
            print(HEADER)
            rounds: list[dict[str, Any]] = []
            for n in range(args.rounds):
                r = {}
                for side in ("A", "B") if n % 2 == 0 else ("B", "A"):
                    server = servers[side]
                    r[side] = measure(pool, "coordinator", [server.url], clients, procs=1, warmup=args.warmup,
                                      duration=args.duration, watch={"server": server.pid, "redis": redis.pid})
                    r[side]["us"] = r[side]["cpu"]["server"] / r[side]["rate"] * 1e6
                    print(row(f"[{n + 1}] {side}", r[side], "server") + f"  {r[side]['us']:.0f} us/cycle")
                rounds.append(r)
            for side in ("A", "B"):
                print(f"{side} median {median(r[side]['rate'] for r in rounds):.0f} cycles/s, "
                      f"p99 {median(r[side]['p99'] for r in rounds):.1f} ms, "
                      f"server CPU {median(r[side]['us'] for r in rounds):.0f} us/cycle")
            print(f"B / A: throughput {median(r['B']['rate'] / r['A']['rate'] for r in rounds):.2f}x, "
                  f"server CPU per cycle {median(r['B']['us'] / r['A']['us'] for r in rounds):.2f}x")
        finally:
            pool.shutdown(cancel_futures=True)
            for server in servers.values():
                server.stop()
            redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
