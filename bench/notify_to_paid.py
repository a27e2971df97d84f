"""Notification → order.paid: from the provider's payment to ``order.paid`` on every socket of the store.

    .venv/bin/python bench/notify_to_paid.py                       # 100 payments, 200 sockets
    .venv/bin/python bench/notify_to_paid.py --payments 50 --sockets 400 --erp-share 0.4

One ``tablelock serve`` process on a private Redis, the sandbox payment provider process
(``python -m coordinator.payments.sandbox``, configured for the store through the admin API), the
store's master ERP terminal (the ERP simulator, answering ``order.pay``) and ``--sockets``
websocket listeners on the store: ERP terminals (``--erp-share``) and H5 sessions at table T1,
held by ``--sub-procs`` child processes so that no receipt queues behind the bench's own work.

One payment at a time: the master opens an order on T1, a diner checks out and starts a WeChat
Pay payment (``POST /h5/payments/start``), and the bench acts as the diner at the sandbox
(``POST /sandbox/trades/{no}/pay``). The sandbox marks the trade paid (``paid_at``, wall-clock ms)
and sends its signed notification at once; the coordinator verifies it, asks the ERP
(``order.pay`` over the master's socket), and publishes ``order.paid``. For every payment and socket:

    latency = receipt of order.paid (wall clock, in the bench) - paid_at (wall clock, in the sandbox)

Both are this machine's clock; ``paid_at`` is whole ms, so a figure may be up to 1 ms high. The
path includes the ERP round trip (the simulator in the bench process). ``from request`` (receipt -
the bench's pay request) is the upper bound. Missing receipts must be 0. Target: p99 <= 50 ms.
Bounded: ``--payments`` payments, each waits at most 10 s, the whole run at most ``--budget`` s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import queue
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    ADMIN_TOKEN,
    Api,
    CpuWindow,
    bounded_gather,
    fmt,
    machine_line,
    percentile,
    raise_nofile,
    start_coordinator,
    start_redis,
)

from erp_simulator.db import ErpDatabase
from erp_simulator.demo_sandbox import SandboxProvider
from erp_simulator.terminal import Terminal

STORE = "p7"
ITEMS = [{"sku": "tea", "qty": 2}]


async def _listen(ws_url: str, tokens: list[str], queue: Any, stop: Any) -> None:
    """Hold one socket per token; put (order_id, wall ms) on ``queue`` for every order.paid received."""
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(token: str) -> None:
            ws = await session.ws_connect(ws_url, protocols=("tablelock.v1", f"bearer.{token}"),
                                          heartbeat=None, max_msg_size=0, autoping=True)
            for _ in range(2):  # hello + snapshot: live once both are in
                await asyncio.wait_for(ws.receive(), 30)
            sockets.append(ws)

        async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
            async for msg in ws:
                at = time.time() * 1000
                if msg.type != aiohttp.WSMsgType.TEXT or '"order.paid"' not in msg.data:
                    continue
                event = json.loads(msg.data)
                if event.get("type") == "event" and event.get("name") == "order.paid":
                    queue.put((event["order_id"], at))

        await bounded_gather((one(t) for t in tokens), 32)
        readers = [asyncio.create_task(read(ws)) for ws in sockets]
        queue.put(("connected", len(sockets)))
        deadline = time.monotonic() + 3600
        while not stop.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for ws in sockets:
            await ws.close()
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)


def listen_main(ws_url: str, tokens: list[str], queue: Any, stop: Any) -> None:
    """Child process entry: the listeners of one share of the sockets."""
    asyncio.run(_listen(ws_url, tokens, queue, stop))


class Listeners:
    """The store's websockets, held by ``procs`` child processes (so no receipt waits behind the driver)."""

    def __init__(self, ws_url: str, tokens: list[str], procs: int) -> None:
        ctx = get_context("spawn")
        self.queue = ctx.Queue()
        self.stop_event = ctx.Event()
        shares = [tokens[i::procs] for i in range(procs)]
        self.procs = [ctx.Process(target=listen_main, args=(ws_url, share, self.queue, self.stop_event), daemon=True)
                      for share in shares if share]
        self.connected = 0
        self.receipts: dict[str, list[float]] = {}

    async def start(self, timeout: float = 120) -> int:
        """Start the children; return the number of live sockets once every child reported."""
        for proc in self.procs:
            proc.start()
        loop = asyncio.get_running_loop()
        reported = 0
        deadline = time.monotonic() + timeout
        while reported < len(self.procs) and time.monotonic() < deadline:
            item = await loop.run_in_executor(None, self._get, 1.0)
            if item is not None and item[0] == "connected":
                reported += 1
                self.connected += item[1]
        return self.connected

    def _get(self, timeout: float) -> Any:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    async def wait_all(self, order_id: str, timeout: float) -> list[float]:
        """The receipts of ``order_id``'s order.paid, once every socket has it (or the timeout)."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        while len(self.receipts.get(order_id, [])) < self.connected and time.monotonic() < deadline:
            item = await loop.run_in_executor(None, self._get, 0.5)
            if item is not None and item[0] != "connected":
                self.receipts.setdefault(item[0], []).append(item[1])
        return list(self.receipts.get(order_id, []))

    async def close(self) -> None:
        """Stop the children (bounded)."""
        self.stop_event.set()
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)


async def h5(session: aiohttp.ClientSession, base: str, token: str, path: str, body: Any) -> Any:
    """One H5 request as the diner's phone sends it."""
    async with session.post(f"{base}/api/v1/h5/{path}", json=body,
                            headers={"Authorization": f"Bearer {token}"}) as r:
        text = await r.text()
        if r.status not in (200, 201):
            raise RuntimeError(f"POST /h5/{path} -> {r.status}: {text[:300]}")
        return json.loads(text)


async def run(args: argparse.Namespace) -> int:
    raise_nofile(args.sockets * 2 + 256)
    work = Path(tempfile.mkdtemp(prefix="p7-"))
    redis = start_redis(work)
    coordinator = start_coordinator(redis.url, work / "coordinator")
    sandbox = SandboxProvider(work / "sandbox-pay")
    master: Terminal | None = None
    db: ErpDatabase | None = None
    listeners: Listeners | None = None
    try:
        await sandbox.start()
        base = coordinator.url
        print(machine_line())
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            api = Api(base, session)
            await api.store(STORE)
            qr = await api.table(STORE, "T1")
            await sandbox.configure(base, ADMIN_TOKEN, STORE)
            db = ErpDatabase(work / "erp.sqlite")
            db.put_table("T1", "T1")
            db.put_dish("tea", "茶", 900)
            master = Terminal(base, STORE, await api.terminal(STORE, "收银台", master=True), db, name="收银台",
                              master=True)
            await master.start()
            await master.wait_connected(15)
            erp = round(args.sockets * args.erp_share)
            tokens = [await api.terminal(STORE, f"pos-{i}") for i in range(erp)]
            tokens += [await api.h5_session(qr) for _ in range(args.sockets - erp)]
            listeners = Listeners(base.replace("http", "ws", 1) + "/api/v1/ws", tokens, args.sub_procs)
            live = await listeners.start()
            print(f"{live} sockets in {len(listeners.procs)} processes on store {STORE} ({erp} ERP terminals, "
                  f"{args.sockets - erp} H5 sessions); {args.payments} payments, one at a time")
            diner = await api.h5_session(qr)
            control = {"Authorization": f"Bearer {sandbox.control_token_file.read_text().strip()}"}
            latencies: list[float] = []
            upper: list[float] = []
            first: list[float] = []  # per payment: the first socket's receipt (the path before the fan-out)
            spread: list[float] = []  # per payment: last - first receipt (the fan-out to every socket)
            missing = 0
            done = 0
            deadline = time.monotonic() + args.budget
            cpu = CpuWindow({"coordinator": coordinator.pid, **({"sandbox": sandbox.pid} if sandbox.pid else {})})
            cpu.start()
            for _ in range(args.payments):
                if time.monotonic() > deadline:
                    print("budget reached: stopping early")
                    break
                order = await master.open_order("T1", ITEMS)
                grant = await h5(session, base, diner, "checkout", {})
                started = await h5(session, base, diner, "payments/start",
                                   {"token": grant["lock"]["token"], "provider": "wechatpay"})
                no = started["out_trade_no"]
                asked = time.time() * 1000
                async with session.post(f"{sandbox.url}/sandbox/trades/{no}/pay", json={"outcome": "paid"},
                                        headers=control) as r:
                    if r.status != 200:
                        raise RuntimeError(f"sandbox pay {no}: {r.status} {await r.text()}")
                receipts = await listeners.wait_all(order["order_id"], 10)
                async with session.get(f"{sandbox.url}/sandbox/trades/{no}", headers=control) as r:
                    trade = await r.json()
                paid_at = trade.get("paid_at_ms") or (trade.get("trade") or {}).get("paid_at_ms")
                if paid_at is None:
                    raise RuntimeError(f"sandbox trade {no} has no paid_at_ms: {trade}")
                missing += listeners.connected - len(receipts)
                latencies += [at - paid_at for at in receipts]
                if receipts:
                    first.append(min(receipts) - paid_at)
                    spread.append(max(receipts) - min(receipts))
                upper += [at - asked for at in receipts]
                done += 1
            cpu.stop()
            usage = ", ".join(f"{name} {fmt(cores, '.2f')} cores" for name, cores in cpu.used.items())
            usage += f"; machine {fmt(cpu.machine * 100, '.0f')} % busy"
            print(f"{done} payments, {len(latencies)} receipts, missing {missing}")
            if latencies:
                print(f"notification -> order.paid on every socket: p50 {fmt(percentile(latencies, 50))} ms, "
                      f"p99 {fmt(percentile(latencies, 99))} ms, max {fmt(max(latencies))} ms "
                      f"(target p99 <= 50 ms: {'yes' if percentile(latencies, 99) <= 50 else 'no'})")
                print(f"from the pay request (upper bound): p50 {fmt(percentile(upper, 50))} ms, "
                      f"p99 {fmt(percentile(upper, 99))} ms")
                print(f"first socket (verify + order.pay + publish): p50 {fmt(percentile(first, 50))} ms, "
                      f"p99 {fmt(percentile(first, 99))} ms; fan-out first -> last socket: "
                      f"p50 {fmt(percentile(spread, 50))} ms, p99 {fmt(percentile(spread, 99))} ms")
            print(f"cpu: {usage}")
            return 0 if missing == 0 and latencies else 1
    finally:
        if listeners is not None:
            await listeners.close()
        if master is not None:
            await master.stop()
        if db is not None:
            db.close()
        await sandbox.stop()
        coordinator.stop()
        redis.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--payments", type=int, default=100)
    p.add_argument("--sockets", type=int, default=200)
    p.add_argument("--erp-share", type=float, default=0.4)
    p.add_argument("--sub-procs", type=int, default=2, help="processes holding the listening sockets")
    p.add_argument("--budget", type=float, default=300.0, help="seconds for the whole run at most")
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
