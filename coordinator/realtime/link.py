"""One pub/sub connection: the channels it holds, their confirmations, and its read loop.

Used by pubsub.py (the process's one subscription, a new Link per connection). Replies are read raw (``parse_response``), so a subscription's
confirmation is seen: ``confirmed(channel)`` is done once every SUBSCRIBE of the channel sent on
this connection has been answered, never on the answer to an earlier one. Commands are sent from
the caller's task while the loop reads: redis-py writes and reads a connection independently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Sequence

from redis.asyncio import Redis


class Link:
    """One pub/sub connection: the channels it must hold, their confirmations, its read loop.

    The loop ends by raising when the connection fails; its owner decides where to connect next.
    """

    def __init__(self, client: Redis, hand_over: Callable[[bytes, bytes], Any],
                 *, ping_every: float, dead_after: float) -> None:
        self.client = client
        self.pubsub = client.pubsub()
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
        await self.pubsub.execute_command("SUBSCRIBE", *channels)

    async def unsubscribe(self, channels: Sequence[bytes]) -> None:
        """Send one UNSUBSCRIBE for ``channels``."""
        if channels:
            self.held.difference_update(channels)
            await self.pubsub.execute_command("UNSUBSCRIBE", *channels)

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
            if kind == b"message":
                await self._hand_over(channel, response[2])
            elif kind == b"subscribe":
                self._answered(channel)

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


async def _close(pubsub: Any, client: Redis) -> None:
    for closing in (pubsub.aclose, client.aclose):
        try:
            await closing()
        except Exception:  # closing a broken connection: nothing left to do
            pass
