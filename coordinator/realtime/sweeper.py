"""Expiry: every lock past ``expires_at`` ends with exactly one ``lock.expired``, on time, whatever
the number of coordinator processes; and terminals whose process died are noticed.

Every process runs the same loop; nothing is elected. Exactly-once comes from ``expire.lua``: the
lock is deleted in the same atomic step that emits its event, so the second caller finds nothing.

Indexes: ``tl:{s}:active`` (order -> earliest expiry of its locks, kept by every script) and the
global ``tl:due`` (store -> earliest expiry in the store). Scripts only ever move a store's due
time earlier (``ZADD LT``, engine._run); the sweeper sets it back to the truth after a sweep.
That re-index races with an acquire on another process, hence two steps:

    sweeper                                   acquire (another process)
    1 ZRANGE active 0 0  -> none
                                              script: active[o] = E
                                              ZADD tl:due LT E store     (store is there: lowered)
    2 ZREM tl:due store                       <- E is lost from tl:due here ...
    3 ZRANGE active 0 0  -> E
    4 ZADD tl:due LT E store                  ... and restored here

Any write after step 3 is an acquire's own ``ZADD LT``, which needs no help. A due time that
ends up too early only wakes a sweeper for nothing; it then re-indexes the store.

Time is the Redis server clock (``RedisClock``: an offset to the local monotonic clock measured
with TIME every few seconds), so processes agree on when a lock is due. The loop sleeps until
the next due time, capped at ``max_sleep`` because another process may add an earlier one.

Liveness: a terminal whose process died never ran ``terminal_offline``; its presence entries stop
being refreshed. The sweeper walks the store list a batch at a time, removes entries older than
``presence.STALE_MS`` (ZREM decides which process handles each one), and for a terminal left with
no live entry emits ``terminal.status {online: false}`` and caps its locks at its last heartbeat
+ ``erp_disconnect_grace_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, AsyncIterator

from aiohttp import web
from prometheus_client import Counter

from coordinator import metrics
from coordinator.realtime import liveness as presence
from coordinator.services import SERVICES
from coordinator.store import keys
from coordinator.store.engine import SYSTEM, LockEngine

log = logging.getLogger(__name__)

SWEEPS = Counter(
    "tablelock_sweeper_expire_calls_total", "expire.lua runs by the sweeper", registry=metrics.REGISTRY,
)
STALE_TERMINALS = Counter(
    "tablelock_sweeper_stale_terminals_total", "Terminals found offline because their process died",
    registry=metrics.REGISTRY,
)


class RedisClock:
    """The Redis server clock in ms, read locally between measurements."""

    def __init__(self, redis: Any, *, refresh_seconds: float = 5.0) -> None:
        self.redis = redis
        self.refresh_seconds = refresh_seconds
        self._offset: float | None = None
        self._measured_at = 0.0

    async def sync(self, samples: int = 3) -> None:
        """Measure the offset with TIME; keep the sample with the shortest round trip."""
        best: tuple[float, float] | None = None
        for _ in range(samples):
            sent = time.monotonic()
            seconds, micros = await self.redis.time()
            received = time.monotonic()
            rtt = received - sent
            offset = seconds * 1000 + micros / 1000 - (sent + rtt / 2) * 1000
            if best is None or rtt < best[0]:
                best = (rtt, offset)
        assert best is not None
        self._offset = best[1]
        self._measured_at = time.monotonic()

    async def refresh(self) -> None:
        """Measure again if the last measurement is older than ``refresh_seconds``."""
        if self._offset is None or time.monotonic() - self._measured_at >= self.refresh_seconds:
            await self.sync()

    def now(self) -> int:
        """Redis time now, in Unix ms (call ``sync`` once first)."""
        assert self._offset is not None, "RedisClock.sync() first"
        return int(time.monotonic() * 1000 + self._offset)


class Sweeper:
    """Ends expired locks (exactly once, on time) and notices terminals of dead processes."""

    def __init__(
        self,
        engine: LockEngine,
        *,
        max_sleep: float = 0.025,
        batch: int = 100,
        concurrency: int = 16,
        presence_interval: float = 1.0,
        presence_batch: int = 500,
    ) -> None:
        self.engine = engine
        self.redis = engine.redis
        self.clock = RedisClock(engine.redis)
        self.max_sleep = max_sleep
        self.batch = batch
        self.presence_interval = presence_interval
        self.presence_batch = presence_batch
        self._limit = asyncio.Semaphore(concurrency)
        self._cursor = 0
        self._running = False
        self._tasks: list[asyncio.Task] = []

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the expiry and presence loops."""
        await self.clock.sync()
        self._running = True
        self._tasks = [
            asyncio.create_task(self._expiry_loop(), name="tablelock-sweeper"),
            asyncio.create_task(self._presence_loop(), name="tablelock-presence-sweeper"),
        ]

    async def stop(self) -> None:
        """Stop both loops and wait for them."""
        # The flag as well as cancel(): a Redis call may swallow one cancellation.
        self._running = False
        while pending := [t for t in self._tasks if not t.done()]:
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=1.0)
        self._tasks = []

    # --- expiry ---------------------------------------------------------------------------

    async def _expiry_loop(self) -> None:
        backoff = 0.05
        while self._running:
            try:
                await self.clock.refresh()
                delay = await self.run_once()
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("expiry sweep failed; retrying in %.2fs", backoff, exc_info=True)
                delay, backoff = backoff, min(backoff * 2, 1.0)
            if delay > 0:
                await asyncio.sleep(delay)

    async def run_once(self) -> float:
        """Expire what is due now; return how long to sleep before the next pass (seconds)."""
        now = self.clock.now()
        entries = await self.redis.zrange(keys.DUE, 0, self.batch - 1, withscores=True)
        due = [member.decode() for member, score in entries if score <= now]
        later = [score for _, score in entries if score > now]
        if due:
            random.shuffle(due)  # several processes: spread who reaches which store first
            swept = await asyncio.gather(*(self.sweep_store(store, now) for store in due))
            if any(swept):
                return 0.0  # look again at once: the re-index may show more already due
            return 0.002  # due but nothing to do (a clock a hair ahead of Redis): do not spin
        if not later:
            return self.max_sleep
        return min(self.max_sleep, max(0.0, (min(later) - self.clock.now()) / 1000))

    async def sweep_store(self, store_id: str, now: int) -> int:
        """Run expire.lua on every order of the store due at ``now``, re-index; returns orders settled."""
        orders = await self.redis.zrangebyscore(keys.active(store_id), "-inf", now, start=0, num=self.batch)

        async def expire(order_id: bytes) -> bool:
            async with self._limit:
                SWEEPS.inc()
                due = await self.engine.expire(store_id, order_id.decode())
            return due < 0 or due > now  # False: Redis does not consider it due yet

        progressed = await asyncio.gather(*(expire(o) for o in orders))
        await self.reindex(store_id)
        return sum(progressed)

    async def reindex(self, store_id: str) -> None:
        """Set the store's due time to its earliest active expiry (see the module docstring)."""
        first = await self.redis.zrange(keys.active(store_id), 0, 0, withscores=True)
        if first:
            await self.redis.zadd(keys.DUE, {store_id: first[0][1]})
        else:
            await self.redis.zrem(keys.DUE, store_id)
        again = await self.redis.zrange(keys.active(store_id), 0, 0, withscores=True)
        if again:
            await self.redis.zadd(keys.DUE, {store_id: again[0][1]}, lt=True)

    # --- terminals of dead processes ------------------------------------------------------

    async def _presence_loop(self) -> None:
        while self._running:
            await asyncio.sleep(self.presence_interval)
            try:
                await self.check_presence(self.clock.now())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("presence sweep failed", exc_info=True)

    async def check_presence(self, now: int) -> int:
        """Check the next batch of stores for presence entries nobody refreshes; returns terminals taken offline."""
        self._cursor, members = await self.redis.sscan(keys.STORES, cursor=self._cursor, count=self.presence_batch)
        stores = [m.decode() for m in members]
        if not stores:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for store_id in stores:
            pipe.zrangebyscore(keys.presence(store_id), "-inf", now - presence.STALE_MS, start=0, num=50,
                               withscores=True)
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
        online = await presence.online(self.redis, store_id, now)
        config = await self.engine.config(store_id)
        count = 0
        for terminal_id, seen in last_seen.items():
            if terminal_id in online:
                continue  # another socket of it is alive elsewhere
            grace_ms = max(0, seen + config.erp_disconnect_grace_seconds * 1000 - now)
            log.info("terminal %s/%s: no heartbeat since %d; offline, locks capped", store_id, terminal_id, seen)
            await self.engine.emit(store_id, "terminal.status", {"terminal_id": terminal_id, "online": False}, SYSTEM)
            await self.engine.terminal_offline(store_id, terminal_id, grace_ms=grace_ms)
            STALE_TERMINALS.inc()
            count += 1
        return count


async def sweeper_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: run this process's sweeper."""
    sweeper = Sweeper(app[SERVICES].engine)
    await sweeper.start()
    try:
        yield
    finally:
        await sweeper.stop()
