"""One reconnecting pub/sub subscription per process, shared by the event stream and rpc.

redis-py's asyncio ``RedisCluster`` has no pub/sub, so the subscription is a plain client on one
node: the configured URL first, then the other nodes in turn when it fails
(``redis_conn.subscriber_urls``). A cluster forwards a plain PUBLISH to every node over the
cluster bus, so any node will do (sharded pub/sub, Redis 7, is not used: the tested server is 6.2).

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
from typing import Any, Iterable, Protocol, Sequence

from prometheus_client import Counter
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from coordinator import metrics
from coordinator.realtime.link import Link
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

MESSAGES = Counter(
    "tablelock_pubsub_messages_total", "Messages this process's pub/sub subscriptions received (every channel)",
    registry=metrics.REGISTRY,
)


async def publish_control(redis: Any, message: dict[str, Any]) -> None:
    """Send a control message to every process's subscription."""
    await redis.publish(CONTROL_CHANNEL, json.dumps(message, separators=(",", ":")))


class Reader(Protocol):
    """What a subscriber hands messages to (EventStream, ErpRpc)."""

    async def on_subscribed(self, count: int) -> None:
        """The channels are subscribed (``count`` = subscriptions so far, 1 the first time)."""

    async def on_message(self, channel: bytes, data: bytes) -> None:
        """One message published on one of the reader's channels."""


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
                    except (ConnectionError, OSError, RedisError):
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
            except (ConnectionError, OSError, RedisError):
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
            link = Link(client, self._hand_over, ping_every=self._ping_every, dead_after=self._dead_after)
            try:
                await link.subscribe([*self._readers, *self._watched])
                self._link = link

                async def ready(url: str = url) -> None:
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
        MESSAGES.inc()
        reader = self._readers.get(channel) or self._watched.get(channel)
        if reader is None:
            return  # unwatched meanwhile
        try:
            await reader.on_message(channel, data)
        except Exception:  # one bad message must not cost the subscription
            log.exception("handling a message on %r failed", channel)
