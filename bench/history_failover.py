"""Repeated Redis failovers under the randomized history workload: a primary, a replica and three
sentinels (tests/support/sentinel.py), two coordinator processes on the sentinel URL, the primary
SIGKILLed ``--failovers`` times (the dead node comes back as the new replica each time), then every
SPEC §3 invariant checked over the whole run (SPEC §12).

    .venv/bin/python bench/history_failover.py                       # 10 failovers, 12,000 operations
    .venv/bin/python bench/history_failover.py --failovers 3 --ops 3000

Prints, per failover: kill → promotion, kill → first successful grant (seconds), and the requests
refused meanwhile (503 UNAVAILABLE or no answer); then violations (must be 0). Exits 1 on a
violation. Loopback only; bounded by --max-seconds, stops by itself.
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

from tests.support.history.checker import check  # noqa: E402
from tests.support.history.recorder import History  # noqa: E402
from tests.support.history.workload import Plan, run_workload  # noqa: E402
from tests.support.sentinel import SentinelGroup  # noqa: E402

GRANT_PATHS = ("/locks", "/h5/checkout")


def _refused(op) -> bool:  # type: ignore[no-untyped-def]
    if op.status is None:
        return True
    error = (op.resp or {}).get("error", {}) if isinstance(op.resp, dict) else {}
    return op.status == 503 and error.get("code") == "UNAVAILABLE"


def failover_figures(history: History) -> list[tuple[float, float, int]]:
    """Per failover: (kill → promotion s, kill → first successful grant s, requests refused meanwhile)."""
    out = []
    for fault in (f for f in history.faults if f.kind == "failover"):
        promoted = float(fault.detail.rsplit(" ", 1)[-1].rstrip("s"))
        grants = [op for op in history.ops if op.t0 >= fault.t0 and op.status == 201
                  and op.path.endswith(GRANT_PATHS) and op.t1 is not None]
        first = min((op.t1 for op in grants), default=float("nan"))
        refused = sum(1 for op in history.ops if fault.t0 <= op.t0 <= first and _refused(op))
        out.append((promoted, first - fault.t0, refused))
    return out


async def main(args: argparse.Namespace) -> int:
    """Run, check, print; 0 when no invariant is broken."""
    with tempfile.TemporaryDirectory(prefix="tablelock-failover-") as tmp:
        started = time.monotonic()
        with SentinelGroup(Path(tmp) / "redis") as group:
            faults = [((i + 1) / (args.failovers + 1), "failover") for i in range(args.failovers)]
            plan = Plan(ops=args.ops, faults=faults, seed=args.seed, max_seconds=args.max_seconds)
            history = await run_workload(plan, group, Path(tmp))  # type: ignore[arg-type]
        ran = time.monotonic() - started
        report = check(history)
    figures = failover_figures(history)
    print(f"seed            {history.notes['seed']}")
    print(f"operations      {len(history.ops)} in {ran:.0f} s; events {len(history.stream)}")
    print(f"failovers       {len(figures)} of {args.failovers} planned")
    for i, (promoted, first, refused) in enumerate(figures, 1):
        print(f"  #{i:<2} kill → promotion {promoted:.2f} s, → first grant {first:.2f} s, refused meanwhile {refused}")
    if figures:
        firsts = [f for _, f, _ in figures]
        print(f"first grant     median {statistics.median(firsts):.2f} s, max {max(firsts):.2f} s; "
              f"refused median {statistics.median(r for _, _, r in figures):.0f}")
    print(f"answers         {dict(sorted(history.notes['statuses'].items()))}")
    print(f"checked         {dict(report.counts)}")
    print(f"violations      {len(report.violations)} {dict(report.by_invariant())}")
    for violation in report.violations[:50]:
        print(f"  {violation}")
    return 1 if report.violations or len(figures) < args.failovers else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--failovers", type=int, default=10)
    parser.add_argument("--ops", type=int, default=12_000)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--max-seconds", type=float, default=600, help="stop issuing after this long")
    sys.exit(asyncio.run(main(parser.parse_args())))
