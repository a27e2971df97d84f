"""Which ERP terminals have a live websocket, across every coordinator process.

Each socket refreshes ``<terminal_id>|<connection id>`` in the store's presence sorted set
(score = last heartbeat, Redis ms) and removes it on close. A terminal is online while any of
its entries is younger than ``STALE_MS``, so a killed process's sockets age out by themselves.
"""

from __future__ import annotations

from typing import Any

from coordinator.store import keys

STALE_MS = 30_000


async def touch(redis: Any, store_id: str, terminal_id: str, conn_id: str, now: int) -> None:
    """Record that this connection of the terminal is alive at ``now``."""
    await redis.zadd(keys.presence(store_id), {f"{terminal_id}|{conn_id}": now})


async def leave(redis: Any, store_id: str, terminal_id: str, conn_id: str, now: int) -> bool:
    """Forget this connection; True when it was the terminal's last live one."""
    await redis.zrem(keys.presence(store_id), f"{terminal_id}|{conn_id}")
    return terminal_id not in await online(redis, store_id, now)


async def online(redis: Any, store_id: str, now: int) -> set[str]:
    """Terminals of the store with at least one live connection."""
    members = await redis.zrangebyscore(keys.presence(store_id), now - STALE_MS, "+inf")
    return {m.decode().rsplit("|", 1)[0] for m in members}
