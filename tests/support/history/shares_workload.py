"""Split-bill traffic for the history workload (SPEC §10): diners claiming shares of their table's
order — by lines, by one of N equal parts, by an amount, or the rest — and paying them through the
sandbox provider (two phases: claim, then in flight; some failed, some cancelled, some left to
expire), side by side; ERP terminals (the cashier) taking "the rest" under their own share lock and
paying it at the till, where the terminal is the ERP and books it. Dishes keep being added after
the first capture by the other steps (ERP pushes, H5 add-ons): they raise what remains due.

Requests are plausible and sometimes deliberately not (a part of another N, a line already
claimed, an amount above what remains, a wrong amount at the till): the coordinator must refuse
those; the checker (``shares_check``) judges what it did from the recorded history.
"""

from __future__ import annotations

import random
import uuid
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.support.history.workload import Actor, Run

#: The equal parts a table splits into ("AA N 人").
PARTS = (2, 3, 4)


class ShareTraffic:
    """The split-bill steps of one run's diners and terminals."""

    def __init__(self, run: Run, share: float) -> None:
        self.run = run
        self.share = share
        #: order_id -> the N its diners split it into (the first parts claim chooses it).
        self.parts: dict[str, int] = {}
        #: order_id -> share locks the workload believes live (a waiter leaves such an order alone).
        self.live: dict[str, int] = {}

    def split_tables(self) -> set[str]:
        """Every second table splits its bills: its diners only pay shares, its waiters mostly stay away."""
        return set(self.run.tables[1:self.run.plan.tables:2])

    def wants(self, actor: Actor) -> bool:
        """Whether this step of ``actor`` is a split-bill one: it holds a share, sits at a split table, or the dice say so."""
        if any(kind == "share" for _, kind in actor.held):
            return True
        if actor.role == "h5" and self.run.history.sessions[actor.name]["table_id"] in self.split_tables():
            return True
        return random.random() < self.share

    def quiet(self, order_id: str) -> bool:
        """Whether a waiter leaves this order's locks alone this time (mostly, at a split table)."""
        order = self.run.erp.orders.get(order_id)
        return order is not None and order["table_id"] in self.split_tables() and random.random() < 0.75

    def busy(self, order_id: str) -> bool:
        """Whether diners are paying shares of the order right now (as far as the workload knows)."""
        return self.live.get(order_id, 0) > 0

    def _drop(self, actor: Actor, order_id: str) -> None:
        actor.forget(order_id, "share")
        self.live[order_id] = max(0, self.live.get(order_id, 0) - 1)

    # --- diners ---------------------------------------------------------------------------

    def _spec(self, order_id: str) -> dict[str, Any]:
        """A share to ask for, by the shape of the order as the ERP has it."""
        erp = self.run.erp
        version = erp.orders[order_id]["version"]
        r = random.random()
        if r < 0.35:
            n = self.parts.setdefault(order_id, random.choice(PARTS))
            if random.random() < 0.05:
                n = random.choice(PARTS)  # a phone that loaded another split: SHARE_TAKEN when N differs
            return {"parts": n, "part": random.randint(1, n)}
        # l1 is left out: its quantity grows with the version, and a paid line must not change (SPEC §10).
        lines = [f"l{i}" for i in range(2, min(version, 12) + 1)]
        if r < 0.6 and lines:
            return {"lines": random.sample(lines, min(len(lines), random.choice((1, 1, 2))))}
        if r < 0.85:
            return {"amount_cents": random.choice((100, 200, 300, 500, 800, 5000))}
        return {"rest": True}

    async def diner_step(self, actor: Actor) -> None:
        """Pay, cancel or walk away from a share held; else claim one of the table's order."""
        held = [(order_id, lock) for (order_id, kind), lock in actor.held.items() if kind == "share"]
        if held:
            order_id, lock = held[0]
            choice = random.random()
            if choice < 0.75 and self.run.provider is not None:
                self.live[order_id] = max(0, self.live.get(order_id, 0) - 1)
                await self.run.provider.pay(actor, order_id, lock, kind="share")
            elif choice < 0.9:
                await actor.call("POST", "/h5/checkout/cancel", {"token": lock["token"]})
                self._drop(actor, order_id)
            else:
                self._drop(actor, order_id)  # the phone is put away: the share lock expires
            return
        table = self.run.history.sessions[actor.name]["table_id"]
        order_id = self.run.erp.current.get(table)
        if order_id is None or self.run.erp.orders[order_id]["status"] != "open":
            await actor.call("GET", "/h5/table")
            return
        op = await actor.call("POST", "/h5/checkout", {"share": self._spec(order_id)})
        if op.status == 201 and isinstance(op.resp, dict) and (op.resp.get("lock") or {}).get("share"):
            lock = op.resp["lock"]
            actor.remember(lock["order_id"], "share", lock)
            self.live[lock["order_id"]] = self.live.get(lock["order_id"], 0) + 1

    # --- the cashier ----------------------------------------------------------------------

    async def cashier_step(self, actor: Actor) -> None:
        """Take the rest (or an amount) of a split order under the terminal's own share lock and pay it at the till."""
        s, erp = self.run.store_id, self.run.erp
        open_orders = [o for o in erp.current.values() if erp.orders[o]["status"] == "open"]
        if not open_orders:
            return
        # The cashier takes the rest of a table whose diners have paid some shares; sometimes an amount anywhere.
        split = [o for o in open_orders if erp.orders[o]["shares"]]
        if split and random.random() < 0.7:
            order_id, share = random.choice(split), {"rest": True}
        elif random.random() < 0.3:
            order_id, share = random.choice(open_orders), {"amount_cents": random.choice((100, 300, 700))}
        else:
            return
        op = await actor.call("POST", f"/stores/{s}/orders/{order_id}/shares", {"share": share})
        if op.status != 201 or not isinstance(op.resp, dict):
            return
        lock = op.resp["lock"]
        if random.random() < 0.1:
            await actor.call("POST", f"/stores/{s}/orders/{order_id}/shares/release", {"token": lock["token"]})
            return
        await self.pay_at_till(actor, order_id, lock)

    async def pay_at_till(self, actor: Actor, order_id: str, lock: dict[str, Any]) -> None:
        """Pay the terminal's own share as the ERP: under the order's ERP lock, booked when the coordinator accepts."""
        amount = int(lock["share"]["amount_cents"])
        payment = {"token": lock["token"], "amount_cents": amount + (1 if random.random() < 0.05 else 0),
                   "version": lock["version"], "payment_ref": f"till-{uuid.uuid4().hex[:10]}"}
        erp = self.run.erp
        async with erp.lock(order_id):
            if erp.orders[order_id]["status"] != "open":
                return
            op = await actor.call("POST", f"/stores/{self.run.store_id}/orders/{order_id}/shares/payments", payment)
            if op.status == 200:
                erp.book_share(order_id, payment["payment_ref"], payment["amount_cents"])
                if random.random() < 0.2:  # a retry of the same payment is a replay, never a second share
                    await actor.call("POST", f"/stores/{self.run.store_id}/orders/{order_id}/shares/payments", payment)
            elif op.status is None or op.status >= 500:
                erp.orders[order_id]["uncertain"] = True  # the ERP never learnt whether this share was taken
            elif op.status == 409:
                await actor.call("POST", f"/stores/{self.run.store_id}/orders/{order_id}/shares/release",
                                 {"token": lock["token"]})
