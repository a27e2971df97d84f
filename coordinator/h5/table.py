"""A diner's scope (one table of one store, invariant 6) and that table's open orders."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from coordinator.core.rules import Kind
from coordinator.core.tables import table_order_ids
from coordinator.store.engine import LockEngine


@dataclass(frozen=True)
class Diner:
    """An H5 session: every flow reads and writes only this table of this store."""

    store_id: str
    table_id: str
    session_id: str

    def holder(self) -> dict[str, Any]:
        """The holder this diner puts on the locks it takes."""
        return {"role": "h5", "session_id": self.session_id}


async def open_order_ids(engine: LockEngine, diner: Diner) -> list[str]:
    """Return the diner's table's open orders, most recently opened first."""
    return table_order_ids(await engine.open_orders(diner.store_id), diner.table_id)


async def order_paying_with(engine: LockEngine, diner: Diner, token: str) -> str | None:
    """Return the table's open order whose live payment lock has ``token`` (None: no such lock)."""
    for order_id in await open_order_ids(engine, diner):
        _, locks = await engine.get_order(diner.store_id, order_id)
        for lock in locks:
            if lock["kind"] == Kind.PAYMENT.value and hmac.compare_digest(lock["token"].encode(), token.encode()):
                return order_id
    return None
