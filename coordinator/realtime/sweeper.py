"""Expiry: every lock past ``expires_at`` ends with exactly one ``lock.expired``, on time, whatever
the number of coordinator processes. (Terminals whose process died: liveness.py.)

Every process runs the same loop; nothing is elected. Exactly-once comes from ``expire.lua``: the
lock is deleted in the same atomic step that emits its event, so the second caller finds nothing.

Indexes: ``tl:{s}:active`` (order -> earliest expiry of its locks, kept by every script: the
store's own due set, in its slot) and the global ``tl:due`` (store -> a time no later than the
store's earliest expiry). ``tl:due`` is in no store's Cluster slot, so no script writes it: a
script reports ``wake`` when it moved its store's earliest expiry earlier (or made one appear),
and only then does engine.run send ``ZADD tl:due LT`` (issue 18: most lock requests make one
round trip). Invariant: tl:due[s] <= min(active[s]) once the writes in flight land; a script that
does not lower the minimum keeps it. The sweeper sets the entry back to the truth after a sweep.
That re-index races with an acquire on another process, hence two steps:

    sweeper                                   acquire (another process)
    1 ZRANGE active 0 0  -> none
                                              script: active[o] = E, wake = E
                                              ZADD tl:due LT E store     (store is there: lowered)
    2 ZREM tl:due store                       <- E is lost from tl:due here ...
    3 ZRANGE active 0 0  -> E
    4 ZADD tl:due LT E store                  ... and restored here

Any write after step 3 either lowers the minimum step 3 saw (and sends its own ``ZADD LT``) or
does not (and step 4's entry is early enough). A due time that ends up too early only wakes a
sweeper for nothing; it then re-indexes the store. A process that dies between a script and its
``ZADD`` leaves a store missing from tl:due: ``reconcile`` walks the store list (a batch per
second, as liveness.py does) and puts every store's earliest expiry back with ``ZADD LT``.

Time is the Redis server clock (``RedisClock``: an offset to the local monotonic clock measured
with TIME every few seconds), so processes agree on when a lock is due. The loop sleeps until
the next due time, capped at ``max_sleep`` because another process may add an earlier one.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from prometheus_client import Counter

from coordinator import metrics
from coordinator.store import keys
from coordinator.store.engine import LockEngine

log = logging.getLogger(__name__)

SWEEPS = Counter(
    "tablelock_sweeper_expire_calls_total", "expire.lua runs by the sweeper", registry=metrics.REGISTRY,
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

    def reading(self) -> int | None:
        """Redis time now in Unix ms, or None before the first ``sync``."""
        return None if self._offset is None else self.now()

    def now(self) -> int:
        """Redis time now, in Unix ms (call ``sync`` once first)."""
        assert self._offset is not None, "RedisClock.sync() first"
        return int(time.monotonic() * 1000 + self._offset)


class Sweeper:
    """Ends expired locks, exactly once and on time."""

    def __init__(
        self,
        engine: LockEngine,
        *,
        max_sleep: float = 0.025,
        batch: int = 100,
        concurrency: int = 16,
        reconcile_interval: float = 1.0,
        reconcile_batch: int = 500,
    ) -> None:
        self.engine = engine
        self.redis = engine.redis
        self.clock = RedisClock(engine.redis)
        self.max_sleep = max_sleep
        self.batch = batch
        self._limit = asyncio.Semaphore(concurrency)
        self.reconcile_interval = reconcile_interval
        self.reconcile_batch = reconcile_batch
        self._cursor = 0
        self._running = False
        self._tasks: list[asyncio.Task] = []

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the expiry loop."""
        await self.clock.sync()
        self._running = True
        self._tasks = [asyncio.create_task(self._expiry_loop(), name="tablelock-sweeper"),
                       asyncio.create_task(self._reconcile_loop(), name="tablelock-due-reconcile")]

    async def stop(self) -> None:
        """Stop the loop and wait for it."""
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

    # --- the global index, healed -----------------------------------------------------------

    async def _reconcile_loop(self) -> None:
        while self._running:
            await asyncio.sleep(self.reconcile_interval)
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("due-index reconcile failed", exc_info=True)

    async def reconcile(self) -> int:
        """Put the next batch of stores' earliest expiries into tl:due (LT: never later); returns stores seen."""
        self._cursor, members = await self.redis.sscan(keys.STORES, cursor=self._cursor, count=self.reconcile_batch)
        stores = [m.decode() for m in members]
        if not stores:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for store_id in stores:
            pipe.zrange(keys.active(store_id), 0, 0, withscores=True)
        due = {store: first[0][1] for store, first in zip(stores, await pipe.execute()) if first}
        if due:
            await self.redis.zadd(keys.DUE, due, lt=True)
        return len(stores)
