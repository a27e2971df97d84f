"""One authenticated websocket from hello to close (SPEC §7), once api/ws.py has let it in.

The socket is registered with the hub *before* anything is read, then gets ``hello`` and either
the missed events (``since`` still retained) or a ``snapshot``, and only then its writer starts,
skipping the queued live events the client already has (see the timeline in stream.py). Then
the session reads:

* ``ping`` → ``pong``;
* ``rpc_result`` / ``rpc_error`` from an ERP terminal → ``rpc.on_reply(principal, message)``;
* an ERP command (``lock.acquire`` …, docs/protocol.md A15) → the ``commands`` runner the API
  layer handed in, each in its own task, at most ``MAX_COMMANDS_IN_FLIGHT`` at once per socket
  (the next one is not read until one ends: back-pressure on the client, not a close); its answer
  is one ``result`` with the command's id. A command that does not validate, one from an H5
  session (FORBIDDEN) and a message of an unknown type that has an ``id`` get a ``result`` with
  ``success: false`` too;
* anything else (not JSON, wrong types, no usable id, over 64 KiB) → an ``error`` message with
  VALIDATION_ERROR (FORBIDDEN for an RPC reply from an H5 session), the socket stays open;
* more than 100 messages other than commands in a second, or more than 50 invalid ones → close
  1008 (commands are paced by the in-flight bound instead: a terminal may run its lock traffic
  at the rate its answers come back, as over HTTP).

Nothing a client sends can raise out of ``run``. Replies go through the hub's queue, so the
writer stays the only task writing to the socket. An ERP terminal's socket is announced to
liveness (up, then down when it closes) and, for a master, to rpc.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType
from pydantic import ValidationError
from redis.exceptions import RedisError

from coordinator.core import views
from coordinator.core.errors import Forbidden, InternalError, ValidationFailed
from coordinator.realtime.hub import Connection, Hub
from coordinator.realtime.liveness import Liveness
from coordinator.realtime.messages import (
    CLIENT_MESSAGE,
    COMMAND_TYPES,
    MAX_MESSAGE_BYTES,
    CloseCode,
    Command,
    ErpCommand,
    Ping,
    error_text,
    event_text,
    hello_text,
    pong_text,
    result_error_text,
    snapshot_text,
    validation_details,
)
from coordinator.realtime.rpc import ErpRpc
from coordinator.realtime.stream import EventStream

log = logging.getLogger(__name__)

#: Flood limits: more than this many messages in one second, or invalid ones in all, closes 1008.
MAX_MESSAGES_PER_SECOND = 100
MAX_INVALID_MESSAGES = 50
#: Commands of one socket running at once; the socket is not read further until one ends.
MAX_COMMANDS_IN_FLIGHT = 16
#: Runs one ERP command for a connection and returns the ``result`` text; never raises
#: (``api/ws_commands.py``: the same service calls as the HTTP routes).
CommandRunner = Callable[[Connection, ErpCommand], Awaitable[str]]
#: The client-message types other than commands (a wrong one of these gets an ``error``, not a ``result``).
_OWN_TYPES = frozenset(("ping", "rpc_result", "rpc_error"))


class Session:
    """One registered connection and the parts of the runtime it talks to."""

    def __init__(self, conn: Connection, *, hub: Hub, stream: EventStream, liveness: Liveness, rpc: ErpRpc,
                 max_replay: int = 1000, commands: CommandRunner | None = None) -> None:
        self.conn = conn
        #: The most events one ``since`` may replay; a client further behind gets a snapshot.
        self.max_replay = max_replay
        self.hub = hub
        self.stream = stream
        self.liveness = liveness
        self.rpc = rpc
        #: None: this socket takes no commands (they are answered as an unknown type).
        self.commands = commands
        #: Made at the first command: most sockets (every H5 one) never send any.
        self._in_flight: asyncio.Semaphore | None = None
        self._rpc_connected = False

    async def run(self, since: int | None) -> None:
        """Serve the socket until it closes; the closing work outlives a cancelled handler."""
        conn, ws = self.conn, self.conn.ws
        try:
            if conn.staff:
                self.hub.mark_online(conn.store_id, conn.client_id)
                await self.liveness.terminal_up(conn.principal, conn.conn_id)
            await self._start(since)
            if conn.staff:
                self._rpc_connected = True
                try:
                    await self.rpc.terminal_connected(conn.principal, conn.conn_id)
                except Exception:  # the lock board still works without RPC
                    log.exception("rpc.terminal_connected failed for %r", conn)
            await self._receive()
        except (RedisError, OSError) as exc:
            if not (conn.closing or ws.closed):
                log.warning("websocket %r: %s", conn, exc)
                await self._close(CloseCode.TRY_AGAIN_LATER, "unavailable")
        except asyncio.CancelledError:
            raise
        except Exception:
            if not (conn.closing or ws.closed):
                log.exception("websocket %r failed", conn)
                await self._close(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            if self.hub.unregister(conn):
                self.stream.forget(conn.store_id)
            # The handler may be cancelled when the peer goes away or the server stops: the hub's own
            # task finishes the job (presence, offline, rpc), and shutdown waits for it.
            await asyncio.shield(self.hub.spawn(self._finish(), settle=True))

    async def _finish(self) -> None:
        conn = self.conn
        if self._rpc_connected:
            try:
                await self.rpc.terminal_disconnected(conn.principal, conn.conn_id)
            except Exception:
                log.exception("rpc.terminal_disconnected failed for %r", conn)
        if await self.hub.finish(conn):
            self.stream.forget(conn.store_id)
        if conn.staff:
            await self.liveness.terminal_down(conn.principal, conn.conn_id)

    async def _close(self, code: int, reason: str) -> None:
        task = self.hub.drop(self.conn, code, reason)
        if task is not None:
            await task

    def _view_text(self, event: dict[str, Any], online: set[str]) -> str | None:
        """One stored event in this client's form, or None if it must not see it."""
        conn = self.conn
        if conn.staff:
            return event_text(views.staff_event(event, online))
        if not views.h5_visible(event, conn.principal.table_id):
            return None
        return event_text(views.h5_event(event, conn.principal.session_id))  # type: ignore[arg-type]

    async def _start(self, since: int | None) -> None:
        """Send hello, then the missed events or a snapshot; then start live delivery."""
        conn, hub = self.conn, self.hub
        store, ws, role = conn.store_id, conn.ws, conn.principal.role
        await self.stream.watch(store)  # before anything is read: stream.py's timeline, t1
        if since is not None and not conn.staff and since < conn.principal.since_seq:
            # Events before the session began are an earlier party's (invariant 11): a snapshot
            # shows the table as it is now instead.
            since = None
        if since is not None:
            events = await self.stream.replay(store, since, limit=self.max_replay)
            if events is not None:
                seq = events[-1]["seq"] if events else since
                online = await hub.refresh_online(store) if conn.staff else set()
                texts = [t for t in (self._view_text(event, online) for event in events) if t is not None]
                # hello says how many events follow, so a client knows when the replay is over
                # (also when nothing was missed and nothing follows).
                await ws.send_str(hello_text(role, conn.client_id, seq, len(texts)))
                for text in texts:
                    await ws.send_str(text)
                self._go_live(seq)
                return
        snap = await self.stream.snapshot(store)
        if conn.staff:
            online = await hub.refresh_online(store, snap.now)
            orders = sorted(snap.orders.values(), key=lambda o: o["order_id"])
            locks = [views.staff_lock(lock, online) for lock in snap.locks]
        else:
            table_id, session_id = conn.principal.table_id, conn.principal.session_id
            order = snap.table_order(table_id or "")
            orders = [order] if order is not None else []
            locks = [views.h5_lock(lock, session_id) for lock in snap.locks if lock.get("table_id") == table_id]
        await ws.send_str(hello_text(role, conn.client_id, snap.seq))
        await ws.send_str(snapshot_text(snap.seq, orders, locks))
        self._go_live(snap.seq)

    def _go_live(self, seq: int) -> None:
        """t2 and t3 of stream.py's timeline: track the store from ``seq``, start the writer."""
        self.stream.note(self.conn.store_id, seq)
        self.hub.start(self.conn, seq)

    async def _receive(self) -> None:
        """Read client frames until the socket closes, is idle too long, or floods."""
        loop = asyncio.get_running_loop()
        window, in_window, invalid = loop.time(), 0, 0
        while True:
            try:
                msg = await self.conn.ws.receive()
            except asyncio.TimeoutError:
                await self._close(CloseCode.IDLE_TIMEOUT, "idle")
                return
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                return  # CLOSE, CLOSING, CLOSED, ERROR (pings and pongs are answered by aiohttp)
            now = loop.time()
            if now - window >= 1.0:
                window, in_window = now, 0
            message = await self._on_message(msg.data)
            if message is False:
                invalid += 1
                if invalid > MAX_INVALID_MESSAGES:
                    await self._close(CloseCode.POLICY_VIOLATION, "too many invalid messages")
                    return
            if isinstance(message, Command):
                if self._in_flight is None:
                    self._in_flight = asyncio.Semaphore(MAX_COMMANDS_IN_FLIGHT)
                await self._in_flight.acquire()  # back-pressure: read on once a slot is free
                # settle: shutdown lets a command in flight finish (bounded) rather than cut it mid-way.
                self.hub.spawn(self._command(message), settle=True)  # type: ignore[arg-type]
                continue
            in_window += 1
            if in_window > MAX_MESSAGES_PER_SECOND:
                await self._close(CloseCode.POLICY_VIOLATION, "too many messages")
                return

    async def _command(self, command: ErpCommand) -> None:
        """Run one command and queue its result on the connection's outbox (the writer sends it)."""
        try:
            text = await self.commands(self.conn, command)  # type: ignore[misc]
        except Exception:  # the runner answers every failure itself; this is a bug, said once
            log.exception("command %s failed on %r", command.type, self.conn)
            text = result_error_text(command.id, InternalError())
        finally:
            self._in_flight.release()  # type: ignore[union-attr]
        self.hub.send(self.conn, text)

    async def _on_message(self, data: str | bytes) -> bool | Command:
        """Handle one client frame; False when it was invalid, the command when it is one to run."""
        conn, hub = self.conn, self.hub
        size = len(data.encode()) if isinstance(data, str) else len(data)
        if size > MAX_MESSAGE_BYTES:
            hub.send(conn, error_text("VALIDATION_ERROR", details=[
                {"loc": [], "msg": f"message larger than {MAX_MESSAGE_BYTES} bytes", "type": "too_large"}]))
            return False
        try:
            message = CLIENT_MESSAGE.validate_json(data)
        except ValidationError as exc:
            self._refuse(data, exc)
            return False
        if isinstance(message, Ping):
            hub.send(conn, pong_text(message.id))
            return True
        if isinstance(message, Command):
            if conn.staff and self.commands is not None:
                return message
            refusal = Forbidden() if not conn.staff else _unknown_type()
            hub.send(conn, result_error_text(message.id, refusal))
            return False
        if not conn.staff:
            hub.send(conn, error_text("FORBIDDEN", message_id=message.id))
            return False
        try:
            await self.rpc.on_reply(conn.principal, message.model_dump(mode="json"))
        except Exception:
            log.exception("rpc.on_reply failed for %r", conn)
        return True


    def _refuse(self, data: str | bytes, exc: ValidationError) -> None:
        """Answer a frame that did not validate: a ``result`` when it is a command (or an unknown
        type) with a usable id, as Home Assistant answers an unknown command; else an ``error``."""
        try:
            value = json.loads(data)
        except ValueError:
            value = None
        kind = value.get("type") if isinstance(value, dict) else None
        ident = _message_id(value)
        if ident is not None and isinstance(kind, str) and kind not in _OWN_TYPES:
            if kind in COMMAND_TYPES:
                details = [{**d, "loc": d["loc"][1:]} for d in validation_details(exc)]  # without the type tag
                error = ValidationFailed(details=details)
            else:
                error = _unknown_type()
            self.hub.send(self.conn, result_error_text(ident, error))
            return
        self.hub.send(self.conn, error_text("VALIDATION_ERROR", message_id=ident, details=validation_details(exc)))


def _unknown_type() -> ValidationFailed:
    """The refusal of a message type this server does not take."""
    return ValidationFailed(details=[{"loc": ["type"], "msg": "unknown message type", "type": "unknown_type"}])


def _message_id(value: Any) -> int | str | None:
    """The ``id`` of a rejected message (parsed JSON), when it has a usable one, to echo in the answer."""
    ident = value.get("id") if isinstance(value, dict) else None
    if isinstance(ident, bool) or not isinstance(ident, (int, str)):
        return None
    return ident if isinstance(ident, int) or 0 < len(ident) <= 128 else None
