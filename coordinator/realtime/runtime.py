"""The one owner of real time in a coordinator process: builds, starts and stops its parts.

    part        what it is                                         depends on
    subscriber  the one pub/sub connection (pubsub.py)             the Redis URLs
    liveness    presence, master registry, up/down, stale loop     engine
    hub         local sockets and their fan-out (hub.py)           liveness, auth
    stream      live events in seq order, replay, snapshot         subscriber, hub
    rpc         ERP RPC across processes (rpc.py)                  subscriber, hub, liveness.masters
    sweeper     lock expiry (sweeper.py)                           engine

Each part gets what it needs in its constructor, so the table is the build order. ``start``
follows it: liveness (master heartbeat, stale loop), the hub's heartbeat, then the subscriber,
once the stream and rpc have registered their channels (its first subscription is awaited,
bounded), then the sweeper. ``stop`` goes in reverse: the sweeper; rpc (calls in flight fail,
master sockets withdrawn); the hub (sockets closed, their closing work settled: it still needs
liveness and Redis); liveness; the subscriber last.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from redis.exceptions import RedisError

from coordinator.realtime.admission import Admission, Caps
from coordinator.realtime.hub import Connection, Hub, HubClosed
from coordinator.realtime.liveness import Liveness, MasterRegistry
from coordinator.realtime.messages import CloseCode
from coordinator.realtime.pubsub import Subscriber
from coordinator.realtime.rpc import ErpRpc
from coordinator.realtime.session import CommandRunner, Session
from coordinator.realtime.stream import EventStream
from coordinator.realtime.sweeper import Sweeper
from coordinator.settings import Settings
from coordinator.store.auth import Authenticator, Principal
from coordinator.store.engine import LockEngine
from coordinator.store.redis_conn import subscriber_urls


class Realtime:
    """Hub, stream, liveness, rpc and sweeper of one process, built and stopped together."""

    def __init__(self, settings: Settings, engine: LockEngine, auth: Authenticator, *, sweeper: bool = True) -> None:
        redis = engine.redis
        self.settings = settings
        self.subscriber = Subscriber(subscriber_urls(settings.redis_url or "", redis))
        # The terminal cache is trusted while revocations reach this process (store/auth_cache.py).
        auth.cache.link = lambda: self.subscriber.subscriptions if self.subscriber.subscribed.is_set() else None
        self.liveness = Liveness(engine, MasterRegistry(redis, engine.now))
        self.hub = Hub(redis, self.liveness, auth, heartbeat_seconds=settings.ws_heartbeat_seconds)
        self.stream = EventStream(redis, self.subscriber, self.hub, engine.scripts,
                                  linger=settings.ws_store_linger_seconds)
        self.rpc = ErpRpc(redis, subscriber=self.subscriber, terminals=self.hub, masters=self.liveness.masters)
        self.admission = Admission(engine.scripts, Caps(
            per_session=settings.ws_per_h5_session, per_terminal=settings.ws_per_terminal,
            per_address=settings.ws_per_address, lease_ms=settings.ws_slot_ttl_seconds * 1000))
        #: None when the app runs without expiry (a test of the scripts' own expiry checks).
        self.sweeper = Sweeper(engine) if sweeper else None
        if self.sweeper is not None:
            auth.clock = self.sweeper.clock.reading  # kept in step with Redis by the expiry loop (every 5 s)
            # The N workers of one `serve --workers N` each poll the due index N times less often:
            # together they poll Redis as often as one process, and a due lock is still caught as
            # soon (whichever worker polls first expires it; the script makes that exactly once).
            self.sweeper.max_sleep *= settings.workers

    async def start(self) -> None:
        """Start every part, in build order."""
        await self.liveness.start()
        self.hub.start_heartbeat()
        self.admission.start()
        await self.subscriber.start()
        if self.sweeper is not None:
            await self.sweeper.start()

    async def stop(self) -> None:
        """Stop every part, in reverse order."""
        if self.sweeper is not None:
            await self.sweeper.stop()
        await self.rpc.close()
        await self.hub.aclose()
        await self.admission.stop()
        await self.liveness.stop()
        await self.stream.close()
        await self.subscriber.stop()

    async def close_sockets(self) -> None:
        """Close every websocket with GOING_AWAY and take no new ones (aiohttp's on_shutdown)."""
        await self.hub.close_all()

    async def serve(self, ws: web.WebSocketResponse, principal: Principal, token: str | None,
                    since: int | None, transport: asyncio.BaseTransport | None = None,
                    address: str = "unknown", commands: CommandRunner | None = None) -> None:
        """Serve one authenticated websocket until it closes (1008 when a socket cap is full).

        ``commands`` runs the ERP commands the socket sends (the API layer's, over the same
        services as HTTP); without it they are refused as an unknown type.
        """
        conn = Connection(ws, principal, token, self.settings.ws_queue_size, transport)
        try:
            places = await self.admission.admit(principal, address, conn.conn_id)
        except (RedisError, OSError):
            await ws.close(code=CloseCode.TRY_AGAIN_LATER, message=b"unavailable")
            return
        if places is None:
            await ws.close(code=CloseCode.POLICY_VIOLATION, message=b"too many sockets")
            return
        try:
            try:
                self.hub.register(conn)
            except HubClosed:
                await ws.close(code=CloseCode.GOING_AWAY, message=b"shutting down")
                return
            session = Session(conn, hub=self.hub, stream=self.stream, liveness=self.liveness, rpc=self.rpc,
                              max_replay=self.settings.ws_replay_max_events, commands=commands)
            await session.run(since)
        finally:
            await asyncio.shield(self.admission.release(places))

    @property
    def closing(self) -> bool:
        """True once shutdown began: new sockets are refused."""
        return self.hub.closing
