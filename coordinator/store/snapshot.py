"""Read a whole store as of one event seq (``lua/snapshot.lua``), every key it reads declared.

The script may only read keys passed in KEYS, but which order hashes it needs depends on what is
open and locked. So the orders are listed first and the script checks the list still covers
them, in its atomic step:

    t0  snapshot.lua (nothing declared)  o1, o2 are open: reads nothing, returns the lists
    t1  another client opens o3
    t2  snapshot.lua (o1, o2 declared)   sees o3 undeclared: reads nothing, returns the lists
    t3  snapshot.lua (o1, o2, o3)        the lists are covered: reads everything as of its seq

The script itself lists the orders (t0), so a store with nothing open takes one round trip and
any other two. An order that closed or lost its locks since it was listed is simply skipped, so
only a newly opened or newly locked order costs another round. After ``ATTEMPTS`` rounds (orders
appearing faster than a round trip, again and again) the read gives up with ``Unavailable``.
"""

from __future__ import annotations

from typing import NamedTuple

from coordinator.core.errors import Unavailable
from coordinator.store import keys
from coordinator.store.scripts import Scripts

ATTEMPTS = 8


class SnapshotRead(NamedTuple):
    """The raw store state after event ``seq``, as snapshot.lua read it (bytes from Redis)."""

    seq: int
    now: int
    #: flat HGETALL of the open orders hash: order_id, "table_id|opened_at", ...
    open: list[bytes]
    #: order JSON of every open order
    orders: list[bytes]
    #: lock JSON (token included) of every stored lock, expired ones too
    locks: list[bytes]


def _ids(raw: list[bytes | str]) -> list[str]:
    return [i.decode() if isinstance(i, bytes) else i for i in raw]


async def read_snapshot(scripts: Scripts, store_id: str) -> SnapshotRead:
    """The store's open orders and stored locks, exactly as of its current seq."""
    open_ids: list[str] = []
    active_ids: list[str] = []
    for _ in range(ATTEMPTS):
        reply = await scripts.snapshot(
            keys=[
                keys.seq(store_id), keys.open_orders(store_id), keys.active(store_id),
                *(keys.order(store_id, o) for o in open_ids),
                *(keys.locks(store_id, o) for o in active_ids),
            ],
            args=[len(open_ids), len(active_ids), *open_ids, *active_ids],
        )
        if int(reply[0]) >= 0:
            seq, now, flat_open, orders, locks = reply
            return SnapshotRead(int(seq), int(now), flat_open, orders, locks)
        open_ids, active_ids = _ids(reply[1]), _ids(reply[2])
    raise Unavailable()
