"""The store event streams seen from one process: live delivery in seq order, gap filling, resume, snapshot.

Every script appends its events to ``tl:{s}:events`` (id ``0-<seq>``) and PUBLISHes them on the
store's own channel ``keys.live(s)`` in the same atomic step (lua/lib.lua; a plain PUBLISH, which a
Redis Cluster still forwards to every node over its bus). One ``EventStream`` per process reads, through
the process's one pub/sub subscription (pubsub.py), the control channel and the live channels of
the stores it serves: ``watch`` subscribes a store's channel when its first local socket arrives,
``forget`` unsubscribes it ``linger`` seconds after the last one left (unless one came back), so a
process hears no event of a store it does not serve. Each event goes to the hub in seq order.

Pub/sub is at-most-once: a subscription that drops loses what was published meanwhile. The
stream is the record, so nothing is lost for a store that has local subscribers:

* ``last[store]`` is the last seq delivered for each store with local sockets. An event whose
  seq jumps past ``last + 1`` is preceded by the missing ones, read with XRANGE.
* After a resubscribe (``on_subscribed``, before the subscriber reports itself subscribed)
  every such store is brought up to its current seq the same way, so a store that went quiet
  right after the outage does not wait for its next event.
* A gap the stream no longer holds (trimmed) cannot be filled: ``hub.resync`` closes that
  store's sockets (4409) and their clients resume, getting a snapshot.

Timeline of a socket joining (session.py), showing why it sees no gap and no duplicate:

    t0  hub.register(conn)           live events for the store start queueing on conn
    t1  watch(store) returns         Redis confirmed the store's channel is subscribed
    t2  snapshot()/replay() → S      everything <= S is in what the client receives first
    t3  note(store, S)               start tracking the store at S if it was not tracked
    t4  writer starts                queued events with seq <= S are skipped, > S sent

An event published before t2 has seq <= S; one published after t2 was published after t1, on a
channel Redis already counts us on, so it reaches the listener (after t0) and is queued. A jump
in seq (a connection lost meanwhile) is filled from the stream as above.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from coordinator.core.tables import current_order
from coordinator.realtime.pubsub import CONTROL_CHANNEL, Subscriber
from coordinator.store import keys
from coordinator.store.scripts import Scripts
from coordinator.store.snapshot import read_snapshot

if TYPE_CHECKING:
    from coordinator.realtime.hub import Hub

log = logging.getLogger(__name__)

#: XRANGE page size for resume and gap filling.
PAGE = 1000

_CONTROL = CONTROL_CHANNEL.encode()


def _entry_seq(entry_id: bytes | str) -> int:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(raw.split("-", 1)[1])


def _entry_event(entry: tuple[Any, dict[bytes, bytes]]) -> dict[str, Any]:
    return json.loads(entry[1][b"e"])


@dataclass
class StoreSnapshot:
    """A store as of event ``seq``: open orders and live locks (tokens still in)."""

    seq: int
    now: int
    #: order_id -> (table_id, opened_at) for every open order
    open: dict[str, tuple[str, int]]
    orders: dict[str, dict[str, Any]]
    locks: list[dict[str, Any]]

    def table_order(self, table_id: str) -> dict[str, Any] | None:
        """The table's open order (the most recently opened one), as GET /h5/table picks it."""
        order_id = current_order({o: v for o, v in self.open.items() if o in self.orders}, table_id)
        return self.orders[order_id] if order_id is not None else None


class EventStream:
    """This process's live events of every store, in seq order, and reads of the streams."""

    def __init__(self, redis: Any, subscriber: Subscriber, hub: Hub, scripts: Scripts, *, linger: float = 2.0) -> None:
        self.redis = redis
        self.subscriber = subscriber
        self.hub = hub
        self.linger = linger
        self._last: dict[str, int] = {}
        self._scripts = scripts
        #: Stores without a local socket whose channel is still subscribed, until the timer fires.
        self._lingering: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        subscriber.listen([CONTROL_CHANNEL], self)

    @property
    def subscriptions(self) -> int:
        """Number of (re)subscriptions of the process's pub/sub so far."""
        return self.subscriber.subscriptions

    # --- the subscription -----------------------------------------------------------------

    async def on_subscribed(self, count: int) -> None:
        """After a resubscription, fill what was published while the subscription was down."""
        if count > 1:
            log.info("event subscription restored; filling gaps")
            await self._catch_up()

    async def on_message(self, channel: bytes, data: bytes) -> None:
        """Take one message of the events or the control channel."""
        await self._on_message(channel, data)

    async def _on_message(self, channel: bytes, data: bytes) -> None:
        if channel == _CONTROL:
            try:
                self.hub.on_control(json.loads(data))
            except Exception:
                log.exception("bad control message %r", data[:200])
            return
        try:
            event = json.loads(data)
            store_id, seq = event["store_id"], int(event["seq"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed event %r", data[:200])
            return
        await self.offer(store_id, seq, event)

    async def offer(self, store_id: str, seq: int, event: dict[str, Any]) -> None:
        """Deliver a live event in seq order: drop repeats, fill a jump from the stream first."""
        if not self.hub.wants(store_id):
            self._last.pop(store_id, None)
            return
        last = self._last.get(store_id)
        if last is not None:
            if seq <= last:
                return  # already delivered (filled from the stream, or a repeat)
            if seq > last + 1 and not await self._fill(store_id, last, seq - 1):
                return
        self._last[store_id] = seq
        self._hand_over(event)

    def _hand_over(self, event: dict[str, Any]) -> None:
        try:
            self.hub.dispatch(event)
        except Exception:  # one bad event must not cost the subscription
            log.exception("delivering event %s/%s failed", event.get("store_id"), event.get("seq"))

    async def _fill(self, store_id: str, last: int, upto: int) -> bool:
        """Deliver events (last, upto] from the stream; False (and resync) if it lost some."""
        missed = await self._range(store_id, last, upto)
        if len(missed) != upto - last or (missed and missed[0]["seq"] != last + 1):
            log.warning("store %s: events %d..%d no longer retained; resyncing its sockets", store_id, last + 1, upto)
            self._last.pop(store_id, None)
            self.hub.resync(store_id)
            return False
        log.info("store %s: filled events %d..%d from the stream", store_id, last + 1, upto)
        for event in missed:
            self._hand_over(event)
        self._last[store_id] = upto
        return True

    async def _catch_up(self) -> None:
        """After a resubscription, bring every local store up to its current seq."""
        for store_id in list(self.hub.stores()):
            last = self._last.get(store_id)
            if last is None:
                # Sockets still starting, with no seq noted yet: they may have missed events.
                self.hub.resync(store_id)
                continue
            current = int(await self.redis.get(keys.seq(store_id)) or 0)
            if current > last:
                await self._fill(store_id, last, current)

    # --- tracking -------------------------------------------------------------------------

    async def watch(self, store_id: str) -> None:
        """Subscribe the store's live channel (t1 of the timeline above); ConnectionError if Redis does not confirm it."""
        timer = self._lingering.pop(store_id, None)
        if timer is not None:
            timer.cancel()
        await self.subscriber.watch(keys.live(store_id), self)

    def note(self, store_id: str, seq: int) -> None:
        """A socket of the store starts live delivery after ``seq``: track the store from there."""
        self._last.setdefault(store_id, seq)

    def forget(self, store_id: str) -> None:
        """The store's last local socket closed: stop tracking it, and unsubscribe after ``linger``."""
        self._last.pop(store_id, None)
        if store_id not in self._lingering:
            loop = asyncio.get_running_loop()
            self._lingering[store_id] = loop.call_later(self.linger, self._unwatch, store_id)

    def _unwatch(self, store_id: str) -> None:
        self._lingering.pop(store_id, None)
        if self.hub.wants(store_id):
            return  # a socket came back (its watch is under way or done)
        task = asyncio.create_task(self.subscriber.unwatch(keys.live(store_id)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Drop pending unsubscriptions (the subscriber, stopped next, holds nothing after)."""
        for timer in self._lingering.values():
            timer.cancel()
        self._lingering.clear()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)

    def last_seq(self, store_id: str) -> int | None:
        """The last seq delivered for the store, or None if it is not tracked."""
        return self._last.get(store_id)

    # --- reads ----------------------------------------------------------------------------

    async def _range(self, store_id: str, after: int, upto: int | None = None) -> list[dict[str, Any]]:
        """Events with after < seq <= upto (or to the end), oldest first."""
        out: list[dict[str, Any]] = []
        high = "+" if upto is None else f"0-{upto}"
        while True:
            entries = await self.redis.xrange(keys.events(store_id), min=f"(0-{after}", max=high, count=PAGE)
            out.extend(_entry_event(e) for e in entries)
            if len(entries) < PAGE:
                return out
            after = _entry_seq(entries[-1][0])

    async def replay(self, store_id: str, since: int, limit: int | None = None) -> list[dict[str, Any]] | None:
        """Every event after ``since`` (staff form, unfiltered), or None if the stream lost some or
        more than ``limit`` would be read (the caller sends a snapshot instead)."""
        current = int(await self.redis.get(keys.seq(store_id)) or 0)
        if since > current:
            return None  # the client is ahead of the store (its data was reset): start over
        if limit is not None and current - since > limit:
            return None  # too far behind to replay cheaply: a snapshot is smaller
        entries = await self.redis.xrange(keys.events(store_id), min=f"(0-{since}", max=f"0-{current}", count=PAGE)
        events = [_entry_event(e) for e in entries]
        if len(entries) == PAGE:
            events += await self._range(store_id, _entry_seq(entries[-1][0]), current)
        if current > since and (not events or events[0]["seq"] != since + 1):
            return None  # trimmed past ``since``
        return events

    async def snapshot(self, store_id: str) -> StoreSnapshot:
        """The store's open orders and live locks, exactly as of its current seq."""
        seq, now, flat_open, orders, locks = await read_snapshot(self._scripts, store_id)
        open_orders: dict[str, tuple[str, int]] = {}
        for order_id, value in zip(flat_open[::2], flat_open[1::2]):
            table_id, _, opened_at = value.decode().rpartition("|")
            open_orders[order_id.decode()] = (table_id, int(opened_at))
        parsed = [json.loads(o) for o in orders]
        live = [lock for lock in map(json.loads, locks) if int(lock["expires_at"]) > now]
        live.sort(key=lambda l: (l["order_id"], l["kind"]))
        return StoreSnapshot(int(seq), int(now), open_orders, {o["order_id"]: o for o in parsed}, live)
