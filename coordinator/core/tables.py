"""Which open order is a table's (SPEC §2 "Tables"): pure, over the store's open-order index.

``open_orders`` maps order_id -> (table_id, opened_at), as ``LockEngine.open_orders`` reads it
from Redis and the event stream's snapshots carry it. The engine, the stream's snapshots and the
H5 flows all pick a table's order here, so the H5 page, its websocket and its checkout never
disagree about which order the diner is looking at.
"""

from __future__ import annotations

from collections.abc import Mapping


def table_order_ids(open_orders: Mapping[str, tuple[str, int]], table_id: str) -> list[str]:
    """Return the table's open orders, most recently opened first (equal times: greater id first)."""
    mine = sorted(((opened_at, order_id) for order_id, (table, opened_at) in open_orders.items()
                   if table == table_id), reverse=True)
    return [order_id for _, order_id in mine]


def current_order(open_orders: Mapping[str, tuple[str, int]], table_id: str) -> str | None:
    """Return the id of the table's current order (the most recently opened open one), or None."""
    ids = table_order_ids(open_orders, table_id)
    return ids[0] if ids else None
