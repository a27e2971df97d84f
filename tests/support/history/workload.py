"""The randomized concurrent workload: ERP terminals and H5 sessions doing lock work across several
coordinator processes over HTTP, subscribers recording every event, and faults injected mid-run.

The workload is also the ERP (the system of record, ``erp_model.py``): it pushes new versions,
opens a new order on a table whose order was paid or cancelled, and answers the coordinator's RPCs.
The actors' steps are in ``steps.py`` (locks, payments, table operations) and ``shares_workload.py``
(split bill, SPEC §10). Everything the coordinator does is judged by ``checker.py`` from the
recorded history, not by these modules: actors only pick plausible — and deliberately
implausible — requests.
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
from tests.support.history.erp_model import ErpModel, order_body
from tests.support.history.provider import PROCESS_ENV, ProviderTraffic
from tests.support.history.recorder import Fault, History
from tests.support.history.shares_workload import ShareTraffic
from tests.support.history.steps import Steps

#: ``order_body`` lives in ``erp_model`` now; it stays importable from here (tests/test_faults.py).
__all__ = ["Actor", "Plan", "Run", "order_body", "run_workload"]


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
    #: Diners pay through the sandbox provider (SPEC §9) instead of the gone self-declared completion.
    providers: bool = False
    #: Upper bound on the quiet period after the actors stop (outbox, poller, refunds settle).
    settle_seconds: float = 30.0
    #: Split bill (SPEC §10): the share of diners' and terminals' steps spent on shares (needs ``providers``).
    shares: float = 0.0



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


class Run(Steps):
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
            **(PROCESS_ENV if plan.providers else {}),
        })
        self.provider = ProviderTraffic(self, data_dir) if plan.providers else None
        self.shares = ShareTraffic(self, plan.shares) if plan.providers and plan.shares > 0 else None
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
        if plan.providers:
            config.update(h5_payment_window_seconds=60, auto_refund_surplus=True)
        terminals, qrs = await seed_store(self.api, self.store_id, tables=self.tables, terminals=names, config=config)
        if self.provider is not None:
            await self.provider.setup()
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
        """Let payments settle and due expiries happen, wait for the subscribers, read the stream and the board."""
        if self.provider is not None:
            self.history.notes["settle_seconds"] = round(await self.provider.settle(self.plan.settle_seconds), 1)
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
            await self._final_orders(redis)
        finally:
            await redis.aclose()
        if self.provider is not None:
            await self.provider.collect()
        for sub in [*self.subscribers, self.master]:
            await sub.stop()
        await self.api.close()
        self.history.notes.update(seed=self.rng_seed, statuses=dict(self.api.statuses), issued=self.issued)

    async def _final_orders(self, redis: Any) -> None:
        """Each order's split bill as Redis holds it at the end, and the ERP's books (SPEC §10)."""
        for order_id in self.erp.orders:
            raw = await redis.hgetall(keys.order(self.store_id, order_id))
            f = {k.decode(): v.decode() for k, v in raw.items()}
            if not f:
                continue
            self.history.final_orders[order_id] = {
                "status": f.get("status"), "version": int(f.get("version") or 0), "table_id": f.get("table_id"),
                "total_cents": int(f.get("total") or 0), "paid_cents": int(f.get("paid_cents") or 0),
                "shares": json.loads(f.get("shares") or "[]"),
                "refs": {k[4:]: int(v) for k, v in f.items() if k.startswith("ref:")},
            }
        self.history.erp_books = self.erp.books()

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
        if run.provider is not None:
            await run.provider.close()
        await asyncio.to_thread(run.close)
