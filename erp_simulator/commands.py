"""A terminal's lock requests over its websocket (docs/protocol.md A15), HTTP only as a fallback.

``LockRequests`` has the lock methods of ``CoordinatorClient`` (take_lock, renew, release,
check, pay) with the same answers and the same ``Refused``. While the terminal's socket is up
each request is a command (``{"id", "type": "lock.acquire", ...}``) answered by a ``result`` the
terminal hands to ``on_result``; with no socket, or when the socket drops (or stays silent) before
the answer, the request goes over HTTP instead. Repeating it is safe: taking a lock one holds
returns it unchanged, a completion is idempotent on ``payment_ref``, a second release answers
``released: false``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from typing import Any

from websockets.exceptions import ConnectionClosed

from .client import CoordinatorClient, Refused, lock_body

log = logging.getLogger(__name__)


class NoAnswer(Exception):
    """The socket could not carry the command to its result: use HTTP."""


class LockRequests:
    """One terminal's lock requests: over its socket when it has one, else over HTTP."""

    def __init__(self, client: CoordinatorClient, *, timeout: float = 10.0) -> None:
        self.client = client
        self.timeout = timeout
        #: How many requests went each way (the simulator's tests and the bench read them).
        self.sent = {"websocket": 0, "http": 0}
        self._ws: Any = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}

    # --- the socket's side ------------------------------------------------------------------

    def attach(self, ws: Any) -> None:
        """The terminal's socket is up (hello received): send commands on it."""
        self._ws = ws

    def detach(self) -> None:
        """The socket is gone: requests waiting on it go over HTTP instead."""
        self._ws = None
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(NoAnswer("socket closed"))

    def on_result(self, message: dict[str, Any]) -> None:
        """A ``result`` arrived on the socket: wake the request it answers."""
        future = self._pending.pop(message.get("id"), None)  # type: ignore[arg-type]
        if future is not None and not future.done():
            future.set_result(message)

    async def _command(self, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Run one command over the socket; its result body, Refused, or NoAnswer."""
        ws = self._ws
        if ws is None:
            raise NoAnswer("no socket")
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        try:
            await ws.send(json.dumps({"id": ident, "type": kind, **fields}, ensure_ascii=False))
            message = await asyncio.wait_for(future, self.timeout)
        except (ConnectionClosed, TimeoutError) as e:
            raise NoAnswer(str(e)) from e
        finally:
            self._pending.pop(ident, None)
        self.sent["websocket"] += 1
        if message.get("success"):
            return message.get("result") or {}
        error = message.get("error") or {}
        raise Refused.from_body(int(error.get("status") or 409), {"error": error})

    async def _either(self, kind: str, fields: dict[str, Any], path: str, body: dict[str, Any]) -> dict[str, Any]:
        """The command over the socket, or the HTTP request ``POST path body`` that stands for it: its body."""
        try:
            return await self._command(kind, fields)
        except NoAnswer as e:
            if self._ws is not None:
                log.info("command %s got no answer (%s): repeating it over HTTP", kind, e)
        self.sent["http"] += 1
        return await self.client.request("POST", path, body)

    # --- CoordinatorClient's lock methods -------------------------------------------------------

    async def take_lock(self, order_id: str, kind: str, *, force: bool = False,
                        expected_version: int | None = None, force_unverified: bool = False) -> dict[str, Any]:
        """Take a lock; the lock with its token and ``enforced`` (false in legacy mode: nothing stored)."""
        body = lock_body(kind, force, expected_version, force_unverified)
        grant = await self._either("lock.acquire", {"order_id": order_id, **body}, f"/orders/{order_id}/locks", body)
        return {**grant["lock"], "enforced": grant.get("enforced", True)}

    async def renew(self, order_id: str, kind: str, token: str) -> dict[str, Any]:
        """Renew a lock; Refused(LOCK_LOST) when it is gone."""
        fields = {"order_id": order_id, "kind": kind, "token": token}
        return (await self._either("lock.renew", fields, f"/orders/{order_id}/locks/{kind}/renew",
                                   {"token": token}))["lock"]

    async def release(self, order_id: str, kind: str, token: str) -> bool:
        """Release a lock; False when the token held nothing."""
        fields = {"order_id": order_id, "kind": kind, "token": token}
        return bool((await self._either("lock.release", fields, f"/orders/{order_id}/locks/{kind}/release",
                                        {"token": token}))["released"])

    async def check(self, order_id: str, action: str) -> dict[str, Any]:
        """``{allowed, code, message, message_en, force_allowed}`` for ``action`` on the order now."""
        return await self._either("order.check", {"order_id": order_id, "action": action},
                                  f"/orders/{order_id}/check", {"action": action})

    async def pay(self, order_id: str, *, token: str, amount_cents: int, version: int, payment_ref: str) -> dict[str, Any]:
        """Complete this terminal's own payment with its payment lock token; the paid order."""
        body = {"token": token, "amount_cents": amount_cents, "version": version, "payment_ref": payment_ref}
        return (await self._either("payment.complete", {"order_id": order_id, **body},
                                   f"/orders/{order_id}/payments", body))["order"]
