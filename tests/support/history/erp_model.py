"""The ERP of the history workload (the system of record): each order's version, status and the
share payments it booked, pushed to the coordinator and answering its RPCs through the master
terminal's socket. Its writes to one order are serialised (as a real ERP's database would), so a
late push can never reopen an order it knows is paid.

Split bill (SPEC §10): ``order.pay`` with a ``share`` books one share (idempotent on its
payment_ref; the version must be the ERP's, the amount within what remains); the order is paid
when its shares reach the total. A whole-order ``order.pay`` takes what the shares left due. A
terminal paying its own share at the till is the ERP itself: ``book_share`` records it.
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.support.history.workload import Actor, Run


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
        self.orders[order_id] = {"table_id": table_id, "version": 0, "status": "open", "shares": {}, "uncertain": False}
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
            if method == "order.pay" and o.get("paid_ref") and o["paid_ref"] == params.get("payment_ref"):
                return "result", self.body(order_id, "paid")  # an outbox retry of a payment already booked
            if method == "order.pay" and params.get("payment_ref") in o["shares"]:
                return "result", self.body(order_id)  # an outbox retry of a share already booked
            if o["status"] != "open":
                return "error", {"code": "ORDER_CLOSED", "message": "订单已结束"}
            if method == "order.pay" and params.get("share") is not None:
                return self._pay_share(order_id, params)
            if method == "order.add_items":
                o["version"] += 1
                return "result", self.body(order_id)
            if method == "order.pay":
                body = self.body(order_id)
                if params.get("version") != o["version"]:
                    return "error", {"code": "STALE_VERSION", "message": "版本不符", "order": body}
                if params.get("amount_cents") != body["total_cents"] - self.paid_cents(order_id):
                    return "error", {"code": "AMOUNT_MISMATCH", "message": "金额不符"}
                o["paid_ref"] = params.get("payment_ref")
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

    # --- split bill (SPEC §10) ------------------------------------------------------------------

    def paid_cents(self, order_id: str) -> int:
        """What the ERP has booked in shares of the order."""
        return sum(self.orders[order_id]["shares"].values())

    def _pay_share(self, order_id: str, params: dict[str, Any]) -> tuple[str, Any]:
        """A partial ``order.pay`` (the caller holds the order's write lock)."""
        o, body = self.orders[order_id], self.body(order_id)
        amount, ref = int(params.get("amount_cents") or 0), str(params.get("payment_ref"))
        if params.get("version") != o["version"]:
            return "error", {"code": "STALE_VERSION", "message": "版本不符", "order": body}
        if amount < 1 or self.paid_cents(order_id) + amount > body["total_cents"]:
            return "error", {"code": "AMOUNT_MISMATCH", "message": "金额不符"}
        return "result", self.book_share(order_id, ref, amount)

    def book_share(self, order_id: str, ref: str, amount: int) -> dict[str, Any]:
        """Book one share's payment (a terminal at the till, or a partial order.pay); paid at the total."""
        o = self.orders[order_id]
        o["shares"][ref] = amount
        if self.paid_cents(order_id) >= order_body(order_id, o["table_id"], o["version"])["total_cents"]:
            o["paid_ref"] = ref
            self.closed(order_id, "paid")
        return self.body(order_id)

    def books(self) -> dict[str, dict[str, Any]]:
        """The ERP's books of every order that has share payments or an unknown one (History.erp_books)."""
        return {order_id: {"status": o["status"], "version": o["version"], "shares": dict(o["shares"]),
                           "uncertain": o["uncertain"]}
                for order_id, o in self.orders.items() if o["shares"] or o["uncertain"]}

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

