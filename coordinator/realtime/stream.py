"""The store event streams seen from one process: live subscription, gap filling, resume, snapshot.

Every script appends its events to ``tl:{s}:events`` (id ``0-<seq>``) and PUBLISHes them on
``keys.EVENTS_CHANNEL`` in the same atomic step (lua/lib.lua). One ``EventStream`` per process
holds one pub/sub subscription and hands each event, in seq order, to the hub.

Pub/sub is at-most-once: a subscription that drops loses what was published meanwhile. The
stream is the record, so nothing is lost for a store that has local subscribers:

* ``last[store]`` is the last seq delivered for each store with local sockets. An event whose
  seq jumps past ``last + 1`` is preceded by the missing ones, read with XRANGE.
* After a resubscribe every such store is brought up to its current seq the same way, so a
  store that went quiet right after the outage does not wait for its next event.
* A gap the stream no longer holds (trimmed) cannot be filled: ``resync`` closes that store's
  sockets (4409) and their clients resume, getting a snapshot.

Timeline of a socket joining (ws.py), showing why it sees no gap and no duplicate:

    t0  hub.register(conn)           live events for the store start queueing on conn
    t1  snapshot()/replay() → S      everything <= S is in what the client receives first
    t2  note(store, S)               start tracking the store at S if it was not tracked
    t3  writer starts                queued events with seq <= S are skipped, > S sent

An event published before t1 has seq <= S; one published after t1 has seq > S and reaches the
listener after t0, so it is queued. Redis Cluster: redis-py's asyncio RedisCluster has no
pub/sub, and a plain PUBLISH reaches every node, so the subscription is a plain client on one
node (the configured URL first, then the others in turn if it fails).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from coordinator.store import keys
from coordinator.store.redis_conn import is_cluster
from coordinator.store.sentinel import subscriber_client

log = logging.getLogger(__name__)

#: Channel of process-to-process control messages (hub.disconnect_terminal).
CONTROL_CHANNEL = f"{keys.PREFIX}:control"

#: XRANGE page size for resume and gap filling.
PAGE = 1000
#: The listener PINGs its subscription this often and gives it up after DEAD_AFTER of silence.
PING_EVERY = 5.0
DEAD_AFTER = 3 * PING_EVERY
_BACKOFF_MIN, _BACKOFF_MAX = 0.05, 2.0

_SNAPSHOT_LUA = (resources.files("coordinator.store") / "lua" / "snapshot.lua").read_text()


def _entry_seq(entry_id: bytes | str) -> int:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(raw.split("-", 1)[1])


def _entry_event(entry: tuple[Any, dict[bytes, bytes]]) -> dict[str, Any]:
    return json.loads(entry[1][b"e"])


async def publish_control(redis: Any, message: dict[str, Any]) -> None:
    """Send a control message to every process's EventStream."""
    await redis.publish(CONTROL_CHANNEL, json.dumps(message, separators=(",", ":")))


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
        candidates = [(at, o) for o, (t, at) in self.open.items() if t == table_id and o in self.orders]
        return self.orders[max(candidates)[1]] if candidates else None


class EventStream:
    """This process's subscription to every store's live events, and reads of the streams."""

    def __init__(
        self,
        redis: Any,
        url: str,
        *,
        deliver: Callable[[dict[str, Any]], None],
        control: Callable[[dict[str, Any]], None],
        wants: Callable[[str], bool],
        local_stores: Callable[[], Iterable[str]],
        resync: Callable[[str], None],
    ) -> None:
        self.redis = redis
        self._urls = [url]
        self._deliver = deliver
        self._control = control
        self._wants = wants
        self._local_stores = local_stores
        self._resync = resync
        self._last: dict[str, int] = {}
        self._snapshot = redis.register_script(_SNAPSHOT_LUA)
        self._task: asyncio.Task | None = None
        self._running = True
        self.subscribed = asyncio.Event()
        #: Number of (re)subscriptions so far; tests and /metrics read it.
        self.subscriptions = 0

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, timeout: float = 5.0) -> None:
        """Subscribe in the background and wait (bounded) for the first subscription."""
        if is_cluster(self.redis):
            self._urls += [self._node_url(n.host, n.port) for n in self.redis.get_nodes()]
        self._task = asyncio.create_task(self._run(), name="tablelock-events")
        try:
            await asyncio.wait_for(self.subscribed.wait(), timeout)
        except asyncio.TimeoutError:
            log.warning("event subscription not up after %.1fs; still trying", timeout)

    async def stop(self) -> None:
        """Stop the listener and wait for it."""
        # The flag as well as cancel(): a Redis call may swallow one cancellation.
        self._running = False
        while self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait([self._task], timeout=1.0)
        self._task = None

    def _node_url(self, host: str, port: int) -> str:
        base = urlsplit(self._urls[0])
        userinfo = base.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
        return urlunsplit((base.scheme, netloc, base.path, base.query, base.fragment))

    # --- the subscription -----------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff, attempt = _BACKOFF_MIN, 0
        while self._running:
            url = self._urls[attempt % len(self._urls)]
            # No retries inside redis-py: a reconnect it did silently would resubscribe without
            # telling us, and what was published meanwhile would be lost unseen.
            # socket_keepalive is TCP only: redis-py's unix socket connection refuses the keyword.
            keepalive = {} if url.startswith("unix:") else {"socket_keepalive": True}
            client = subscriber_client(
                url, decode_responses=False, protocol=2, socket_timeout=None, socket_connect_timeout=1.0,
                retry=Retry(NoBackoff(), 0), **keepalive,
            )
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(keys.EVENTS_CHANNEL, CONTROL_CHANNEL)
                self.subscriptions += 1
                if self.subscriptions > 1:
                    log.info("event subscription restored on %s; filling gaps", url)
                    await self._catch_up()
                self.subscribed.set()
                backoff = _BACKOFF_MIN
                heard = next_ping = loop.time()
                while self._running:
                    now = loop.time()
                    if now >= next_ping:
                        await pubsub.ping()
                        next_ping = now + PING_EVERY
                    message = await pubsub.get_message(timeout=1.0)
                    now = loop.time()
                    if message is None:
                        if now - heard > DEAD_AFTER:
                            raise ConnectionError(f"event subscription silent for {now - heard:.0f}s")
                        continue
                    heard = now
                    if message["type"] == "message":
                        await self._on_message(message["channel"], message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.subscribed.clear()
                log.warning("event subscription on %s lost (%s); retrying in %.2fs", url, exc, backoff)
                attempt += 1
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
            finally:
                await asyncio.shield(self._close(pubsub, client))

    @staticmethod
    async def _close(pubsub: Any, client: Redis) -> None:
        try:
            await pubsub.aclose()
            await client.aclose()
        except Exception:  # closing a broken connection: nothing left to do
            pass

    async def _on_message(self, channel: bytes, data: bytes) -> None:
        if channel == CONTROL_CHANNEL.encode():
            try:
                self._control(json.loads(data))
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
        if not self._wants(store_id):
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
            self._deliver(event)
        except Exception:  # one bad event must not cost the subscription
            log.exception("delivering event %s/%s failed", event.get("store_id"), event.get("seq"))

    async def _fill(self, store_id: str, last: int, upto: int) -> bool:
        """Deliver events (last, upto] from the stream; False (and resync) if it lost some."""
        missed = await self._range(store_id, last, upto)
        if len(missed) != upto - last or (missed and missed[0]["seq"] != last + 1):
            log.warning("store %s: events %d..%d no longer retained; resyncing its sockets", store_id, last + 1, upto)
            self._last.pop(store_id, None)
            self._resync(store_id)
            return False
        log.info("store %s: filled events %d..%d from the stream", store_id, last + 1, upto)
        for event in missed:
            self._hand_over(event)
        self._last[store_id] = upto
        return True

    async def _catch_up(self) -> None:
        """After a resubscription, bring every local store up to its current seq."""
        for store_id in list(self._local_stores()):
            last = self._last.get(store_id)
            if last is None:
                # Sockets still starting, with no seq noted yet: they may have missed events.
                self._resync(store_id)
                continue
            current = int(await self.redis.get(keys.seq(store_id)) or 0)
            if current > last:
                await self._fill(store_id, last, current)

    # --- tracking -------------------------------------------------------------------------

    def note(self, store_id: str, seq: int) -> None:
        """A socket of the store starts live delivery after ``seq``: track the store from there."""
        self._last.setdefault(store_id, seq)

    def forget(self, store_id: str) -> None:
        """The store's last local socket closed: stop tracking it."""
        self._last.pop(store_id, None)

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

    async def replay(self, store_id: str, since: int) -> list[dict[str, Any]] | None:
        """Every event after ``since`` (staff form, unfiltered), or None if the stream lost some."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(keys.seq(store_id))
        pipe.xrange(keys.events(store_id), min=f"(0-{since}", max="+", count=PAGE)
        raw_seq, entries = await pipe.execute()
        current = int(raw_seq or 0)
        if since > current:
            return None  # the client is ahead of the store (its data was reset): start over
        events = [_entry_event(e) for e in entries]
        if len(entries) == PAGE:
            events += await self._range(store_id, _entry_seq(entries[-1][0]))
        if current > since and (not events or events[0]["seq"] != since + 1):
            return None  # trimmed past ``since``
        return events

    async def snapshot(self, store_id: str) -> StoreSnapshot:
        """The store's open orders and live locks, exactly as of its current seq."""
        seq, now, flat_open, orders, locks = await self._snapshot(
            keys=[keys.seq(store_id), keys.open_orders(store_id), keys.active(store_id)],
            args=[keys.order(store_id, ""), keys.locks(store_id, "")],
        )
        open_orders: dict[str, tuple[str, int]] = {}
        for order_id, value in zip(flat_open[::2], flat_open[1::2]):
            table_id, _, opened_at = value.decode().rpartition("|")
            open_orders[order_id.decode()] = (table_id, int(opened_at))
        parsed = [json.loads(o) for o in orders]
        live = [lock for lock in map(json.loads, locks) if int(lock["expires_at"]) > now]
        live.sort(key=lambda l: (l["order_id"], l["kind"]))
        return StoreSnapshot(int(seq), int(now), open_orders, {o["order_id"]: o for o in parsed}, live)
