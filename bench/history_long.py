"""The long history run: >= 100,000 randomized operations across two coordinator processes on a private
Redis, with repeated kill -9 of a coordinator and Redis restarts, then every SPEC §3 invariant checked —
and, with diners paying through the sandbox provider (the default), SPEC §13 invariants 8 and 9, and
with split-bill shares (the default, ``--shares``) invariant 10.

    .venv/bin/python bench/history_long.py                 # 100,000 operations
    .venv/bin/python bench/history_long.py --ops 20000 --save /tmp/history.json
    .venv/bin/python bench/history_long.py --no-providers  # diners without provider payments (SPEC §9)

Prints operations, violations (must be 0), faults injected, answers by status and the expiry lag;
exits 1 if any invariant is broken. Traffic goes to 127.0.0.1 only; the run stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from coordinator.redis_embedded import EmbeddedRedis  # noqa: E402
from tests.support.history.checker import check, expiry_lags  # noqa: E402
from tests.support.history.workload import Plan, run_workload  # noqa: E402


def faults_for(kills: int, restarts: int) -> list[tuple[float, str]]:
    """Kills and Redis restarts spread evenly over the run, alternating."""
    plan = [((i + 0.5) / kills, "kill") for i in range(kills)]
    plan += [((i + 1) / (restarts + 1), "redis") for i in range(restarts)]
    return sorted(plan)


async def main(args: argparse.Namespace) -> int:
    """Run, check, print; 0 when no invariant is broken."""
    with tempfile.TemporaryDirectory(prefix="tablelock-history-") as tmp:
        redis = EmbeddedRedis(Path(tmp) / "redis", tcp=True).start()
        started = time.monotonic()
        try:
            plan = Plan(ops=args.ops, erp_actors=args.erp, h5_actors=args.h5, tables=args.tables,
                        faults=faults_for(args.kills, args.restarts), seed=args.seed, max_seconds=args.max_seconds,
                        providers=args.providers,  # on unless --no-providers
                        shares=args.shares if args.providers else 0.0)
            history = await run_workload(plan, redis, Path(tmp))
        finally:
            redis.stop()
        ran = time.monotonic() - started
        if args.save:
            history.save(args.save)
        report = check(history)
    faults = Counter(f.kind for f in history.faults)
    lags = sorted(expiry_lags(history))
    p = (lambda q: lags[min(len(lags) - 1, int(q * len(lags)))]) if lags else (lambda q: float("nan"))
    print(f"seed            {history.notes['seed']}")
    print(f"operations      {len(history.ops)} in {ran:.0f} s ({len(history.ops) / ran:.0f}/s)")
    print(f"events          {len(history.stream)}; locks {report.counts['locks']}; "
          f"paid orders {report.counts['I4 orders paid']}")
    print(f"faults          {dict(faults)}")
    print(f"answers         {dict(sorted(history.notes['statuses'].items()))}")
    calm = sorted(expiry_lags(history, outside_faults=True))
    q = (lambda x: calm[min(len(calm) - 1, int(x * len(calm)))]) if calm else (lambda x: float("nan"))
    print(f"expiry lag      p50 {p(0.5):.0f} ms, p99 {p(0.99):.0f} ms over {len(lags)} deliveries; "
          f"away from faults p50 {q(0.5):.0f} ms, p99 {q(0.99):.0f} ms over {len(calm)} (SPEC: p99 < 250 ms)")
    c = report.counts
    print(f"provider money  {len({t['out_trade_no'] for t in history.trades})} trades, {c['I9 captured']} captured: "
          f"{c['I9 paid']} paid an order, {c['I9 surplus']} surplus ({c['I9 refunded']} refunded); "
          f"{c['I9 not captured']} never paid; settled in {history.notes.get('settle_seconds')} s")
    print(f"captured by     {dict(Counter(p.get('capture_source') for p in history.payments if p.get('capture_source')))}; "
          f"surplus {dict(Counter(p.get('surplus_reason') for p in history.payments if p.get('surplus_reason')))}")
    print(f"split bill      {c['I10 shares granted']} shares granted ({c['I10 grants beside live shares']} beside live "
          f"ones), {c['I10 shares paid']} paid ({c['I9 shares paid']} through the provider), "
          f"{c['I10 split orders paid']} orders paid by shares ({c['I10 rests paid whole']} with a whole-order rest), "
          f"{c['I10 order changes after a share was paid']} order changes after a capture; ERP books compared on "
          f"{c['I10 ERP books compared']} orders")
    print(f"checked         {dict(report.counts)}")
    print(f"violations      {len(report.violations)} {dict(report.by_invariant())}")
    for violation in report.violations[:50]:
        print(f"  {violation}")
    return 1 if report.violations else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=5, help="kill -9 of a coordinator (its slot is refilled)")
    parser.add_argument("--restarts", type=int, default=4, help="Redis stop + start on the same port (AOF)")
    parser.add_argument("--erp", type=int, default=6, help="ERP terminal actors")
    parser.add_argument("--h5", type=int, default=8, help="H5 session actors")
    parser.add_argument("--tables", type=int, default=6)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--max-seconds", type=float, default=4 * 3600, help="stop issuing after this long")
    parser.add_argument("--no-providers", dest="providers", action="store_false",
                        help="diners do not pay through the sandbox provider")
    parser.add_argument("--shares", type=float, default=0.25,
                        help="fraction of diners' and terminals' steps spent on split-bill shares (SPEC §10; 0: none)")
    parser.add_argument("--save", type=Path, default=None, help="write the history as JSON")
    sys.exit(asyncio.run(main(parser.parse_args())))
