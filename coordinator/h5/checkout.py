"""A diner's checkout (SPEC §5 ``POST /h5/checkout``): pull the order from the ERP, take the H5
payment lock bound to the version pulled; and giving that lock back (``/h5/checkout/cancel``).
"""

from __future__ import annotations

from coordinator.core import views
from coordinator.core.errors import Forbidden, LockConflict, NotFound, OrderClosed
from coordinator.core.models import Checkout, Lock, Order, Released
from coordinator.core.rules import Action, Kind, Role
from coordinator.h5.erp_link import ErpLink
from coordinator.h5.table import Diner, order_paying_with
from coordinator.core.shares import ShareSpec
from coordinator.store.engine import LockEngine
from coordinator.store.share_book import ShareBook


class Checkouts:
    """Takes and gives back a diner's payment lock."""

    def __init__(self, engine: LockEngine, erp: ErpLink) -> None:
        self.engine = engine
        self.erp = erp
        self.shares = ShareBook(engine)

    async def checkout(self, diner: Diner, *, force: bool = False, share: ShareSpec | None = None) -> Checkout:
        """Pull the table's order from the ERP and take the H5 payment lock bound to that version.

        With ``share`` (split bill, SPEC §10) the lock is the share's own (share_claim.lua): other
        diners' shares do not block it, so the early refusal before the ERP pull is left to the script.
        """
        if force:
            raise Forbidden()  # SPEC §2: H5 sessions never force
        engine = self.engine
        config = await engine.config(diner.store_id)
        order = await engine.table_order(diner.store_id, diner.table_id)
        if order is None:
            raise NotFound()
        if config.strong_link_enabled:
            if share is None:
                await self._refuse_if_locked(diner, order["order_id"])
            result = await self.erp.ask(diner, config, "order.fetch", {"order_id": order["order_id"]})
            pulled = self.erp.order_answer(diner, "order.fetch", result, order["order_id"])
            order = await self.erp.keep(diner, pulled)
            if pulled.status != "open":
                raise OrderClosed(order=order)
            version = pulled.version
        else:
            version = order["version"]  # legacy mode: the last order the ERP pushed, nothing pulled
        if share is not None:
            lock, _ = await self.shares.claim(diner.store_id, order["order_id"], diner.holder(), share,
                                              expected_version=version)
            enforced = True
        else:
            lock, enforced = await engine.acquire(
                diner.store_id, order["order_id"], diner.holder(), Kind.PAYMENT, expected_version=version,
            )
        return Checkout(lock=Lock.model_validate(views.own_lock(lock)), order=Order.model_validate(order),
                        enforced=enforced)

    async def _refuse_if_locked(self, diner: Diner, order_id: str) -> None:
        """Refuse a checkout the rules deny already (a waiter editing, someone paying) before the ERP pull."""
        decision = await self.engine.check(diner.store_id, order_id, diner.holder(), Action.PAY)
        if decision.allowed:
            return
        _, locks = await self.engine.get_order(diner.store_id, order_id)
        reported = next((l for l in locks if decision.reported and l["kind"] == decision.reported.kind.value), None)
        raise LockConflict(str(decision.code), Role.H5, Action.PAY,
                           lock=views.h5_lock(reported, diner.session_id) if reported else None)

    async def cancel(self, diner: Diner, token: str) -> Released:
        """Give the payment lock back; ``released`` is false when the token holds nothing releasable."""
        order_id = await order_paying_with(self.engine, diner, token)
        if order_id is None:
            return Released(released=False)
        released = await self.engine.release(diner.store_id, order_id, Kind.PAYMENT, token, diner.holder())
        if not released:  # a share's lock (SPEC §10) lives beside the whole-order one
            released = await self.shares.end(diner.store_id, order_id, diner.holder(), token)
        return Released(released=released)
