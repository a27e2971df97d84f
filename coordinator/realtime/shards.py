"""Store channels on Redis 7 Cluster: sharded pub/sub, one SSUBSCRIBE connection per primary.

A plain PUBLISH on a cluster is copied to every node over the cluster bus, so at 100,000 stores
every node carries every store's events. With ``SPUBLISH`` (lua/lib.lua, when the engine runs
``sharded_pubsub``) an event stays on the shard owning its store's slot; a process serving the
store subscribes there with ``SSUBSCRIBE`` (``store/redis_conn.ShardMap`` says where).

A shard's connection is opened when its first channel is wanted and kept while it lives. When
it fails, or Redis drops a channel by itself (``sunsubscribe`` we did not ask for: a failover or
a moved slot), every channel it held is placed again after re-reading the slots, retrying with
backoff, and then ``resubscribed`` runs so the readers fill what was published meanwhile from
the streams (stream.py ``on_subscribed``), as after a loss of the plain subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from coordinator.realtime.link import Link
from coordinator.store.redis_conn import ShardMap
from coordinator.store.sentinel import subscriber_client

log = logging.getLogger(__name__)

_BACKOFF_MIN, _BACKOFF_MAX = 0.05, 2.0


class ShardLinks:
    """The shard channels this process wants, each held on the connection of its slot's primary."""

    def __init__(self, shards: ShardMap, hand_over: Callable[[bytes, bytes], Awaitable[Any]],
                 resubscribed: Callable[[list[bytes]], Awaitable[None]], *, ping_every: float,
                 dead_after: float) -> None:
        self._shards = shards
        self._hand_over = hand_over
        self._resubscribed = resubscribed
        self._ping_every, self._dead_after = ping_every, dead_after
        self._wanted: set[bytes] = set()
        self._links: dict[str, Link] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._opening: dict[str, asyncio.Lock] = {}
        self._running = True

    @property
    def nodes(self) -> list[str]:
        """URLs of the nodes this process holds a shard connection to."""
        return list(self._links)

    async def subscribe(self, channel: bytes) -> None:
        """Hold ``channel`` on its shard's connection; return once confirmed (ConnectionError if it failed)."""
        self._wanted.add(channel)
        try:
            link = await self._link(self._shards.url_for(channel))
        except (OSError, RedisError):
            with contextlib.suppress(Exception):
                await self._shards.refresh()  # the node may be gone: the next try asks the new owner
            raise
        if channel not in link.held:
            await link.subscribe([channel])
        await link.confirmed(channel)

    async def unsubscribe(self, channel: bytes) -> None:
        """Stop holding ``channel``."""
        self._wanted.discard(channel)
        for link in list(self._links.values()):
            if channel in link.held and link.alive:
                try:
                    await link.unsubscribe([channel])
                except (ConnectionError, OSError):
                    pass  # a dead connection holds nothing; its channels are placed again if wanted

    async def stop(self) -> None:
        """Close every shard connection and place nothing again."""
        self._running = False
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        for link in list(self._links.values()):
            await link.aclose()
        self._links.clear()

    async def _link(self, url: str) -> Link:
        link = self._links.get(url)
        if link is not None and link.alive:
            return link
        async with self._opening.setdefault(url, asyncio.Lock()):
            link = self._links.get(url)
            if link is not None and link.alive:
                return link
            if not self._running:
                raise ConnectionError("pub/sub stopped")
            keepalive = {} if url.startswith("unix:") else {"socket_keepalive": True}
            client = subscriber_client(
                url, decode_responses=False, protocol=2, socket_timeout=None, socket_connect_timeout=1.0,
                retry=Retry(NoBackoff(), 0), **keepalive,
            )
            link = Link(client, "SSUBSCRIBE", self._hand_over, ping_every=self._ping_every,
                        dead_after=self._dead_after)
            try:
                await link.pubsub.connect()
            except BaseException:
                await link.aclose()
                raise
            self._links[url] = link
            self._spawn(self._serve(url, link), f"tablelock-shard-{url.rsplit(':', 1)[-1]}")
            return link

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, url: str, link: Link) -> None:
        try:
            await link.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the connection failed, or a slot moved: place its channels again
            log.warning("shard pub/sub connection to %s lost (%s); placing its channels again", url, exc)
        finally:
            if self._links.get(url) is link:
                del self._links[url]
            await asyncio.shield(link.aclose())
        orphans = [channel for channel in link.held if channel in self._wanted]
        if orphans and self._running:
            await self._place(orphans)

    async def _place(self, channels: list[bytes]) -> None:
        """Subscribe ``channels`` where the slots are now, retrying; then let the readers catch up."""
        backoff = _BACKOFF_MIN
        while self._running:
            try:
                await self._shards.refresh()
                for channel in channels:
                    if channel in self._wanted:
                        await self.subscribe(channel)
                break
            except Exception as exc:  # the cluster is failing over: wait and read the slots again
                log.info("placing %d shard channel(s) failed (%s); retrying in %.2fs", len(channels), exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
        if self._running:
            await self._resubscribed([c for c in channels if c in self._wanted])
