"""``GET /api/v1/ws?token=&since=``: the websocket of SPEC §7, as an HTTP adapter.

The handler upgrades the request, counts the connect against its address (more than
``ws_connect_rate_per_minute``: closed 4429), authenticates the token (a bad token is accepted, then closed
with 4401; Redis trouble 1013; an unexpected failure 1011; a token that is neither an ERP
terminal nor an H5 session 1008) and hands the socket to the real-time runtime
(``Realtime.serve``, realtime/session.py), which owns it until it closes; an ERP terminal's socket
also takes the commands of ``api/ws_commands.py`` (the lock routes, over the socket). A socket arriving
while the process shuts down is closed with 1001.
"""

from __future__ import annotations

import logging

from aiohttp import web
from redis.exceptions import RedisError

from coordinator.api.routing import authenticate
from coordinator.api.ws_commands import WsCommands
from coordinator.core.errors import RateLimited, Unauthenticated
from coordinator.realtime.hub import CLOSE_TIMEOUT
from coordinator.realtime.messages import MAX_FRAME, CloseCode
from coordinator.services import SERVICES, Services
from coordinator.store import keys
from coordinator.store.ratelimit import RATE_LIMITER, client_address

log = logging.getLogger(__name__)


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
    if services.realtime.closing:
        await ws.close(code=CloseCode.GOING_AWAY, message=b"shutting down")
        return ws
    address = client_address(request)
    token = _bearer(request)
    try:
        limiter = request.app.get(RATE_LIMITER)
        if limiter is not None:
            await limiter.hit(services.engine.scripts, keys.rate_ws_address(address),
                              settings.ws_connect_rate_per_minute)
        principal = await authenticate(request, services, token)
    except RateLimited:
        await ws.close(code=CloseCode.RATE_LIMITED, message=b"too many connects")
        return ws
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
    commands = WsCommands(services) if principal.role == "erp" else None
    await services.realtime.serve(ws, principal, token, _since(request), request.transport, address, commands)
    return ws
