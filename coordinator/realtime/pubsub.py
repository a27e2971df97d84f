"""One reconnecting pub/sub subscription per process, shared by the event stream and rpc.

redis-py's asyncio ``RedisCluster`` has no pub/sub, so the subscription is a plain client on one
node: the configured URL first, then the other nodes in turn when it fails
(``redis_conn.subscriber_urls``). A cluster forwards a plain PUBLISH to every node, so any node
will do; on Redis 7 Cluster the store channels are sharded instead (shards.py).

Two kinds of channel:

* fixed ones, registered with ``listen`` before ``start`` (control, this process's rpc channel);
* watched ones, added and removed while running with ``watch`` / ``unwatch`` (one per store with
  a local socket, stream.py). ``watch`` returns only once Redis has *confirmed* the subscription,
  so whatever the caller reads afterwards (a snapshot) is followed by every later message.

Every (re)connection subscribes all channels, waits for every confirmation, then tells each reader
(``on_subscribed``) before ``subscribed`` is set, so a reader can fill what was published while it
was away (stream.py). A waiter of ``watch`` counts its SUBSCRIBEs sent and answered per channel, so
an answer to an earlier SUBSCRIBE (before an UNSUBSCRIBE) never releases a later watcher early.

A dead link is found one way: the subscriber PINGs every ``PING_EVERY`` seconds and gives the
connection up after ``DEAD_AFTER`` seconds of silence (a PING's answer counts as a word). Retries
back off from 50 ms to 2 s, and the next attempt tries the next URL.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any, Iterable, Protocol, Sequence

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from coordinator.store import keys
from coordinator.store.sentinel import subscriber_client

log = logging.getLogger(__name__)

#: Channel of process-to-process control messages (hub.disconnect_terminal).
CONTROL_CHANNEL = f"{keys.PREFIX}:control"

#: The subscription is PINGed this often and given up after DEAD_AFTER of silence.
PING_EVERY = 5.0
DEAD_AFTER = 3 * PING_EVERY
#: How long ``watch`` waits for Redis to confirm a subscription before giving up.
WATCH_TIMEOUT = 5.0
_BACKOFF_MIN, _BACKOFF_MAX = 0.05, 2.0
_MESSAGES = (b"message", b"smessage")


async def publish_control(redis: Any, message: dict[str, Any]) -> None:
    """Send a control message to every process's subscription."""
    await redis.publish(CONTROL_CHANNEL, json.dumps(message, separators=(",", ":")))


class Reader(Protocol):
    """What a subscriber hands messages to (EventStream, ErpRpc)."""

    async def on_subscribed(self, count: int) -> None:
        """The channels are subscribed (``count`` = subscriptions so far, 1 the first time)."""

    async def on_message(self, channel: bytes, data: bytes) -> None:
        """One message published on one of the reader's channels."""


class Link:
    """One pub/sub connection: the channels it must hold, their confirmations, its read loop.

    ``subscribe_cmd`` is SUBSCRIBE, or SSUBSCRIBE for a shard's node (shards.py). The loop ends
    by raising when the connection fails; its owner decides where to connect next.
    """

    def __init__(self, client: Redis, subscribe_cmd: str, hand_over: Callable[[bytes, bytes], Any],
                 *, ping_every: float, dead_after: float) -> None:
        self.client = client
        self.pubsub = client.pubsub()
        self._sub = subscribe_cmd
        self._unsub = "SUNSUBSCRIBE" if subscribe_cmd == "SSUBSCRIBE" else "UNSUBSCRIBE"
        self._hand_over = hand_over
        self._ping_every, self._dead_after = ping_every, dead_after
        #: Channels this connection subscribes (sent, answered or not) and has not unsubscribed.
        self.held: set[bytes] = set()
        #: SUBSCRIBEs sent on this connection and not yet answered, per channel.
        self._unanswered: dict[bytes, int] = {}
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self.alive = True

    async def subscribe(self, channels: Sequence[bytes]) -> None:
        """Send one SUBSCRIBE for ``channels`` (confirmations come through ``run``)."""
        if not channels:
            return
        for channel in channels:
            self.held.add(channel)
            self._unanswered[channel] = self._unanswered.get(channel, 0) + 1
        await self.pubsub.execute_command(self._sub, *channels)

    async def unsubscribe(self, channels: Sequence[bytes]) -> None:
        """Send one UNSUBSCRIBE for ``channels``."""
        if channels:
            self.held.difference_update(channels)
            await self.pubsub.execute_command(self._unsub, *channels)

    def confirmed(self, channel: bytes) -> asyncio.Future[None]:
        """A future done once every SUBSCRIBE of ``channel`` sent so far is answered."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._unanswered.get(channel, 0) == 0:
            future.set_result(None)
        else:
            self._waiters.setdefault(channel, []).append(future)
        return future

    def fail_waiters(self) -> None:
        """The connection is gone: waiters learn it (the owner resubscribes elsewhere)."""
        self.alive = False
        for futures in self._waiters.values():
            for future in futures:
                if not future.done():
                    future.set_exception(ConnectionError("pub/sub connection lost"))
        self._waiters.clear()

    async def run(self, ready: Callable[[], Any] | None = None) -> None:
        """Read until the connection fails; ``ready`` runs once every initial SUBSCRIBE is answered."""
        loop = asyncio.get_running_loop()
        heard = next_ping = loop.time()
        while True:
            if ready is not None and not any(self._unanswered.values()):
                await ready()
                ready = None
            now = loop.time()
            if now >= next_ping:
                await self.pubsub.ping()
                next_ping = now + self._ping_every
            response = await self.pubsub.parse_response(block=False, timeout=1.0)
            now = loop.time()
            if response is None:
                if now - heard > self._dead_after:
                    raise ConnectionError(f"pub/sub subscription silent for {now - heard:.0f}s")
                continue
            heard = now
            if not isinstance(response, list) or len(response) < 3:
                continue  # a PING's answer
            kind, channel = response[0], response[1]
            if kind in _MESSAGES:
                await self._hand_over(channel, response[2])
            elif kind in (b"subscribe", b"ssubscribe"):
                self._answered(channel)
            elif kind == b"sunsubscribe" and channel in self.held:
                # Not asked for: the slot moved (failover, resharding). Start over where it is now.
                raise ConnectionError(f"Redis dropped the sharded subscription of {channel!r}")

    def _answered(self, channel: bytes) -> None:
        left = self._unanswered.get(channel, 0) - 1
        if left > 0:
            self._unanswered[channel] = left
            return
        self._unanswered.pop(channel, None)
        for future in self._waiters.pop(channel, ()):
            if not future.done():
                future.set_result(None)

    async def aclose(self) -> None:
        """Close the connection (errors of a broken one ignored)."""
        self.fail_waiters()
        await _close(self.pubsub, self.client)


class Subscriber:
    """A plain pub/sub client that keeps its channels subscribed, reconnecting as needed."""

    def __init__(self, urls: Sequence[str], *, ping_every: float = PING_EVERY, dead_after: float = DEAD_AFTER) -> None:
        self._urls = list(urls) or [""]
        self._ping_every = ping_every
        self._dead_after = dead_after
        self._readers: dict[bytes, Reader] = {}
        self._watched: dict[bytes, Reader] = {}
        self._link: Link | None = None
        self._task: asyncio.Task[None] | None = None
        self._running = True
        self.subscribed = asyncio.Event()
        #: Number of (re)subscriptions so far; tests and logs read it.
        self.subscriptions = 0
        #: Messages received on every channel so far (tests and bench/p7 count them).
        self.messages = 0

    def listen(self, channels: Iterable[str], reader: Reader) -> None:
        """Route ``channels`` to ``reader`` (before ``start``)."""
        for channel in channels:
            self._readers[channel.encode()] = reader

    @property
    def watched(self) -> set[bytes]:
        """The watched channels (subscribed, or to be on the next connection)."""
        return set(self._watched)

    async def watch(self, channel: str, reader: Reader, timeout: float = WATCH_TIMEOUT) -> None:
        """Subscribe ``channel`` for ``reader``; return once Redis confirmed it (ConnectionError if not in time)."""
        name = channel.encode()
        self._watched[name] = reader
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await self.subscribed.wait()
                    link = self._link
                    if link is None or not link.alive:
                        await asyncio.sleep(_BACKOFF_MIN)
                        continue
                    try:
                        if name not in link.held:
                            await link.subscribe([name])
                        await link.confirmed(name)
                        return
                    except (ConnectionError, OSError):
                        continue  # the next connection subscribes it with the rest
        except TimeoutError:
            raise ConnectionError(f"pub/sub subscription of {channel} not confirmed in {timeout:g}s") from None

    async def unwatch(self, channel: str) -> None:
        """Stop receiving ``channel`` (the next connection leaves it out too)."""
        name = channel.encode()
        if self._watched.pop(name, None) is None:
            return
        link = self._link
        if link is not None and link.alive and name in link.held:
            try:
                await link.unsubscribe([name])
            except (ConnectionError, OSError):
                pass  # a dead connection holds nothing; the next one leaves it out

    async def start(self, timeout: float = 5.0) -> None:
        """Subscribe in the background and wait (bounded) for the first subscription."""
        self._task = asyncio.create_task(self._run(), name="tablelock-pubsub")
        try:
            await asyncio.wait_for(self.subscribed.wait(), timeout)
        except asyncio.TimeoutError:
            log.warning("pub/sub subscription not up after %.1fs; still trying", timeout)

    async def stop(self) -> None:
        """Stop listening and wait for the listener."""
        # The flag as well as cancel(): a Redis call may swallow one cancellation.
        self._running = False
        while self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait([self._task], timeout=1.0)
        self._task = None
        self.subscribed.clear()

    async def _run(self) -> None:
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
            link = Link(client, "SUBSCRIBE", self._hand_over, ping_every=self._ping_every,
                        dead_after=self._dead_after)
            try:
                await link.subscribe([*self._readers, *self._watched])
                self._link = link

                async def ready() -> None:
                    self.subscriptions += 1
                    if self.subscriptions > 1:
                        log.info("pub/sub subscription restored on %s", url)
                    for reader in dict.fromkeys([*self._readers.values(), *self._watched.values()]):
                        await reader.on_subscribed(self.subscriptions)
                    self.subscribed.set()

                backoff = _BACKOFF_MIN
                await link.run(ready)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep listening whatever happened to this connection
                self.subscribed.clear()
                log.warning("pub/sub subscription on %s lost (%s); retrying in %.2fs", url, exc, backoff)
                attempt += 1
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
            finally:
                self._link = None
                await asyncio.shield(link.aclose())

    async def _hand_over(self, channel: bytes, data: bytes) -> None:
        self.messages += 1
        reader = self._readers.get(channel) or self._watched.get(channel)
        if reader is None:
            return  # unwatched meanwhile
        try:
            await reader.on_message(channel, data)
        except Exception:  # one bad message must not cost the subscription
            log.exception("handling a message on %r failed", channel)


async def _close(pubsub: Any, client: Redis) -> None:
    for closing in (pubsub.aclose, client.aclose):
        try:
            await closing()
        except Exception:  # closing a broken connection: nothing left to do
            pass
