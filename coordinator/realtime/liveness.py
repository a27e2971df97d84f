"""Which ERP terminals are alive, across every coordinator process: the one room for liveness.

Presence: each terminal socket refreshes ``<terminal_id>|<connection id>`` in the store's
presence sorted set (score = last heartbeat, Redis ms) and removes it on close. A terminal is
online while any of its entries is younger than ``STALE_MS``, so a killed process's sockets age
out by themselves.

Up and down: a terminal's first socket in the whole cluster emits ``terminal.status {online:
true}`` (``terminal_up``). It goes offline by ONE sequence, ``offline``: emit ``terminal.status
{online: false}`` and cap its locks at the last sign of life + ``erp_disconnect_grace_seconds``.
Two paths reach it:

* its last socket closes (``terminal_down``, called by session.py): grace from now;
* its process died (``check_stale``, a loop every ``stale_interval``): the store list is walked
  a batch at a time, entries older than ``STALE_MS`` are removed with ONE ZREM per terminal
  (atomic: of several processes exactly one claims them and announces the terminal), and a
  terminal left with no live entry goes offline with grace from its last heartbeat.

Masters (``MasterRegistry``): the store's master sockets for rpc.py, in ``tl:{s}:masters``
(member ``<process_id>|<terminal_id>|<conn_id>``, score = last heartbeat), refreshed every
``heartbeat_ms``; an entry older than ``stale_ms`` no longer counts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from typing import Any, Awaitable, Callable

from prometheus_client import Counter
from redis.exceptions import RedisError

from coordinator import metrics
from coordinator.store import keys
from coordinator.store.auth import Principal
from coordinator.store.engine import PRESENCE_STALE_MS, SYSTEM, LockEngine

log = logging.getLogger(__name__)

STALE_MS = PRESENCE_STALE_MS

STALE_TERMINALS = Counter(
    "tablelock_sweeper_stale_terminals_total", "Terminals found offline because their process died",
    registry=metrics.REGISTRY,
)

Clock = Callable[[], Awaitable[int]]


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


class Liveness:
    """Presence, up/down events, stale detection and the one offline sequence of one process."""

    def __init__(self, engine: LockEngine, masters: MasterRegistry, *, stale_interval: float = 1.0,
                 stale_batch: int = 500) -> None:
        self.engine = engine
        self.redis = engine.redis
        self.masters = masters
        self.stale_interval = stale_interval
        self.stale_batch = stale_batch
        self._cursor = 0
        self._running = False
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the master registry's heartbeat and the stale-terminal loop."""
        await self.masters.start()
        self._running = True
        self._task = asyncio.create_task(self._stale_loop(), name="tablelock-presence-sweeper")

    async def stop(self) -> None:
        """Stop the loops; withdraw this process's master sockets."""
        # The flag as well as cancel(): a Redis call may swallow one cancellation.
        self._running = False
        while self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait([self._task], timeout=1.0)
        self._task = None
        await self.masters.stop()

    # --- presence -------------------------------------------------------------------------

    async def now(self) -> int:
        """The Redis server clock in Unix ms."""
        return await self.engine.now()

    async def online(self, store_id: str, now: int | None = None) -> set[str]:
        """Terminals of the store with at least one live connection."""
        return await online(self.redis, store_id, await self.now() if now is None else now)

    async def touch(self, store_id: str, terminal_id: str, conn_id: str, now: int) -> None:
        """Record that this socket of the terminal is alive at ``now``."""
        await touch(self.redis, store_id, terminal_id, conn_id, now)

    async def terminal_up(self, principal: Principal, conn_id: str) -> None:
        """Record the terminal's socket in presence; announce the terminal if it was offline."""
        store, terminal = principal.store_id or "", principal.terminal_id or ""
        now = await self.now()
        was_online = terminal in await online(self.redis, store, now)
        await touch(self.redis, store, terminal, conn_id, now)
        if not was_online:
            await self.engine.emit(store, "terminal.status", {"terminal_id": terminal, "online": True},
                                   principal.holder())

    async def terminal_down(self, principal: Principal, conn_id: str) -> None:
        """Forget the socket in presence; if it was the terminal's last, take the terminal offline."""
        store, terminal = principal.store_id or "", principal.terminal_id or ""
        try:
            if await leave(self.redis, store, terminal, conn_id, await self.now()):
                await self.offline(store, terminal, principal.holder())
        except Exception:
            # Redis unreachable: the presence entry ages out and check_stale caps the locks.
            log.warning("could not mark terminal %s/%s offline", store, terminal, exc_info=True)

    async def offline(self, store_id: str, terminal_id: str, actor: dict[str, Any], *,
                      last_seen: int | None = None, now: int | None = None) -> None:
        """Announce the terminal offline and cap its locks at ``last_seen`` (default now) + the grace."""
        config = await self.engine.config(store_id)
        grace_ms = config.erp_disconnect_grace_seconds * 1000
        if last_seen is not None and now is not None:
            grace_ms = max(0, last_seen + grace_ms - now)
        await self.engine.emit(store_id, "terminal.status", {"terminal_id": terminal_id, "online": False}, actor)
        await self.engine.terminal_offline(store_id, terminal_id, grace_ms=grace_ms)

    # --- terminals of dead processes ------------------------------------------------------

    async def _stale_loop(self) -> None:
        while self._running:
            await asyncio.sleep(self.stale_interval)
            try:
                await self.check_stale(await self.now())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("presence sweep failed", exc_info=True)

    async def check_stale(self, now: int) -> int:
        """Check the next batch of stores for presence entries nobody refreshes; returns terminals taken offline."""
        self._cursor, members = await self.redis.sscan(keys.STORES, cursor=self._cursor, count=self.stale_batch)
        stores = [m.decode() for m in members]
        if not stores:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for store_id in stores:
            pipe.zrangebyscore(keys.presence(store_id), "-inf", now - STALE_MS, start=0, num=50, withscores=True)
        found = 0
        for store_id, stale in zip(stores, await pipe.execute()):
            if stale:
                found += await self._stale(store_id, stale, now)
        return found

    async def _stale(self, store_id: str, stale: list[tuple[bytes, float]], now: int) -> int:
        by_terminal: dict[str, list[tuple[bytes, float]]] = {}
        for member, score in stale:
            by_terminal.setdefault(member.decode().rsplit("|", 1)[0], []).append((member, score))
        last_seen: dict[str, int] = {}
        for terminal_id, entries in by_terminal.items():
            # One ZREM of all the terminal's stale entries is the claim: it is atomic, so of several
            # sweepers exactly one removes them and announces the terminal (one per entry would let
            # two sweepers each win one entry and both announce it).
            if await self.redis.zrem(keys.presence(store_id), *(member for member, _ in entries)):
                last_seen[terminal_id] = max(int(score) for _, score in entries)
        if not last_seen:
            return 0
        alive = await online(self.redis, store_id, now)
        count = 0
        for terminal_id, seen in last_seen.items():
            if terminal_id in alive:
                continue  # another socket of it is alive elsewhere
            log.info("terminal %s/%s: no heartbeat since %d; offline, locks capped", store_id, terminal_id, seen)
            await self.offline(store_id, terminal_id, SYSTEM, last_seen=seen, now=now)
            STALE_TERMINALS.inc()
            count += 1
        return count


class MasterRegistry:
    """This process's master ERP sockets in their stores' ``tl:{s}:masters``, for rpc.py."""

    def __init__(self, redis: Any, clock: Clock, *, process_id: str | None = None, heartbeat_ms: int = 5_000,
                 stale_ms: int = 15_000) -> None:
        self.redis = redis
        self.process_id = process_id or f"{os.getpid()}-{secrets.token_hex(4)}"
        self.heartbeat_ms = heartbeat_ms
        self.stale_ms = stale_ms
        self._clock = clock
        self._local: dict[str, tuple[str, str]] = {}  # conn_id -> (store, terminal)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start refreshing this process's entries every ``heartbeat_ms``."""
        self._task = asyncio.create_task(self._beat(), name=f"rpc-heartbeat-{self.process_id}")

    async def stop(self) -> None:
        """Stop the heartbeat and withdraw every entry of this process."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.withdraw_all()

    async def withdraw_all(self) -> None:
        """Remove every entry of this process (it stops serving RPC)."""
        local, self._local = self._local, {}
        for conn_id, (store_id, terminal_id) in local.items():
            try:
                await asyncio.wait_for(self.redis.zrem(keys.erp_masters(store_id), self.member(terminal_id, conn_id)), 1.0)
            except (RedisError, OSError, TimeoutError):
                pass  # the entry ages out after stale_ms

    def member(self, terminal_id: str, conn_id: str) -> str:
        """The registry member of one socket of this process."""
        return f"{self.process_id}|{terminal_id}|{conn_id}"

    def has(self, store_id: str, terminal_id: str) -> bool:
        """Whether the terminal still has a registered socket in this process."""
        return (store_id, terminal_id) in self._local.values()

    async def add(self, store_id: str, terminal_id: str, conn_id: str) -> None:
        """Register a master socket of this process (kept for the heartbeat even if Redis fails now)."""
        self._local[conn_id] = (store_id, terminal_id)
        await self._register(store_id, [self.member(terminal_id, conn_id)])

    async def remove(self, conn_id: str) -> tuple[str, str] | None:
        """Withdraw a socket; its (store, terminal), or None if it was not registered."""
        entry = self._local.pop(conn_id, None)
        if entry is not None:
            store_id, terminal_id = entry
            try:
                await self.redis.zrem(keys.erp_masters(store_id), self.member(terminal_id, conn_id))
            except (RedisError, OSError) as exc:
                log.warning("rpc: cannot withdraw master socket %s (it ages out): %s", conn_id, exc)
        return entry

    async def live(self, store_id: str) -> list[tuple[str, str, list[str]]]:
        """(process_id, terminal_id, members) of the store's live master sockets, freshest first."""
        key = keys.erp_masters(store_id)
        cutoff = await self._clock() - self.stale_ms
        pipe = self.redis.pipeline(transaction=False)
        pipe.zremrangebyscore(key, "-inf", f"({cutoff}")
        pipe.zrevrangebyscore(key, "+inf", cutoff)
        _, members = await pipe.execute()
        targets: dict[tuple[str, str], list[str]] = {}
        for raw in members:
            member = raw.decode() if isinstance(raw, bytes) else raw
            process_id, _, rest = member.partition("|")
            terminal_id = rest.partition("|")[0]
            targets.setdefault((process_id, terminal_id), []).append(member)
        return [(p, t, m) for (p, t), m in targets.items()]

    async def forget(self, store_id: str, members: list[str]) -> None:
        """Drop another process's entries that said it has no such socket."""
        await self.redis.zrem(keys.erp_masters(store_id), *members)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_ms / 1000)
            try:
                await self.heartbeat()
            except (RedisError, OSError) as exc:
                log.warning("rpc: heartbeat failed: %s", exc)

    async def heartbeat(self) -> None:
        """Refresh this process's master sockets in their stores' registries."""
        by_store: dict[str, list[str]] = {}
        for conn_id, (store_id, terminal_id) in list(self._local.items()):
            by_store.setdefault(store_id, []).append(self.member(terminal_id, conn_id))
        for store_id, members in by_store.items():
            await self._register(store_id, members)

    async def _register(self, store_id: str, members: list[str]) -> None:
        key = keys.erp_masters(store_id)
        now = await self._clock()
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(key, {member: now for member in members})
        pipe.pexpire(key, self.stale_ms * 4)  # a store nobody serves any more leaves no key behind
        await pipe.execute()
