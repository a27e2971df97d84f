"""The randomized concurrent workload: ERP terminals and H5 sessions doing lock work across several
coordinator processes over HTTP, subscribers recording every event, and faults injected mid-run.

The workload is also the ERP (the system of record): ``ErpModel`` holds each order's version and
status, pushes new versions, opens a new order on a table whose order was paid or cancelled, and
answers the coordinator's RPCs through the master terminal's socket. Its writes to one order are
serialised (as a real ERP's database would), so a late push can never reopen an order it knows
is paid. Everything the coordinator does is judged by ``checker.py`` from the recorded history,
not by this module: actors only pick plausible — and deliberately implausible — requests.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordinator.redis_embedded import EmbeddedRedis
from coordinator.store import keys
from coordinator.store.redis_conn import open_redis
from tests.support.history.clients import (
    Api,
    Processes,
    Subscriber,
    sample_clock,
    seed_store,
)
from tests.support.history.recorder import Fault, History

KINDS = ("order", "presettle", "payment")


@dataclass
class Plan:
    """How big the run is and what goes wrong during it."""

    ops: int = 3000
    erp_actors: int = 4
    h5_actors: int = 6
    tables: int = 4
    processes: int = 2
    #: (fraction of ops, fault): "kill" a coordinator (and refill its slot), "redis" restart,
    #: "failover": SIGKILL the primary of a SentinelGroup (given as ``redis``) until a replica is promoted.
    faults: list[tuple[float, str]] = field(default_factory=lambda: [(0.35, "kill"), (0.65, "redis")])
    redis_down_seconds: float = 1.5
    seed: int | None = None
    #: Upper bound on the whole run, whatever ``ops`` says.
    max_seconds: float = 600.0
    think_ms: tuple[int, int] = (0, 15)


def order_body(order_id: str, table_id: str, version: int, status: str = "open") -> dict[str, Any]:
    """The content of an order at a version: deterministic, so every copy of (order, version) agrees."""
    lines = min(version, 12)
    items = [{"line_id": f"l{i}", "sku": f"d{i % 5}", "name": f"菜{i % 5}", "qty": 1 + (version // 12 if i == 1 else 0),
              "unit_price_cents": 100 * (i % 5 + 1), "source": "erp"} for i in range(1, lines + 1)]
    total = sum(item["qty"] * item["unit_price_cents"] for item in items)
    return {"order_id": order_id, "table_id": table_id, "version": version, "status": status, "items": items,
            "total_cents": total}


class ErpModel:
    """The ERP's own orders: one open order per table at a time."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.orders: dict[str, dict[str, Any]] = {}
        self.current: dict[str, str] = {}
        self.counter: dict[str, int] = {}
        self.locks: dict[str, asyncio.Lock] = {}

    def lock(self, order_id: str) -> asyncio.Lock:
        """The ERP's write lock on one order."""
        return self.locks.setdefault(order_id, asyncio.Lock())

    def body(self, order_id: str, status: str | None = None) -> dict[str, Any]:
        """The order as the ERP has it now."""
        o = self.orders[order_id]
        return order_body(order_id, o["table_id"], o["version"], status or o["status"])

    async def push(self, actor: Actor, order_id: str, *, status: str = "open", attempts: int = 1) -> bool:
        """Bump the order's version (optionally closing it) and PUT it; True once stored."""
        o = self.orders[order_id]
        o["version"] += 1
        if status != "open":
            o["status"] = status
        for _ in range(attempts):
            op = await actor.call("PUT", f"/stores/{self.run.store_id}/orders/{order_id}", self.body(order_id))
            if op.status == 200 or (op.status == 409 and (op.resp or {}).get("error", {}).get("code") == "STALE_VERSION"):
                return True
            await asyncio.sleep(0.2)
        return False

    async def open_table(self, actor: Actor, table_id: str) -> None:
        """Open the table's next order and push it until the coordinator has it (bounded)."""
        self.counter[table_id] = self.counter.get(table_id, 0) + 1
        order_id = f"{table_id}-{self.counter[table_id]}"
        self.orders[order_id] = {"table_id": table_id, "version": 0, "status": "open"}
        async with self.lock(order_id):
            await self.push(actor, order_id, attempts=60)
        self.current[table_id] = order_id

    def closed(self, order_id: str, status: str) -> None:
        """The order is paid or cancelled: the table gets a new one."""
        self.orders[order_id]["status"] = status
        table = self.orders[order_id]["table_id"]
        if self.current.get(table) == order_id:
            self.run.reopen.add(table)

    # --- the master terminal's answers ------------------------------------------------------

    async def rpc(self, method: str, params: dict[str, Any]) -> tuple[str, Any]:
        """Answer one RPC as the ERP would (and, rarely, drop the socket mid-call)."""
        if random.random() < self.run.master_drop_p:
            return "drop", None
        if method == "menu.list":
            return "result", {"items": [{"sku": f"d{i}", "name": f"菜{i}", "unit_price_cents": 100 * (i + 1)}
                                        for i in range(5)]}
        if method == "order.merge":
            return await self.merge(str(params.get("into_order_id")), params)
        order_id = params.get("order_id")
        if method == "order.add_items" and order_id is None:
            order_id = self.current.get(params.get("table_id", ""))
        if order_id not in self.orders:
            return "error", {"code": "NOT_FOUND", "message": "未找到"}
        async with self.lock(order_id):
            o = self.orders[order_id]
            if method == "order.fetch":
                return "result", self.body(order_id)
            if o["status"] != "open":
                return "error", {"code": "ORDER_CLOSED", "message": "订单已结束"}
            if method == "order.add_items":
                o["version"] += 1
                return "result", self.body(order_id)
            if method == "order.pay":
                body = self.body(order_id)
                if params.get("version") != o["version"]:
                    return "error", {"code": "STALE_VERSION", "message": "版本不符", "order": body}
                if params.get("amount_cents") != body["total_cents"]:
                    return "error", {"code": "AMOUNT_MISMATCH", "message": "金额不符"}
                self.closed(order_id, "paid")
                return "result", self.body(order_id, "paid")
            if method == "order.move":
                to, before = params["to_table_id"], o["table_id"]
                if self.current.get(to) and self.orders[self.current[to]]["status"] == "open":
                    return "error", {"code": "ORDER_CLOSED", "message": "目标桌已有订单"}
                o["table_id"], o["version"] = to, o["version"] + 1
                self.current[to] = order_id
                if self.current.get(before) == order_id:
                    del self.current[before]
                    self.run.reopen.add(before)
                return "result", self.body(order_id)
        return "error", {"code": "NOT_FOUND", "message": f"unknown method {method}"}

    async def merge(self, into: str, params: dict[str, Any]) -> tuple[str, Any]:
        """``order.merge``: the sources closed (cancelled) and the target bumped, all under the orders' write locks."""
        sources = [str(o) for o in params.get("from_order_ids") or []]
        if any(o not in self.orders for o in [into, *sources]):
            return "error", {"code": "NOT_FOUND", "message": "未找到"}
        ids = sorted({into, *sources})
        for order_id in ids:  # one order of acquisition: two merges never wait on each other in a cycle
            await self.lock(order_id).acquire()
        try:
            if any(self.orders[o]["status"] != "open" for o in ids):
                return "error", {"code": "ORDER_CLOSED", "message": "订单已结束"}
            for source in sources:
                self.orders[source]["version"] += 1
                self.closed(source, "cancelled")
            self.orders[into]["version"] += 1
            return "result", {"into": self.body(into), "sources": [self.body(o) for o in sources]}
        finally:
            for order_id in ids:
                self.lock(order_id).release()


class Actor:
    """One ERP terminal or H5 session issuing requests."""

    def __init__(self, run: Run, name: str, role: str, token: str) -> None:
        self.run = run
        self.name = name
        self.role = role
        self.token = token
        #: Locks this actor was granted: (order_id, kind) -> lock with its token.
        self.held: dict[tuple[str, str], dict[str, Any]] = {}
        self.old_tokens: list[tuple[str, str, dict[str, Any]]] = []

    async def call(self, method: str, path: str, body: Any = None):
        """One recorded request as this actor."""
        return await self.run.api.call(self.name, self.role, self.token, method, path, body)

    def remember(self, order_id: str, kind: str, lock: dict[str, Any]) -> None:
        """Keep a granted lock (and its token, for later stale or foreign use)."""
        self.held[(order_id, kind)] = lock
        self.run.tokens.append((self.name, order_id, kind, lock))
        if len(self.run.tokens) > 500:
            del self.run.tokens[:100]

    def forget(self, order_id: str, kind: str) -> None:
        """The lock is gone (released, lost, paid)."""
        lock = self.held.pop((order_id, kind), None)
        if lock is not None:
            self.old_tokens.append((order_id, kind, lock))
            del self.old_tokens[:-20]


class Run:
    """One workload run: processes, clients, actors, faults and the history they record."""

    def __init__(self, plan: Plan, redis: EmbeddedRedis, data_dir: Path) -> None:
        self.plan = plan
        self.redis = redis
        self.rng_seed = plan.seed if plan.seed is not None else random.randrange(2**32)
        random.seed(self.rng_seed)
        self.history = History(store_id=f"s-hist-{uuid.uuid4().hex[:8]}")
        self.store_id = self.history.store_id
        self.processes = Processes(redis.url, data_dir, env={
            "TABLELOCK_EVENT_RETENTION": "10000000", "TABLELOCK_LOG_LEVEL": "WARNING",
        })
        self.api: Api = None  # type: ignore[assignment]
        self.erp = ErpModel(self)
        self.tokens: list[tuple[str, str, str, dict[str, Any]]] = []
        self.reopen: set[str] = set()
        self.master_drop_p = 0.0
        self.subscribers: list[Subscriber] = []
        self.issued = 0
        self.started = 0.0
        self.actors_done = False

    # --- set-up -----------------------------------------------------------------------------

    async def setup(self) -> tuple[list[Actor], list[Actor]]:
        """Start the processes, seed the store, connect master and subscribers, open every table."""
        plan = self.plan
        await asyncio.to_thread(self.processes.start, plan.processes)
        self.api = Api(self.history, self.processes)
        tables = [f"T{i + 1}" for i in range(plan.tables)]
        # Tables with no order at the start: somewhere for a party to move to (SPEC §11).
        self.tables = tables + [f"T{plan.tables + i + 1}" for i in range(2)]
        names = [("收银台", True)] + [(f"终端{i}", False) for i in range(plan.erp_actors)] + \
            [(f"观察{i}", False) for i in range(plan.processes)]
        config = {"h5_payment_lock_seconds": 2, "erp_payment_lock_seconds": 5, "order_lock_seconds": 5,
                  "presettle_lock_seconds": 30, "erp_disconnect_grace_seconds": 5, "erp_rpc_timeout_ms": 1000}
        terminals, qrs = await seed_store(self.api, self.store_id, tables=self.tables, terminals=names, config=config)
        self.history.terminals = {t["terminal_id"]: t["token"] for t in terminals}
        master, workers, observers = terminals[0], terminals[1:1 + plan.erp_actors], terminals[1 + plan.erp_actors:]
        erp = [Actor(self, f"erp{i}", "erp", t["token"]) for i, t in enumerate(workers)]
        h5 = []
        for i in range(plan.h5_actors):
            table = tables[i % len(tables)]
            op = await self.api.call(f"h5-{i}", "h5", None, "POST", "/h5/sessions", {"qr_token": qrs[table]})
            assert op.status == 201, op.resp
            token = op.resp["session_token"]
            self.history.sessions[f"h5-{i}"] = {"session_id": token.split("~")[3], "token": token, "table_id": table}
            h5.append(Actor(self, f"h5-{i}", "h5", token))
        for i, t in enumerate(observers):
            self.subscribers.append(Subscriber(f"observer{i}", t["token"], self.history, self.processes, prefer=i))
        self.subscribers.append(Subscriber("h5-watch", h5[0].token, self.history, self.processes, prefer=1))
        self.history.h5_subscribers["h5-watch"] = h5[0].name
        self.master = Subscriber("master", master["token"], self.history, self.processes, rpc=self.erp.rpc,
                                 record=False)
        for sub in [*self.subscribers, self.master]:
            sub.start()
        for sub in [*self.subscribers, self.master]:
            await asyncio.wait_for(sub.hello.wait(), 10)
        for table in tables:
            await self.erp.open_table(erp[0], table)
        redis = await open_redis(self.redis.url)
        try:
            await sample_clock(self.history, redis)
        finally:
            await redis.aclose()
        return erp, h5

    # --- the actors -------------------------------------------------------------------------

    def _some_order(self) -> str:
        if random.random() < 0.03 and self.erp.orders:
            return random.choice(list(self.erp.orders))  # maybe closed: ORDER_CLOSED
        return random.choice(list(self.erp.current.values()))

    async def erp_step(self, actor: Actor) -> None:
        """One random ERP terminal action."""
        s = self.store_id
        r = random.random()
        if actor.held and r < 0.35:
            (order_id, kind), lock = random.choice(list(actor.held.items()))
            choice = random.random()
            if choice < 0.12:
                actor.forget(order_id, kind)  # the waiter walks away: the lock runs out (lock.expired)
            elif kind == "payment" and choice < 0.55:
                await self.erp_pay(actor, order_id, lock)
            elif choice < 0.75:
                op = await actor.call("POST", f"/stores/{s}/orders/{order_id}/locks/{kind}/release", {"token": lock["token"]})
                if op.status == 200:
                    actor.forget(order_id, kind)
            else:
                op = await actor.call("POST", f"/stores/{s}/orders/{order_id}/locks/{kind}/renew", {"token": lock["token"]})
                if op.status == 200:
                    actor.held[(order_id, kind)] = op.resp["lock"]
                elif op.status == 409:
                    actor.forget(order_id, kind)
            return
        if r < 0.75:
            order_id = self._some_order()
            kind = random.choices(KINDS, weights=(4, 2, 4))[0]
            body: dict[str, Any] = {"kind": kind}
            if random.random() < 0.3 and order_id in self.erp.orders:
                body["expected_version"] = max(1, self.erp.orders[order_id]["version"] - random.randint(0, 1))
            op = await actor.call("POST", f"/stores/{s}/orders/{order_id}/locks", body)
            error = (op.resp or {}).get("error") or {} if op.status == 409 else {}
            if error.get("force_allowed") and random.random() < 0.2:
                op = await actor.call("POST", f"/stores/{s}/orders/{order_id}/locks", {**body, "force": True})
            if op.status == 201 and op.resp.get("enforced", True):
                actor.remember(order_id, kind, op.resp["lock"])
                if kind in ("payment", "presettle"):
                    actor.forget(order_id, "order")  # converted
            elif op.status == 409 and error.get("code") == "ORDER_CLOSED":
                self.erp.closed(order_id, "closed")
            return
        if r < 0.85:
            order_id = random.choice(list(self.erp.current.values()))
            status = "cancelled" if random.random() < 0.04 else "open"
            async with self.erp.lock(order_id):
                if self.erp.orders[order_id]["status"] == "open":
                    if await self.erp.push(actor, order_id, status=status) and status != "open":
                        self.erp.closed(order_id, status)
            return
        if r < 0.89:
            await self.stale_completion(actor)
            return
        if r < 0.92:
            await self.table_op(actor)
            return
        order_id = self._some_order()
        if random.random() < 0.5:
            await actor.call("POST", f"/stores/{s}/orders/{order_id}/check",
                             {"action": random.choice(["add_items", "accept_items", "modify", "presettle", "pay"])})
        else:
            await actor.call("GET", random.choice([f"/stores/{s}/orders/{order_id}", f"/stores/{s}/locks"]))

    async def table_op(self, actor: Actor) -> None:
        """A move (换桌) to a table without an order, or a merge (并桌) of two tables' orders; sometimes forced."""
        s = self.store_id
        force = random.random() < 0.3
        current = [o for o in self.erp.current.values() if self.erp.orders[o]["status"] == "open"]
        # T1's party stays put: the h5-watch subscriber's expected events are T1's (checker._visible).
        movable = [o for o in current if self.erp.orders[o]["table_id"] != self.tables[0]]
        free = [t for t in self.tables if t not in self.erp.current]
        if free and movable and random.random() < 0.6:
            order_id = random.choice(movable)
            await actor.call("POST", f"/stores/{s}/orders/{order_id}/move", {"to_table_id": random.choice(free), "force": force})
        elif movable and len(current) >= 2:
            source = random.choice(movable)
            into = random.choice([o for o in current if o != source])
            await actor.call("POST", f"/stores/{s}/orders/{into}/merge", {"from_order_ids": [source], "force": force})

    async def erp_pay(self, actor: Actor, order_id: str, lock: dict[str, Any]) -> None:
        """Complete the terminal's own payment (usually right, sometimes with a wrong amount or version)."""
        version = lock["version"]
        body = order_body(order_id, self.erp.orders[order_id]["table_id"], version)
        payment = {"token": lock["token"], "amount_cents": body["total_cents"], "version": version,
                   "payment_ref": f"erp-{uuid.uuid4().hex[:10]}"}
        wrong = random.random()
        if wrong < 0.1:
            payment["amount_cents"] += 1
        elif wrong < 0.15:
            payment["version"] = max(1, version - 1)
        await self.erp_complete(actor, order_id, payment, replay=random.random() < 0.3)

    async def erp_complete(self, actor: Actor, order_id: str, payment: dict[str, Any], *, replay: bool = False) -> None:
        """Send a terminal's completion as the ERP: under the order's ERP lock, and the ERP learns its outcome.

        A terminal completing a payment is the ERP itself, so whatever the coordinator accepted — even
        a completion meant to be refused — the ERP records, and never pushes that order open again.
        """
        async with self.erp.lock(order_id):
            if self.erp.orders[order_id]["status"] != "open":
                actor.forget(order_id, "payment")
                return
            op = await actor.call("POST", f"/stores/{self.store_id}/orders/{order_id}/payments", payment)
            if op.status == 200:
                actor.forget(order_id, "payment")
                self.erp.closed(order_id, "paid")
                if replay:  # a retry of the same payment is a replay, never a second one
                    await actor.call("POST", f"/stores/{self.store_id}/orders/{order_id}/payments", payment)
            elif op.status == 409 and (op.resp or {}).get("error", {}).get("code") in ("LOCK_LOST", "ORDER_CLOSED"):
                actor.forget(order_id, "payment")
            elif op.status is None or op.status >= 500:
                # Unknown outcome: ask the coordinator (bounded) before the ERP writes this order again.
                for _ in range(40):
                    check = await actor.call("GET", f"/stores/{self.store_id}/orders/{order_id}")
                    if check.status == 200:
                        if check.resp["order"]["status"] == "paid":
                            self.erp.closed(order_id, "paid")
                        break
                    await asyncio.sleep(0.25)

    async def stale_completion(self, actor: Actor) -> None:
        """Try to complete with a token that should not work: expired, released, forced away, or another's."""
        if not self.tokens:
            return
        owner, order_id, kind, lock = random.choice(self.tokens)
        version = lock.get("version") or 1
        body = order_body(order_id, self.erp.orders[order_id]["table_id"], version)
        payment = {"token": lock["token"], "amount_cents": body["total_cents"], "version": version,
                   "payment_ref": f"stale-{uuid.uuid4().hex[:10]}"}
        if actor.role == "erp":
            await self.erp_complete(actor, order_id, payment)
        else:
            await actor.call("POST", "/h5/payments", payment)

    async def h5_step(self, actor: Actor) -> None:
        """One random diner action."""
        r = random.random()
        if actor.held and r < 0.5:
            (order_id, kind), lock = next(iter(actor.held.items()))
            choice = random.random()
            if choice < 0.6:
                order = self.erp.orders.get(order_id)
                body = order_body(order_id, order["table_id"], lock["version"]) if order else None
                payment = {"token": lock["token"], "amount_cents": body["total_cents"] if body else 1,
                           "version": lock["version"], "payment_ref": f"h5-{uuid.uuid4().hex[:10]}"}
                if random.random() < 0.1:
                    payment["amount_cents"] += 7
                op = await actor.call("POST", "/h5/payments", payment)
                if op.status == 200:
                    self.erp.closed(order_id, "paid")
                actor.forget(order_id, kind)
            elif choice < 0.8:
                await actor.call("POST", "/h5/checkout/cancel", {"token": lock["token"]})
                actor.forget(order_id, kind)
            else:
                actor.forget(order_id, kind)  # the diner walks away for a while: the lock expires
                await asyncio.sleep(random.uniform(1.0, 3.0))
            return
        if r < 0.75:
            op = await actor.call("POST", "/h5/checkout")
            if op.status == 201 and op.resp.get("enforced", True):
                lock = op.resp["lock"]
                actor.held.clear()
                actor.remember(lock["order_id"], "payment", lock)
            return
        if r < 0.85:
            await actor.call("GET", "/h5/table")
        elif r < 0.92:
            await self.stale_completion(actor)
        elif r < 0.97:
            await actor.call("POST", "/h5/items", {"items": [{"sku": f"d{random.randrange(5)}", "qty": 1}],
                                                   "request_id": uuid.uuid4().hex[:16]})
        else:
            await actor.call("GET", "/h5/menu")

    async def _actor_loop(self, actor: Actor, step: Any) -> None:
        deadline = self.started + self.plan.max_seconds
        while self.issued < self.plan.ops and time.monotonic() < deadline:
            if self.reopen:
                table = self.reopen.pop()
                if self.erp.current.get(table) and self.erp.orders[self.erp.current[table]]["status"] != "open":
                    await self.erp.open_table(self.erp_actor, table)
            self.issued += 1
            await step(actor)
            low, high = self.plan.think_ms
            await asyncio.sleep(random.uniform(low, high) / 1000)

    # --- faults -----------------------------------------------------------------------------

    async def _faults(self) -> None:
        # A fault, once begun, is carried through (Redis is always restarted); none begins after the actors stop.
        for fraction, kind in sorted(self.plan.faults):
            at = int(fraction * self.plan.ops)
            while self.issued < at:
                if self.actors_done or time.monotonic() > self.started + self.plan.max_seconds:
                    return
                await asyncio.sleep(0.02)
            if self.actors_done:
                return
            fault = Fault(kind, time.monotonic())
            self.history.faults.append(fault)
            if kind == "kill":
                slot = random.choice(self.processes.alive())
                await asyncio.to_thread(self.processes.kill, slot)
                fault.detail = f"SIGKILL process in slot {slot}"
                await asyncio.sleep(1.0)
                await asyncio.to_thread(self.processes.refill, slot)
            elif kind == "redis":
                await asyncio.to_thread(self.redis.stop)
                await asyncio.sleep(self.plan.redis_down_seconds)
                await asyncio.to_thread(self.redis.start)
                fault.detail = f"redis stopped for {self.plan.redis_down_seconds}s and restarted (AOF)"
            elif kind == "failover":  # self.redis is a tests.support.sentinel.SentinelGroup
                seconds = await asyncio.to_thread(self.redis.fail_over)
                fault.detail = f"primary SIGKILLed, replica promoted after {seconds:.2f}s"
            fault.t1 = time.monotonic()
            await self._resample_clock()

    async def _resample_clock(self) -> None:
        """A fresh (monotonic, Redis ms) sample after a fault (bounded; skipped if Redis is not back)."""
        for _ in range(20):
            try:
                redis = await open_redis(self.redis.url)
            except Exception:  # not back yet
                await asyncio.sleep(0.25)
                continue
            try:
                await sample_clock(self.history, redis)
                return
            except Exception:
                await asyncio.sleep(0.25)
            finally:
                await redis.aclose()

    # --- the whole run ----------------------------------------------------------------------

    async def execute(self) -> History:
        """Run the plan; return the recorded history (with the final stream and lock board)."""
        erp, h5 = await self.setup()
        self.erp_actor = erp[0]
        self.started = time.monotonic()
        self.master_drop_p = 0.01
        tasks = [asyncio.create_task(self._actor_loop(a, self.erp_step)) for a in erp]
        tasks += [asyncio.create_task(self._actor_loop(a, self.h5_step)) for a in h5]
        faults = asyncio.create_task(self._faults())
        try:
            await asyncio.gather(*tasks)
        finally:
            self.actors_done = True
            await faults
        self.master_drop_p = 0.0
        await self.finish()
        return self.history

    async def finish(self) -> None:
        """Let due expiries happen, wait for the subscribers to catch up, read the stream and the board."""
        await asyncio.sleep(1.0)
        redis = await open_redis(self.redis.url)
        try:
            await sample_clock(self.history, redis)
            seq = int(await redis.get(keys.seq(self.store_id)) or 0)
            for sub in self.subscribers:
                await sub.caught_up(seq, 15)
                self.history.until[sub.name] = seq
            # The board must be read between two equal seqs to agree with the stream up to that seq.
            for _ in range(50):
                before = int(await redis.get(keys.seq(self.store_id)) or 0)
                board = await self.api.call("admin", "admin", _admin_token(), "GET",
                                            f"/admin/stores/{self.store_id}/locks")
                after = int(await redis.get(keys.seq(self.store_id)) or 0)
                if board.status == 200 and before == after:
                    self.history.final_locks = board.resp["locks"]
                    self.history.final_seq = after
                    self.history.final_now = int(board.resp.get("now") or 0)
                    break
                await asyncio.sleep(0.05)
            if not self.history.final_now:
                seconds, micros = await redis.time()
                self.history.final_now = seconds * 1000 + micros // 1000
            entries: list[Any] = []
            low = "-"
            while True:
                page = await redis.xrange(keys.events(self.store_id), min=low, max="+", count=5000)
                entries += page
                if len(page) < 5000:
                    break
                low = "(" + page[-1][0].decode()
            self.history.stream = [json.loads(fields[b"e"]) for _, fields in entries]
        finally:
            await redis.aclose()
        for sub in [*self.subscribers, self.master]:
            await sub.stop()
        await self.api.close()
        self.history.notes.update(seed=self.rng_seed, statuses=dict(self.api.statuses), issued=self.issued)

    def close(self) -> None:
        """Stop the processes (blocking)."""
        self.processes.stop_all()


def _admin_token() -> str:
    from tests.support.app import ADMIN_TOKEN

    return ADMIN_TOKEN


async def run_workload(plan: Plan, redis: EmbeddedRedis, data_dir: Path) -> History:
    """Run ``plan`` against fresh coordinator processes on ``redis``; the processes are stopped after."""
    run = Run(plan, redis, data_dir)
    try:
        return await run.execute()
    finally:
        for sub in [*run.subscribers, *([run.master] if hasattr(run, "master") else [])]:
            await sub.stop()  # idempotent: already stopped after a complete run
        if run.api is not None:
            await run.api.close()
        await asyncio.to_thread(run.close)
