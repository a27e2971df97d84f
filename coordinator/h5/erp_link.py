"""Asking the store's master ERP (SPEC §7 RPC) on a diner's behalf, and keeping its order answers.

Every call is bounded by the store's ``erp_rpc_timeout_ms``; no RPC router, no master, no answer
or a malformed answer is ``503 ERP_UNREACHABLE`` (``realtime/erp_answers.py``). An order answer
must be of the diner's table, else it is a bad reply: a diner never sees another table's order.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from coordinator.core.errors import StaleVersion
from coordinator.core.models import StoreConfig
from coordinator.h5.table import Diner
from coordinator.realtime.erp_answers import ErpOrder, unreachable
from coordinator.store.engine import LockEngine

log = logging.getLogger(__name__)

#: Whom the audit log names for an order the coordinator stored from an RPC answer.
ERP_ANSWER = {"role": "system", "source": "erp_rpc"}


class RpcCaller(Protocol):
    """What the H5 flows need of ``realtime/rpc.py``: one bounded call to a store's master ERP."""

    async def call(self, store_id: str, method: str, params: dict[str, Any], timeout_ms: int) -> dict[str, Any]:
        """Ask the store's master; the validated result, or the coordinator error."""
        ...


class ErpLink:
    """The store's master ERP as the H5 flows see it."""

    def __init__(self, engine: LockEngine, rpc: RpcCaller | None) -> None:
        self.engine = engine
        self.rpc = rpc

    async def ask(self, diner: Diner, config: StoreConfig, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Ask the store's master ERP, bounded by the store's ``erp_rpc_timeout_ms``."""
        if self.rpc is None:
            raise unreachable("no_rpc", method)
        return await self.rpc.call(diner.store_id, method, params, config.erp_rpc_timeout_ms)

    @staticmethod
    def order_answer(diner: Diner, method: str, result: dict[str, Any], order_id: str | None = None) -> ErpOrder:
        """Return the ERP's order answer, checked to be of the diner's table (and of ``order_id``)."""
        order = ErpOrder.model_validate(result)
        if order.table_id != diner.table_id or (order_id is not None and order.order_id != order_id):
            log.warning("rpc: %s answered order %s of table %s for table %s", method, order.order_id,
                        order.table_id, diner.table_id)
            raise unreachable("bad_reply", method)
        return order

    async def keep(self, diner: Diner, order: ErpOrder) -> dict[str, Any]:
        """Store the ERP's answer as the ERP's own push would (idempotent); return the coordinator's copy.

        The answer may close the very version the coordinator holds open: the ERP is the record of a
        payment a failover made the coordinator forget (SPEC §12).
        """
        try:
            stored, _changed = await self.engine.put_order(diner.store_id, order.order_in(), ERP_ANSWER,
                                                           erp_answer=True)
        except StaleVersion as stale:
            # The ERP pushed a later version before answering: that one is the truth now.
            return stale.order
        return stored
