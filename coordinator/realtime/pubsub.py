"""One reconnecting pub/sub subscription per process, shared by the event stream and rpc.

redis-py's asyncio ``RedisCluster`` has no pub/sub, and a cluster forwards PUBLISH to every
node, so the subscription is a plain client on one node: the configured URL first, then the
other nodes in turn when it fails (``redis_conn.subscriber_urls``).

Readers register their channels with ``listen`` before ``start``. Every (re)subscription
subscribes all of them on one connection, then tells each reader (``on_subscribed``) before
``subscribed`` is set, so a reader can fill what was published while it was away (stream.py).

A dead link is found one way: the subscriber PINGs every ``PING_EVERY`` seconds and gives the
connection up after ``DEAD_AFTER`` seconds of silence (a PING's answer counts as a word). Retries
back off from 50 ms to 2 s, and the next attempt tries the next URL.
"""

from __future__ import annotations

import asyncio
import json
import logging
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
_BACKOFF_MIN, _BACKOFF_MAX = 0.05, 2.0


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
        self._task: asyncio.Task[None] | None = None
        self._running = True
        self.subscribed = asyncio.Event()
        #: Number of (re)subscriptions so far; tests and logs read it.
        self.subscriptions = 0

    def listen(self, channels: Iterable[str], reader: Reader) -> None:
        """Route ``channels`` to ``reader`` (before ``start``)."""
        for channel in channels:
            self._readers[channel.encode()] = reader

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
                await pubsub.subscribe(*self._readers)
                self.subscriptions += 1
                if self.subscriptions > 1:
                    log.info("pub/sub subscription restored on %s", url)
                for reader in dict.fromkeys(self._readers.values()):
                    await reader.on_subscribed(self.subscriptions)
                self.subscribed.set()
                backoff = _BACKOFF_MIN
                heard = next_ping = loop.time()
                while self._running:
                    now = loop.time()
                    if now >= next_ping:
                        await pubsub.ping()
                        next_ping = now + self._ping_every
                    message = await pubsub.get_message(timeout=1.0)
                    now = loop.time()
                    if message is None:
                        if now - heard > self._dead_after:
                            raise ConnectionError(f"pub/sub subscription silent for {now - heard:.0f}s")
                        continue
                    heard = now
                    if message["type"] == "message":
                        await self._hand_over(message["channel"], message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep listening whatever happened to this connection
                self.subscribed.clear()
                log.warning("pub/sub subscription on %s lost (%s); retrying in %.2fs", url, exc, backoff)
                attempt += 1
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
            finally:
                await asyncio.shield(_close(pubsub, client))

    async def _hand_over(self, channel: bytes, data: bytes) -> None:
        reader = self._readers.get(channel)
        if reader is None:
            return
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
