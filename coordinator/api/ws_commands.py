"""ERP commands over the websocket (docs/protocol.md A15): the HTTP lock routes, sent on the socket.

    {"id": 7, "type": "lock.acquire", "order_id": "o1", "kind": "payment"}
    → {"type": "result", "id": 7, "success": true, "result": {"lock": {...}, "enforced": true}}
    → {"type": "result", "id": 7, "success": false, "error": {SPEC error body..., "status": 409}}

In the style of Home Assistant's websocket commands. Each command makes the very calls its HTTP
route makes (``coordinator/erp`` ErpLocks, built by ``api/erp.erp_locks``), after the same checks:
the socket's token is authenticated again (a revoked terminal is refused at once, as its next
HTTP request would be, even before its socket is closed), and a ``store_id``, when given, must be
the terminal's own. The answer is the HTTP body, or the SPEC error body with the lock in the staff
form and the HTTP status. Nothing raises out: Redis trouble is UNAVAILABLE (503), a bug INTERNAL
(500, logged). realtime/session.py reads, bounds and queues; this module only runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import Histogram
from pydantic import BaseModel

from coordinator import metrics
from coordinator.api.erp import erp_locks
from coordinator.api.middleware import is_outage
from coordinator.api.routing import show_lock
from coordinator.core.errors import Forbidden, InternalError, TablelockError, Unavailable
from coordinator.erp import ErpLocks
from coordinator.realtime.hub import Connection
from coordinator.realtime.messages import (
    ErpCommand,
    LockAcquire,
    LockRelease,
    LockRenew,
    OrderCheck,
    PaymentComplete,
    result_error_text,
    result_text,
)
from coordinator.services import Services
from coordinator.store.auth import Principal

log = logging.getLogger(__name__)

COMMAND_SECONDS = Histogram(
    "tablelock_ws_command_seconds", "ERP websocket commands, by type and outcome (ok or the error code)",
    ["type", "outcome"], registry=metrics.REGISTRY,
)

Run = Callable[[ErpLocks, str, str, Principal, Any], Awaitable[BaseModel]]

#: Command type → the ErpLocks call of its HTTP route (store, order, terminal, command).
_CALLS: dict[type, Run] = {
    LockAcquire: lambda locks, s, o, h, c: locks.take(s, o, h, c),
    LockRenew: lambda locks, s, o, h, c: locks.renew(s, o, h, c.kind, c.token),
    LockRelease: lambda locks, s, o, h, c: locks.release(s, o, h, c.kind, c.token),
    OrderCheck: lambda locks, s, o, h, c: locks.check(s, o, h, c.action),
    PaymentComplete: lambda locks, s, o, h, c: locks.complete(s, o, h, c),
}


class WsCommands:
    """Runs ERP commands for the sockets of one process (realtime/session.py's CommandRunner)."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def __call__(self, conn: Connection, command: ErpCommand) -> str:
        """Run ``command`` for the connection's terminal; the ``result`` text, success or not."""
        started = time.perf_counter()
        principal: Principal | None = None
        try:
            principal = await self._terminal(conn, command)
            body = await _CALLS[type(command)](
                erp_locks(self.services), principal.store_id or "", command.order_id, principal, command)
            text, outcome = result_text(command.id, body), "ok"
        except Exception as exc:  # noqa: BLE001 -- every failure becomes a result, never a closed socket
            error = await self._error(exc, conn, principal, command)
            text, outcome = result_error_text(command.id, error), error.code
        COMMAND_SECONDS.labels(command.type, outcome).observe(time.perf_counter() - started)
        return text

    async def _terminal(self, conn: Connection, command: ErpCommand) -> Principal:
        """The terminal behind the socket, checked as an HTTP request is: token again, role, store scope."""
        services = self.services
        principal = await services.auth.authenticate(conn.token, services.engine.now)
        if principal.role != "erp" or (command.store_id is not None and command.store_id != principal.store_id):
            raise Forbidden()
        return principal

    async def _error(self, exc: Exception, conn: Connection, principal: Principal | None,
                     command: ErpCommand) -> TablelockError:
        """The SPEC error ``exc`` stands for, its lock in the terminal's (staff) form."""
        if isinstance(exc, TablelockError):
            try:
                await show_lock(exc, principal or conn.principal, principal.store_id if principal else None,
                                self.services.liveness)
            except Exception as shown:  # noqa: BLE001 -- as over HTTP: never the stored form (tokens), but 503 or 500
                return await self._error(shown, conn, principal, command)
            return exc
        if is_outage(exc):
            log.warning("redis unavailable during websocket command %s", command.type)
            return Unavailable()
        log.exception("websocket command %s failed on %r", command.type, conn)
        return InternalError()
