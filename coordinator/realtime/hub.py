"""Local fan-out: this process's websockets, by store (ERP) and by (store, table) (H5).

``dispatch`` runs on the event listener's task and never awaits a socket: it offers text to each
connection (connection.py), which writes it at once when nothing is pending, or keeps it in a
bounded outbox drained by a writer task that exists only while its peer is slow. An outbox that
is full means a client that cannot keep up: that connection alone is closed with 1013
(``CloseCode.TRY_AGAIN_LATER``; it resumes with ``since``) and nobody else waits for it.

An event is serialised once per audience, not once per socket: once for the store's ERP
terminals (``views.staff_event`` with the store's online set), once for the H5 sessions that do
not hold the lock it is about, and once more for the session that does (``is_me: true``).

The hub only fans out: announcing terminals up and down is liveness.py's, reached from
session.py. Every heartbeat the hub pings every socket, re-checks tokens (revoked terminals,
expired H5 sessions are closed with 4401 even if the revocation's control message was missed),
refreshes its terminals' presence and its stores' online sets through liveness.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Coroutine

from prometheus_client import Counter, Gauge

from coordinator import metrics
from coordinator.core import views
from coordinator.core.errors import Unauthenticated
from coordinator.realtime.connection import PING, Connection, OutboxFull
from coordinator.realtime.liveness import Liveness
from coordinator.realtime.messages import CloseCode, dumps, event_text
from coordinator.realtime.pubsub import publish_control
from coordinator.store.auth import Authenticator

log = logging.getLogger(__name__)

#: Bound on closing one socket (close frame + the peer's answer); then the transport is aborted.
CLOSE_TIMEOUT = 5.0
#: How many Redis calls one heartbeat runs at once.
_HEARTBEAT_CONCURRENCY = 32

CONNECTIONS = Gauge(
    "tablelock_ws_connections", "Open websockets in this process", ["role"], registry=metrics.REGISTRY,
)
DROPPED = Counter(
    "tablelock_ws_closed_by_server_total", "Websockets the server closed, by close code", ["code"],
    registry=metrics.REGISTRY,
)


class HubClosed(Exception):
    """The hub is shutting down and takes no new connections."""


class Hub:
    """This process's websockets and their fan-out."""

    def __init__(self, redis: Any, liveness: Liveness, auth: Authenticator, *, heartbeat_seconds: float) -> None:
        self.redis = redis
        self.liveness = liveness
        self.auth = auth
        self.heartbeat_seconds = heartbeat_seconds
        self.closing = False
        # Dicts used as insertion-ordered sets.
        self._staff: dict[str, dict[Connection, None]] = {}
        self._h5: dict[str, dict[Connection, None]] = {}
        self._tables: dict[tuple[str, str], dict[Connection, None]] = {}
        self._terminals: dict[tuple[str, str], dict[Connection, None]] = {}
        self._online: dict[str, set[str]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._settling: set[asyncio.Task] = set()
        self._ticker: asyncio.Task | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def start_heartbeat(self) -> None:
        """Start pinging sockets and refreshing presence every ``ws_heartbeat_seconds``."""
        self._ticker = self.spawn(self._heartbeat_loop(), "tablelock-ws-heartbeat")

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None, *, settle: bool = False) -> asyncio.Task:
        """Run ``coro`` as a task the hub keeps and stops on shutdown.

        ``settle`` marks work that should end by itself (closing a socket, a closed socket's
        presence and offline handling): shutdown waits for it (bounded) before cancelling.
        """
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if settle:
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)
        return task

    async def close_all(self, code: int = CloseCode.GOING_AWAY, reason: str = "server shutdown") -> None:
        """Refuse new sockets and close every open one (GOING_AWAY on shutdown), bounded."""
        self.closing = True
        closers = [self.drop(conn, code, reason) for conn in self.connections()]
        pending = [t for t in closers if t is not None]
        if pending:
            await asyncio.wait(pending, timeout=CLOSE_TIMEOUT + 1)

    async def aclose(self) -> None:
        """Close every socket, let closing work settle (bounded), then cancel and await every task."""
        await self.close_all()
        if self._settling:
            await asyncio.wait(list(self._settling), timeout=CLOSE_TIMEOUT + 1)
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=1.0)

    # --- registry -------------------------------------------------------------------------

    def connections(self) -> list[Connection]:
        """Every registered connection of this process."""
        staff = [c for conns in self._staff.values() for c in conns]
        return staff + [c for conns in self._h5.values() for c in conns]

    def stores(self) -> list[str]:
        """Stores with at least one local socket."""
        return list(self._staff.keys() | self._h5.keys())

    def wants(self, store_id: str) -> bool:
        """Whether any local socket watches the store."""
        return store_id in self._staff or store_id in self._h5

    def register(self, conn: Connection) -> None:
        """Add a connection: from now on the store's live events queue up on it."""
        if self.closing:
            raise HubClosed()
        store = conn.store_id
        if conn.staff:
            self._staff.setdefault(store, {})[conn] = None
            self._terminals.setdefault((store, conn.client_id), {})[conn] = None
        else:
            self._h5.setdefault(store, {})[conn] = None
            self._tables.setdefault((store, conn.principal.table_id or ""), {})[conn] = None
        CONNECTIONS.labels(conn.principal.role).inc()

    def unregister(self, conn: Connection) -> bool:
        """Remove a connection; True when its store has no local socket left (and is forgotten)."""
        store = conn.store_id
        if conn.staff:
            found = _discard(self._staff, store, conn)
            _discard(self._terminals, (store, conn.client_id), conn)
        else:
            found = _discard(self._h5, store, conn)
            _discard(self._tables, (store, conn.principal.table_id or ""), conn)
        if found:
            CONNECTIONS.labels(conn.principal.role).dec()
        if self.wants(store):
            return False
        self._online.pop(store, None)
        return True

    def start(self, conn: Connection, sent_seq: int) -> None:
        """The client has everything up to ``sent_seq``: write the live events that queued up meanwhile."""
        conn.sent_seq = sent_seq
        conn.start(self.spawn)

    async def finish(self, conn: Connection) -> bool:
        """The socket is done: unregister it and stop its writer; True when its store has no local socket left."""
        unwatched = self.unregister(conn)
        conn.closing = True
        await conn.stop_writer()
        return unwatched

    # --- fan-out --------------------------------------------------------------------------

    def online(self, store_id: str) -> set[str]:
        """The store's online terminals as this hub last knew them."""
        return self._online.get(store_id, set())

    def mark_online(self, store_id: str, terminal_id: str) -> None:
        """The terminal has a socket here now: show it online before its event arrives."""
        self._online.setdefault(store_id, set()).add(terminal_id)

    async def refresh_online(self, store_id: str, now: int | None = None) -> set[str]:
        """Read the store's online terminals from liveness and remember them."""
        online = await self.liveness.online(store_id, now)
        if self.wants(store_id):
            self._online[store_id] = online
        return online

    def dispatch(self, event: dict[str, Any]) -> None:
        """Queue one live event on every local socket that may see it, serialised once per audience."""
        store, seq, name = event["store_id"], event["seq"], event["name"]
        if name == "terminal.status" and store in self._online:
            data = event.get("data") or {}
            if data.get("online"):
                self._online[store].add(data.get("terminal_id"))
            else:
                self._online[store].discard(data.get("terminal_id"))
        staff = self._staff.get(store)
        if staff:
            text = event_text(views.staff_event(event, self.online(store)))
            for conn in list(staff):
                self._offer(conn, seq, text)
        table_id = event.get("table_id")
        viewers = self._tables.get((store, table_id)) if table_id is not None else self._h5.get(store)
        if not viewers or not views.h5_visible(event, table_id):
            return
        holders = views.h5_sessions(event)
        texts: dict[str | None, str] = {}
        for conn in list(viewers):
            key = conn.principal.session_id if conn.principal.session_id in holders else None
            text = texts.get(key)
            if text is None:
                text = texts[key] = event_text(views.h5_event(event, key))  # type: ignore[arg-type]
            self._offer(conn, seq, text)

    def send(self, conn: Connection, text: str) -> bool:
        """Queue a non-event message (pong, error, rpc) for one connection."""
        return self._offer(conn, None, text)

    def _offer(self, conn: Connection, seq: int | None, text: str) -> bool:
        try:
            return conn.offer(seq, text, self.spawn)
        except OutboxFull:
            log.info("dropping slow websocket %r (outbox of %d full)", conn, conn.queue_size)
            self.drop(conn, CloseCode.TRY_AGAIN_LATER, "slow consumer")
            return False

    # --- closing --------------------------------------------------------------------------

    def drop(self, conn: Connection, code: int, reason: str) -> asyncio.Task | None:
        """Close one socket with ``code`` in the background; never blocks the caller."""
        if conn.closing:
            return None
        conn.closing = True
        conn.close_code = code
        DROPPED.labels(str(int(code))).inc()
        return self.spawn(self._close(conn, code, reason), settle=True)

    async def _close(self, conn: Connection, code: int, reason: str) -> None:
        await conn.stop_writer()
        try:
            # drain=False: a slow consumer's buffer may never drain; the close frame queues behind it.
            await asyncio.wait_for(conn.ws.close(code=code, message=reason.encode(), drain=False), CLOSE_TIMEOUT)
        except Exception as exc:
            log.debug("closing %r: %s", conn, exc)
        transport = conn.transport
        if transport is not None and not transport.is_closing():
            transport.abort()
        elif transport is not None:
            # Closed but maybe still flushing to a client that never reads: bound how long.
            asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, transport.abort)

    def resync(self, store_id: str) -> None:
        """Events of the store were lost in transit: make its sockets resume (4409)."""
        for conn in list(self._staff.get(store_id, {})) + list(self._h5.get(store_id, {})):
            self.drop(conn, CloseCode.RESYNC, "resync")

    def _close_terminal(self, store_id: str, terminal_id: str) -> int:
        self.auth.cache.invalidate(store_id, terminal_id)  # revoked: no cached record may outlive it
        conns = list(self._terminals.get((store_id, terminal_id), {}))
        for conn in conns:
            self.drop(conn, CloseCode.UNAUTHENTICATED, "revoked")
        return len(conns)

    def on_control(self, message: dict[str, Any]) -> None:
        """Act on a control message another process (or this one) published."""
        if message.get("op") == "disconnect_terminal":
            self._close_terminal(str(message.get("store_id")), str(message.get("terminal_id")))

    # --- the contract with rpc.py and the admin API ------------------------------------------

    async def send_to_terminal(self, store_id: str, terminal_id: str, message: dict[str, Any]) -> bool:
        """Queue ``message`` on one live socket of the terminal in this process; False if none."""
        text = dumps(message)
        for conn in reversed(list(self._terminals.get((store_id, terminal_id), {}))):
            if conn.started and self._offer(conn, None, text):
                return True
        return False

    async def disconnect_terminal(self, store_id: str, terminal_id: str) -> None:
        """Close the terminal's sockets with 4401 in every process (after its token was revoked)."""
        self._close_terminal(store_id, terminal_id)
        await publish_control(self.redis, {"op": "disconnect_terminal", "store_id": store_id,
                                           "terminal_id": terminal_id})

    # --- heartbeat ------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval = self.heartbeat_seconds
        while not self.closing:
            await asyncio.sleep(interval)
            try:
                await self.heartbeat()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("websocket heartbeat failed", exc_info=True)

    async def heartbeat(self) -> None:
        """Ping every socket, refresh presence and online sets, close revoked or expired ones."""
        now = await self.liveness.now()
        limit = asyncio.Semaphore(_HEARTBEAT_CONCURRENCY)

        async def check(conn: Connection) -> None:
            async with limit:
                try:
                    await self.auth.authenticate(conn.token, now, fresh=True)
                except Unauthenticated:
                    self.drop(conn, CloseCode.UNAUTHENTICATED, "revoked")
                    return
                if conn.staff:
                    await self.liveness.touch(conn.store_id, conn.client_id, conn.conn_id, now)

        conns = [c for c in self.connections() if c.started and not c.closing]
        for conn in conns:
            self._offer(conn, None, PING)
        await asyncio.gather(*(check(c) for c in conns))
        for store in list(self._staff):
            await self.refresh_online(store, now)


def _discard(index: dict[Any, dict[Connection, None]], key: Any, conn: Connection) -> bool:
    conns = index.get(key)
    if conns is None or conn not in conns:
        return False
    del conns[conn]
    if not conns:
        del index[key]
    return True
