"""Where an H5 session's party went: follow records written by a move or merge (SPEC §11).

A move from T3 to T7 (or a merge into an order at T7) writes ``tl:{s}:follow:T3`` = {to: T7,
order_id, at} in the same Lua step as the move (``lua/table_op.lua`` finish). A session issued
*before* ``at`` belongs to the party that left, so it follows to T7; a session issued after it
(a new party scanning T3) stays. Each hop only follows a record newer than the last hop, so a
party moved T3 → T7 → T3 ends at T3 rather than looping.
"""

from __future__ import annotations

from typing import Any

from coordinator.store import keys

#: A party moved more often than this within one session's life stays where the chain stops.
MAX_HOPS = 8


async def followed_table(redis: Any, store_id: str, table_id: str, since_ms: int) -> str:
    """The table a session issued at ``since_ms`` on ``table_id`` now belongs to."""
    at = since_ms
    for _ in range(MAX_HOPS):
        raw = await redis.hmget(keys.table_follow(store_id, table_id), "to", "at")
        if raw[0] is None or int(raw[1]) < at:
            break
        table_id, at = raw[0].decode(), int(raw[1])
    return table_id
