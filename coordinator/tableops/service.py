"""TableOperations: move (换桌) and merge (并桌), with the ERP as the system of record.

One operation, three steps (docs/protocol.md A10.2):

1. ``table_op.lua`` begin — one atomic step over every order involved: SPEC §2's ``modify`` rules
   plus money in flight / a share paid (``core/table_ops.py`` is its twin); forced, it breaks the
   conflicting locks (``lock.forced``) and opens refund tasks (``refund.needed``); granted, it holds
   an ``order`` lock on each order for the asking terminal (its own order lock is kept). From here
   nobody can pay, presettle or edit these orders until the operation ends.
2. ``order.move`` / ``order.merge`` RPC to the store's master ERP with those locks' fences: the ERP
   applies it in its own database (a stale fence is refused there) and answers the orders.
3. The answers are stored as the ERP's pushes would be (``put_order``: a merged source order closes,
   ending its locks), then ``table_op.lua`` finish: the locks follow their order's table, the
   operation's own locks end, the old tables get ``order.moved`` / ``order.merged`` and a follow
   record so their diners' sessions follow (``store/follow.py``).
If the ERP refuses or does not answer, the operation's locks are given back and the error raised
(an ERP that applied it but answered too late pushes the orders itself).
"""

from __future__ import annotations

from typing import Any

from coordinator.core.errors import NotFound, OrderOpen, StaleVersion, ValidationFailed
from coordinator.core.table_ops import MONEY_PHASES
from coordinator.realtime.erp_answers import ErpMerge, ErpOrder, unreachable
from coordinator.store.engine import LockEngine
from coordinator.store.tableops import TableOps

#: Whom the audit log names for orders stored from the ERP's answer to a table operation.
ERP_ANSWER = {"role": "system", "source": "erp_rpc"}


class TableOperations:
    """Move and merge for the ERP terminals of any store, over one engine and the ERP RPC."""

    def __init__(self, engine: LockEngine, rpc: Any, directory: Any, *, vet_force: Any = None) -> None:
        self.engine = engine
        self.rpc = rpc
        self.directory = directory
        self.ops = TableOps(engine)
        #: ``async (store_id, order_id) -> None`` run on each order before a forced operation: the
        #: payments service asks the provider about a diner's in-flight payment first (docs/protocol.md A5
        #: "Force during in_flight"): paid → refused, unpaid → the provider order is closed.
        self.vet_force = vet_force

    async def _ask(self, store_id: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if self.rpc is None:
            raise unreachable("no_rpc", method)
        config = await self.engine.config(store_id)
        return await self.rpc.call(store_id, method, params, config.erp_rpc_timeout_ms)

    async def _keep(self, store_id: str, order: ErpOrder) -> dict[str, Any]:
        try:
            stored, _ = await self.engine.put_order(store_id, order.order_in(), ERP_ANSWER)
        except StaleVersion as stale:  # the ERP pushed a later version first: that one stands
            return stale.order or {}
        return stored

    async def _share_in_flight(self, store_id: str, order_ids: list[str]) -> bool:
        """Whether any of the orders has a split-bill share lock with money on its way (SPEC §10)."""
        for order_id in order_ids:
            _, locks = await self.engine.get_order(store_id, order_id)
            for lock in locks:
                if lock.get("share") and (lock.get("completing") or lock.get("phase") in MONEY_PHASES):
                    return True
        return False

    async def _run(self, store_id: str, operation: str, order_ids: list[str], actor: dict[str, Any],
                   force: bool, method: str, params: dict[str, Any]) -> tuple[dict, dict]:
        # A share's money in flight is never forced (table_op.lua refuses it outright): the provider is
        # not asked, so no diner's share trade is closed for an operation that cannot happen.
        if force and self.vet_force is not None and not await self._share_in_flight(store_id, order_ids):
            for order_id in order_ids:
                await self.vet_force(store_id, order_id)
        begun = await self.ops.begin(store_id, operation, order_ids, actor, force=force)
        held = begun["orders"]
        params["fences"] = {h["order_id"]: h["fence"] for h in held}
        try:
            result = await self._ask(store_id, method, params)
        except BaseException:
            await self.ops.abort(store_id, held, actor)
            raise
        return result, begun

    async def move(self, store_id: str, order_id: str, to_table_id: str, actor: dict[str, Any], *,
                   force: bool = False) -> tuple[dict, list[dict]]:
        """Move the order to ``to_table_id``; returns (order, refund tasks opened)."""
        await self.directory.table(store_id, to_table_id)  # NotFound for an unknown table
        current, _ = await self.engine.get_order(store_id, order_id)
        if current is not None and current["table_id"] == to_table_id:
            raise ValidationFailed(details=[{"loc": ["body", "to_table_id"], "msg": "the order is at that table already",
                                             "type": "value_error"}])
        result, begun = await self._run(store_id, "move", [order_id], actor, force, "order.move",
                                       {"order_id": order_id, "to_table_id": to_table_id})
        order = ErpOrder.model_validate(result)
        if order.order_id != order_id:
            raise unreachable("bad_reply", "order.move")
        stored = await self._keep(store_id, order)
        await self.ops.finish(store_id, "move", order_id, begun["orders"], actor)
        return stored, begun.get("refunds") or []

    async def merge(self, store_id: str, into: str, sources: list[str], actor: dict[str, Any], *,
                    force: bool = False) -> tuple[dict, list[dict]]:
        """Fold ``sources`` into ``into``; returns (the merged order, refund tasks opened)."""
        if into in sources or len(set(sources)) != len(sources):
            raise ValidationFailed(details=[{"loc": ["body", "from_order_ids"],
                                             "msg": "distinct orders other than the target", "type": "value_error"}])
        result, begun = await self._run(store_id, "merge", [into, *sources], actor, force, "order.merge",
                                       {"into_order_id": into, "from_order_ids": sources})
        answer = ErpMerge.model_validate(result)
        if answer.into.order_id != into or sorted(o.order_id for o in answer.sources) != sorted(sources):
            raise unreachable("bad_reply", "order.merge")
        stored = await self._keep(store_id, answer.into)
        for source in answer.sources:
            await self._keep(store_id, source)
        await self.ops.finish(store_id, "merge", into, begun["orders"], actor)
        return stored, begun.get("refunds") or []

    async def cancel(self, store_id: str, order_id: str, actor: dict[str, Any], *,
                     force: bool = False) -> tuple[dict, list[dict]]:
        """Cancel the order through the ERP under the same rules as a move; returns (order, refunds)."""
        result, begun = await self._run(store_id, "cancel", [order_id], actor, force, "order.cancel",
                                        {"order_id": order_id})
        order = ErpOrder.model_validate(result)
        if order.order_id != order_id or order.status != "cancelled":
            raise unreachable("bad_reply", "order.cancel")
        return await self._keep(store_id, order), begun.get("refunds") or []

    async def reopen(self, store_id: str, order_id: str, actor: dict[str, Any]) -> dict:
        """Reopen a paid or cancelled order (反结账): the ERP opens it at a new version; the books keep the payment."""
        current, _ = await self.engine.get_order(store_id, order_id)
        if current is None:
            raise NotFound()
        if current["status"] == "open":
            raise OrderOpen(order=current)
        order = ErpOrder.model_validate(await self._ask(store_id, "order.reopen", {"order_id": order_id}))
        if order.order_id != order_id or order.status != "open":
            raise unreachable("bad_reply", "order.reopen")
        stored, _ = await self.ops.reopen(store_id, order.order_in(), actor)
        return stored
