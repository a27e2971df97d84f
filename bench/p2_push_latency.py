"""P2 push latency: from a lock operation's HTTP response to each websocket subscriber's receipt.

    .venv/bin/python bench/p2_push_latency.py                           # 5,000 clients, 1,000 stores
    .venv/bin/python bench/p2_push_latency.py --clients 2000 --stores 400 --windows 3

One ``tablelock serve`` process on a private Redis. Each store has one order on table T1, one
driver ERP terminal (HTTP only) and ``clients / stores`` websocket listeners at T1, 40 % ERP
terminals and 60 % H5 sessions (``--erp-share``), held by ``--sub-procs`` subscriber processes
(bench/sockets.py). The driver takes and releases a ``payment`` lock on one store after another
at ``--rate`` operations per second (acquire + release = 2). For every operation and listener:

    latency = receipt (subscriber) - HTTP response of the operation (driver)

on ``time.monotonic`` (one clock for all processes of the machine). An event can reach a
subscriber before the driver has read its own response (the Lua script publishes before the
HTTP reply is written), so the figure can be negative; ``from request`` (receipt - request sent)
is the upper bound. Missing receipts must be 0. Target: p99 <= 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    CpuWindow,
    fmt,
    machine_line,
    median,
    percentile,
    raise_nofile,
    rss_bytes,
    start_coordinator,
    start_redis,
)
from sockets import StoreSeed, seed_stores, subscriber_main  # noqa: E402

Key = tuple[str, str, int]  # (store_id, event name, fence)


async def ws_count(base: str) -> dict[str, float]:
    """Open websockets by role, from the coordinator's /metrics."""
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as r:
        text = await r.text()
    out = {}
    for line in text.splitlines():
        if line.startswith("tablelock_ws_connections{"):
            role = line.split('role="', 1)[1].split('"', 1)[0]
            out[role] = float(line.rsplit(" ", 1)[1])
    return out


async def drive(base: str, seeds: list[StoreSeed], rate: float, duration: float) -> dict[Key, tuple[float, float]]:
    """Acquire + release payment locks, store after store, at ``rate`` operations/s for ``duration`` s."""
    sent: dict[Key, tuple[float, float]] = {}
    cycles = int(rate / 2 * duration)
    busy = {seed.store_id: asyncio.Lock() for seed in seeds}
    gate = asyncio.Semaphore(256)
    errors = 0
    acquire = json.dumps({"kind": "payment"}).encode()
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:

        async def cycle(seed: StoreSeed) -> None:
            nonlocal errors
            url = f"{base}/api/v1/stores/{seed.store_id}/orders/o1/locks"
            headers = {"Authorization": f"Bearer {seed.driver}", "Content-Type": "application/json"}
            async with gate, busy[seed.store_id]:
                try:
                    t0 = time.monotonic()
                    async with session.post(url, data=acquire, headers=headers) as r:
                        body = await r.read()
                    t1 = time.monotonic()
                    if r.status != 201:
                        errors += 1
                        return
                    lock = json.loads(body)["lock"]
                    sent[(seed.store_id, "lock.acquired", lock["fence"])] = (t0, t1)
                    release = json.dumps({"token": lock["token"]}).encode()
                    t2 = time.monotonic()
                    async with session.post(f"{url}/payment/release", data=release, headers=headers) as r:
                        await r.read()
                    t3 = time.monotonic()
                    if r.status == 200:
                        sent[(seed.store_id, "lock.released", lock["fence"])] = (t2, t3)
                    else:
                        errors += 1
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    errors += 1

        start = time.monotonic()
        tasks = []
        for i in range(cycles):
            delay = start + i * 2 / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(cycle(seeds[i % len(seeds)])))
        await asyncio.gather(*tasks)
    if errors:
        print(f"  driver: {errors} operations failed")
    return sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=5000, help="websocket clients")
    parser.add_argument("--stores", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=500, help="lock operations per second (acquire + release)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per measured window")
    parser.add_argument("--windows", type=int, default=3, help="measured windows (medians are printed)")
    parser.add_argument("--sub-procs", type=int, default=0, help="subscriber processes (default: 1 per 2,500)")
    parser.add_argument("--erp-share", type=float, default=0.4, help="share of listeners that are ERP terminals")
    parser.add_argument("--coordinator-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a TABLELOCK_* setting for the coordinator (repeatable), for diagnosis")
    parser.add_argument("--coordinator-source", type=Path, metavar="DIR",
                        help="run the coordinator package found in DIR (an A/B against a copy of the code)")
    args = parser.parse_args()
    sub_procs = args.sub_procs or max(1, -(-args.clients // 2500))
    limit = raise_nofile(args.clients + 4096)
    print(f"P2 push latency: {args.clients} websocket clients over {args.stores} stores in {sub_procs} "
          f"subscriber process(es), ~{args.rate:g} lock operations/s, {args.windows} windows of {args.duration:g} s")
    print(f"machine: {machine_line()}; open-file limit {limit}")
    ctx = get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="tablelock-p2-") as tmp:
        work = Path(tmp)
        redis = start_redis(work)
        coordinator = None
        children: list[Any] = []
        stop = ctx.Event()
        report = ctx.Queue()
        try:
            env = dict(pair.split("=", 1) for pair in args.coordinator_env)
            if env:
                print(f"coordinator settings: {env}")
            coordinator = start_coordinator(redis.url, work / "coordinator", env=env, source=args.coordinator_source)
            t = time.monotonic()
            seeds = asyncio.run(seed_stores(coordinator.url, args.stores, args.clients, args.erp_share, "s"))
            print(f"seeded {args.stores} stores through the API in {time.monotonic() - t:.0f} s")
            listeners = [(s.store_id, role, token) for s in seeds for role, token in s.listeners]
            ws_url = f"ws://127.0.0.1:{coordinator.port}/api/v1/ws"
            t = time.monotonic()
            for i in range(sub_procs):
                child = ctx.Process(target=subscriber_main, args=(ws_url, listeners[i::sub_procs], report, stop))
                child.start()
                children.append(child)
            held = failed = 0
            for _ in children:
                _, n, f = report.get(timeout=900)
                held, failed = held + n, failed + f
            counts = asyncio.run(ws_count(coordinator.url))
            print(f"connected {held} websockets in {time.monotonic() - t:.0f} s ({failed} failed); the coordinator "
                  f"counts {counts}; coordinator RSS {rss_mb(coordinator.pid):.0f} MB")
            time.sleep(3)  # let the terminal.status burst of the connections pass
            subscribers = {seed.store_id: len(seed.listeners) for seed in seeds}
            watch = {"coordinator": coordinator.pid, "redis": redis.pid or 0, "driver": os.getpid(),
                     **{f"sub{i}": c.pid for i, c in enumerate(children)}}
            sent: list[dict[Key, tuple[float, float]]] = []
            cpu: list[CpuWindow] = []
            for n in range(args.windows):
                meter = CpuWindow(watch)
                meter.start()
                t = time.monotonic()
                sent.append(asyncio.run(drive(coordinator.url, seeds, args.rate, args.duration)))
                meter.stop()
                elapsed = time.monotonic() - t
                cpu.append(meter)
                print(f"  window {n + 1}: {len(sent[-1])} operations in {elapsed:.1f} s "
                      f"({len(sent[-1]) / elapsed:.0f}/s)")
                time.sleep(1)
            time.sleep(2)  # the last receipts
            stop.set()
            receipts: list[tuple[str, str, int, float]] = []
            pings: list[float] = []
            for _ in children:
                _, got, pinged = report.get(timeout=300)
                receipts.extend(got)
                pings.extend(pinged)
        finally:
            stop.set()
            for child in children:
                child.join(timeout=60)
                if child.is_alive():
                    child.kill()
            if coordinator is not None:
                coordinator.stop()
            redis.stop()

    by_key: dict[Key, list[float]] = {}
    for store_id, name, fence, at in receipts:
        by_key.setdefault((store_id, name, fence), []).append(at)
    beats = heartbeats(pings)
    print(f"\n{'window':<7} {'ops':>6} {'receipts':>9} {'missing':>7} {'p50 ms':>7} {'p99 ms':>7} {'p99.9':>7} "
          f"{'max ms':>7} {'req p50':>8} {'req p99':>8} {'coord':>6} {'subs':>5} {'driver':>6} {'redis':>6} {'machine':>8}")
    rows = []
    quiet_all: list[float] = []
    beat_all: list[float] = []
    slots: dict[int, list[float]] = {}  # second of the request -> latencies
    for n, ops in enumerate(sent):
        after_response, after_request, missing = [], [], 0
        for key, (t_req, t_resp) in ops.items():
            got = by_key.get(key, [])
            missing += max(0, subscribers[key[0]] - len(got))
            after_response += [(at - t_resp) * 1000 for at in got]
            after_request += [(at - t_req) * 1000 for at in got]
            during = any(start - 0.1 <= t_req <= end + 0.1 for start, end in beats)
            (beat_all if during else quiet_all).extend((at - t_resp) * 1000 for at in got)
            for at in got:
                slots.setdefault(int(t_req), []).append((at - t_resp) * 1000)
        m = cpu[n]
        subs = sum(v for k, v in m.used.items() if k.startswith("sub"))
        r = {"ops": len(ops), "receipts": len(after_response), "missing": missing,
             "p50": percentile(after_response, 50), "p99": percentile(after_response, 99),
             "p999": percentile(after_response, 99.9), "max": max(after_response, default=float("nan")),
             "req50": percentile(after_request, 50), "req99": percentile(after_request, 99)}
        rows.append(r)
        print(f"{n + 1:<7} {r['ops']:>6} {r['receipts']:>9} {r['missing']:>7} {r['p50']:>7.1f} {r['p99']:>7.1f} "
              f"{r['p999']:>7.1f} {r['max']:>7.1f} {r['req50']:>8.1f} {r['req99']:>8.1f} "
              f"{m.used['coordinator']:>6.2f} {subs:>5.2f} {m.used['driver']:>6.2f} {m.used['redis']:>6.2f} "
              f"{m.machine * 100:>7.0f}%")
    p99 = median(r["p99"] for r in rows)
    print(f"median of windows: p50 {fmt(median(r['p50'] for r in rows))} ms, p99 {fmt(p99)} ms after the response "
          f"(p99 {fmt(median(r['req99'] for r in rows))} ms after the request); missing "
          f"{sum(r['missing'] for r in rows)}")
    if beats:
        spans = [end - start for start, end in beats]
        print(f"server heartbeats seen: {len(beats)}, pings reached every client within a median "
              f"{median(spans) * 1000:.0f} ms (max {max(spans) * 1000:.0f} ms); operations sent meanwhile: "
              f"p99 {fmt(percentile(beat_all, 99))} ms over {len(beat_all)} receipts; the rest: "
              f"p99 {fmt(percentile(quiet_all, 99))} ms over {len(quiet_all)}")
    if slots:
        first = min(slots)
        worst = sorted(slots, key=lambda k: -percentile(slots[k], 99))[:5]
        print("worst one-second slots (s from the first operation: p99 / max ms, receipts): " + "; ".join(
            f"{k - first} s: {percentile(slots[k], 99):.0f} / {max(slots[k]):.0f} ({len(slots[k])})" for k in worst))
        calm = sum(1 for v in slots.values() if percentile(v, 99) <= 20)
        print(f"one-second slots with p99 <= 20 ms: {calm} of {len(slots)}")
    print(f"target p99 <= 20 ms: {'met' if p99 <= 20 else 'NOT met'}")
    return 0


def heartbeats(pings: list[float], gap: float = 2.0) -> list[tuple[float, float]]:
    """The server's heartbeats as (first ping seen, last ping seen): pings closer than ``gap`` s."""
    out: list[tuple[float, float]] = []
    for at in sorted(pings):
        if out and at - out[-1][1] < gap:
            out[-1] = (out[-1][0], at)
        else:
            out.append((at, at))
    return out


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB."""
    return rss_bytes(pid) / 2**20


if __name__ == "__main__":
    sys.exit(main())
