"""``GET /api/v1/ws?token=&since=``: the websocket of SPEC §7.

The handler authenticates (a bad token is accepted, then closed with 4401), registers the
socket with the hub *before* reading anything, sends ``hello`` and then either the missed events
(``since`` still retained) or a ``snapshot``, and only then starts the writer, which skips the
queued live events the client already has (see the timeline in events.py). Then it reads:

* ``ping`` → ``pong``;
* ``rpc_result`` / ``rpc_error`` from an ERP terminal → ``services.rpc.on_reply(principal, message)``;
* anything else (not JSON, unknown type, wrong types, over 64 KiB) → an ``error`` message with
  VALIDATION_ERROR (FORBIDDEN for an RPC reply from an H5 session), the socket stays open;
* more than 100 messages in a second or more than 50 invalid ones → close 1008.

Nothing a client sends can raise out of this handler. Replies go through the hub's queue, so the
writer stays the only task writing to the socket.

Wiring (app.py): ``realtime_ctx`` (cleanup_ctx) starts the hub and the event subscription and
sets ``services.hub``; ``close_sockets`` (on_shutdown) closes every socket with 1001 before
aiohttp waits for the handlers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from typing import Any, AsyncIterator

from aiohttp import WSMsgType, web
from pydantic import ValidationError
from redis.exceptions import RedisError

from coordinator.api.routing import authenticate
from coordinator.core import views
from coordinator.core.errors import Unauthenticated
from coordinator.realtime.hub import CLOSE_TIMEOUT, Connection, Hub, HubClosed, h5_visible
from coordinator.realtime.messages import (
    CLIENT_MESSAGE,
    MAX_FRAME,
    MAX_MESSAGE_BYTES,
    CloseCode,
    Ping,
    error_text,
    event_text,
    hello_text,
    pong_text,
    snapshot_text,
    validation_details,
)
from coordinator.realtime.stream import EventStream
from coordinator.services import SERVICES, Services

log = logging.getLogger(__name__)

#: Flood limits: more than this many messages in one second, or invalid ones in all, closes 1008.
MAX_MESSAGES_PER_SECOND = 100
MAX_INVALID_MESSAGES = 50


#: The subprotocol the server selects; a client offers it with ``bearer.<token>`` to keep its token out
#: of the URL (and so out of access logs and proxies): ``["tablelock.v1", "bearer.erp~…"]``.
WS_PROTOCOL = "tablelock.v1"


def _bearer(request: web.Request) -> str | None:
    """The token of a websocket request: a ``bearer.`` subprotocol, else ``?token=`` (SPEC §7), else Authorization."""
    for offered in request.headers.getall("Sec-WebSocket-Protocol", ()):
        for protocol in offered.split(","):
            protocol = protocol.strip()
            if protocol.startswith("bearer."):
                return protocol[7:] or None
    token = request.query.get("token")
    if token:
        return token
    header = request.headers.get("Authorization", "")
    return header[7:].strip() or None if header[:7].lower() == "bearer " else None


def _since(request: web.Request) -> int | None:
    raw = request.query.get("since", "")
    return int(raw) if raw.isdigit() and len(raw) <= 18 else None


async def websocket(request: web.Request) -> web.StreamResponse:
    """The live lock board of SPEC §7 for one ERP terminal or H5 session."""
    services: Services = request.app[SERVICES]
    settings = services.settings
    ws = web.WebSocketResponse(
        autoping=True, receive_timeout=settings.ws_idle_timeout_seconds, max_msg_size=MAX_FRAME,
        # One serialisation per audience is the point of the hub; per-socket deflate would undo it.
        compress=False, timeout=CLOSE_TIMEOUT, protocols=(WS_PROTOCOL,),
    )
    await ws.prepare(request)
    hub: Hub | None = services.hub
    if hub is None or hub.closing:
        await ws.close(code=CloseCode.GOING_AWAY, message=b"shutting down")
        return ws
    token = _bearer(request)
    try:
        principal = await authenticate(request, services, token)
    except Unauthenticated:
        await ws.close(code=CloseCode.UNAUTHENTICATED, message=b"unauthenticated")
        return ws
    except (RedisError, OSError):
        await ws.close(code=CloseCode.TRY_AGAIN_LATER, message=b"unavailable")
        return ws
    except Exception:
        log.exception("websocket authentication failed")
        await ws.close(code=CloseCode.INTERNAL_ERROR, message=b"internal error")
        return ws
    if principal.role not in ("erp", "h5"):
        await ws.close(code=CloseCode.FORBIDDEN, message=b"no websocket for this token")
        return ws

    conn = Connection(ws, principal, token, settings.ws_queue_size, request.transport)
    try:
        hub.register(conn)
    except HubClosed:
        await ws.close(code=CloseCode.GOING_AWAY, message=b"shutting down")
        return ws
    rpc_connected = False
    try:
        if conn.staff:
            await hub.terminal_up(conn)
        await _start(hub, conn, _since(request))
        if conn.staff and services.rpc is not None:
            rpc_connected = True
            try:
                await services.rpc.terminal_connected(principal, conn.conn_id)
            except Exception:  # the lock board still works without RPC
                log.exception("rpc.terminal_connected failed for %r", conn)
        await _receive(services, hub, conn)
    except (RedisError, OSError) as exc:
        if not (conn.closing or ws.closed):
            log.warning("websocket %r: %s", conn, exc)
            await _close(hub, conn, CloseCode.TRY_AGAIN_LATER, "unavailable")
    except asyncio.CancelledError:
        raise
    except Exception:
        if not (conn.closing or ws.closed):
            log.exception("websocket %r failed", conn)
            await _close(hub, conn, CloseCode.INTERNAL_ERROR, "internal error")
    finally:
        hub.unregister(conn)
        # The handler may be cancelled when the peer goes away or the server stops: the hub's own
        # task finishes the job (presence, offline, rpc), and shutdown waits for it.
        await asyncio.shield(hub.spawn(_finish(services, hub, conn, rpc_connected), settle=True))
    return ws


async def _finish(services: Services, hub: Hub, conn: Connection, rpc_connected: bool) -> None:
    if rpc_connected and services.rpc is not None:
        try:
            await services.rpc.terminal_disconnected(conn.principal, conn.conn_id)
        except Exception:
            log.exception("rpc.terminal_disconnected failed for %r", conn)
    await hub.finish(conn)


async def _close(hub: Hub, conn: Connection, code: int, reason: str) -> None:
    task = hub.drop(conn, code, reason)
    if task is not None:
        await task


def _view_text(event: dict[str, Any], conn: Connection, online: set[str]) -> str | None:
    """One stored event in this client's form, or None if it must not see it."""
    if conn.staff:
        return event_text(views.staff_event(event, online))
    if not h5_visible(event, conn.principal.table_id):
        return None
    return event_text(views.h5_event(event, conn.principal.session_id))  # type: ignore[arg-type]


async def _start(hub: Hub, conn: Connection, since: int | None) -> None:
    """Send hello, then the missed events or a snapshot; then start live delivery."""
    assert hub.stream is not None
    store, ws, role = conn.store_id, conn.ws, conn.principal.role
    if since is not None:
        events = await hub.stream.replay(store, since)
        if events is not None:
            seq = events[-1]["seq"] if events else since
            online = await hub.refresh_online(store) if conn.staff else set()
            await ws.send_str(hello_text(role, conn.client_id, seq))
            for event in events:
                text = _view_text(event, conn, online)
                if text is not None:
                    await ws.send_str(text)
            hub.start(conn, seq)
            return
    snap = await hub.stream.snapshot(store)
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
    hub.start(conn, snap.seq)


async def _receive(services: Services, hub: Hub, conn: Connection) -> None:
    """Read client frames until the socket closes, is idle too long, or floods."""
    loop = asyncio.get_running_loop()
    window, in_window, invalid = loop.time(), 0, 0
    while True:
        try:
            msg = await conn.ws.receive()
        except asyncio.TimeoutError:
            await _close(hub, conn, CloseCode.IDLE_TIMEOUT, "idle")
            return
        if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
            return  # CLOSE, CLOSING, CLOSED, ERROR (pings and pongs are answered by aiohttp)
        now = loop.time()
        if now - window >= 1.0:
            window, in_window = now, 0
        in_window += 1
        if in_window > MAX_MESSAGES_PER_SECOND:
            await _close(hub, conn, CloseCode.POLICY_VIOLATION, "too many messages")
            return
        if not await _on_message(services, hub, conn, msg.data):
            invalid += 1
            if invalid > MAX_INVALID_MESSAGES:
                await _close(hub, conn, CloseCode.POLICY_VIOLATION, "too many invalid messages")
                return


def _message_id(data: str | bytes) -> int | str | None:
    """The ``id`` of a rejected message, when it has a usable one, to echo in the error."""
    try:
        value = json.loads(data)
    except ValueError:
        return None
    ident = value.get("id") if isinstance(value, dict) else None
    if isinstance(ident, bool) or not isinstance(ident, (int, str)):
        return None
    return ident if isinstance(ident, int) or 0 < len(ident) <= 128 else None


async def _on_message(services: Services, hub: Hub, conn: Connection, data: str | bytes) -> bool:
    """Handle one client frame; False when it was invalid."""
    size = len(data.encode()) if isinstance(data, str) else len(data)
    if size > MAX_MESSAGE_BYTES:
        hub.send(conn, error_text("VALIDATION_ERROR", details=[
            {"loc": [], "msg": f"message larger than {MAX_MESSAGE_BYTES} bytes", "type": "too_large"}]))
        return False
    try:
        message = CLIENT_MESSAGE.validate_json(data)
    except ValidationError as exc:
        hub.send(conn, error_text("VALIDATION_ERROR", message_id=_message_id(data),
                                  details=validation_details(exc)))
        return False
    if isinstance(message, Ping):
        hub.send(conn, pong_text(message.id))
        return True
    if not conn.staff:
        hub.send(conn, error_text("FORBIDDEN", message_id=message.id))
        return False
    rpc = services.rpc
    if rpc is None:
        log.debug("rpc reply %r from %r with no rpc service", message.id, conn)
        return True
    try:
        await rpc.on_reply(conn.principal, message.model_dump(mode="json"))
    except Exception:
        log.exception("rpc.on_reply failed for %r", conn)
    return True


#: The hub of each running app, for on_shutdown (``services.hub`` may be swapped, e.g. by tests).
_HUBS: weakref.WeakKeyDictionary[web.Application, Hub] = weakref.WeakKeyDictionary()


async def realtime_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the hub and this process's event subscription; sets ``services.hub``."""
    services = app[SERVICES]
    hub = _HUBS[app] = Hub(services)
    stream = EventStream(
        services.redis, services.settings.redis_url or "", deliver=hub.dispatch, control=hub.on_control,
        wants=hub.wants, local_stores=hub.stores, resync=hub.resync,
    )
    hub.stream = stream
    await stream.start()
    hub.start_heartbeat()
    services.hub = hub
    try:
        yield
    finally:
        await hub.aclose()
        await stream.stop()


async def close_sockets(app: web.Application) -> None:
    """on_shutdown: close every websocket with GOING_AWAY so the handlers end before aiohttp waits for them."""
    hub = _HUBS.get(app)
    if hub is not None:
        await hub.close_all()
