"""What the workload's actors do, one random step at a time: ERP terminals taking, renewing, releasing,
forcing and paying locks, pushing orders, moving and merging tables; diners checking out and paying
(through the sandbox provider when the run has one). A mixin of ``workload.Run``: the steps use its
ERP model, clients and provider; ``shares_workload`` adds the split-bill steps.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import TYPE_CHECKING, Any

from tests.support.history.erp_model import order_body

if TYPE_CHECKING:
    from tests.support.history.workload import Actor

KINDS = ("order", "presettle", "payment")


class Steps:
    """The random steps of ERP terminals and diners (mixed into ``workload.Run``)."""

    store_id: str
    erp: Any
    provider: Any
    shares: Any
    tables: list[str]
    tokens: list[tuple[str, str, str, dict[str, Any]]]

    def _some_order(self) -> str:
        if random.random() < 0.03 and self.erp.orders:
            return random.choice(list(self.erp.orders))  # maybe closed: ORDER_CLOSED
        return random.choice(list(self.erp.current.values()))

    async def erp_step(self, actor: Actor) -> None:
        """One random ERP terminal action."""
        if self.shares is not None and self.shares.wants(actor):
            await self.shares.cashier_step(actor)
            return
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
            if self.shares is not None and self.shares.quiet(order_id):
                await actor.call("GET", f"/stores/{s}/orders/{order_id}")
                return
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
            if self.shares is not None and self.shares.busy(order_id) and random.random() < 0.7:
                return  # a waiter mostly leaves an order alone while diners pay their shares
            # Never cancelled with shares paid: the coordinator refuses that push (SHARE_PAID) and the ERP keeps it open.
            status = "cancelled" if random.random() < 0.04 and not self.erp.orders[order_id]["shares"] else "open"
            async with self.erp.lock(order_id):
                if self.erp.orders[order_id]["status"] == "open":
                    if await self.erp.push(actor, order_id, status=status) and status != "open":
                        self.erp.closed(order_id, status)
            return
        if r < 0.89:
            await self.stale_completion(actor)
            return
        if r < 0.95:  # most are refused (locks, shares): tried often enough that a bounded run sees both kinds
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
        # Merges are refused more often than moves (two orders' locks and shares must allow them),
        # so they are tried more often: a bounded run must see both go through.
        if free and movable and random.random() < 0.25:
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
        # What the shares left due (SPEC §10): the whole order when nothing was paid in shares.
        payment = {"token": lock["token"], "amount_cents": body["total_cents"] - self.erp.paid_cents(order_id),
                   "version": version, "payment_ref": f"erp-{uuid.uuid4().hex[:10]}"}
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
        if self.shares is not None and self.shares.wants(actor):
            await self.shares.diner_step(actor)
            return
        r = random.random()
        if actor.held and r < 0.5:
            (order_id, kind), lock = next(iter(actor.held.items()))
            choice = random.random()
            if choice < 0.6 and self.provider is not None:
                await self.provider.pay(actor, order_id, lock)
            elif choice < 0.6:
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

