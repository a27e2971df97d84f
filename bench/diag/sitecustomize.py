"""Diagnosis only: log the coordinator's garbage collections (how the P2 GC stalls were found).

    .venv/bin/python bench/p2_push_latency.py --coordinator-env PYTHONPATH=bench/diag
    sort -k3 -n /tmp/tablelock-gc-*.log | tail        # the longest pauses

Python imports ``sitecustomize`` at start-up from PYTHONPATH, so the product is not touched. Every
full (gen2) collection and every collection over 2 ms is written as ``monotonic gen ms collected``
to ``/tmp/tablelock-gc-<pid>.log`` (or the directory in TABLELOCK_GC_LOG_DIR).
"""

import gc
import os
import time

_started: list[float] = []
_log = open(os.path.join(os.environ.get("TABLELOCK_GC_LOG_DIR", "/tmp"), f"tablelock-gc-{os.getpid()}.log"),
            "w", buffering=1)


def _on_gc(phase: str, info: dict) -> None:
    if phase == "start":
        _started[:] = [time.perf_counter()]
        return
    ms = (time.perf_counter() - (_started[0] if _started else time.perf_counter())) * 1000
    if ms > 2 or info["generation"] == 2:
        _log.write(f"{time.monotonic():.3f} gen{info['generation']} {ms:.1f}ms collected={info['collected']}\n")


gc.callbacks.append(_on_gc)
