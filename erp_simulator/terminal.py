"""One ERP terminal: a websocket client of the coordinator with its own terminal token.

The terminal keeps a ``StoreView`` from its socket (``hello`` → snapshot or replay → events),
reconnects after a drop with ``since`` and a bounded backoff, remembers the locks it holds
(with their tokens) and renews the ones a user has open. Its lock requests (take, renew,
release, check, complete) travel on that socket as commands (docs/protocol.md A15,
``commands.py``), over HTTP only while it is down. The **master** also answers the
coordinator's RPCs from the ERP database (``order.fetch``, ``order.add_items``, ``order.pay``,
``menu.list``). Every order change a terminal makes is pushed with ``PUT .../orders/{o}``.

The waiter's actions (open the editor, add or remove dishes, 落单, 预结 / 反预结, 结账 →
完成支付 / 取消) are methods that raise ``Refused`` with the SPEC message; a refusal with
``force_allowed`` is repeated with ``force=True`` once the user confirms.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException
from websockets.typing import Subprotocol

from .client import CoordinatorClient, Refused
from .commands import LockRequests
from .db import ErpDatabase, wall_ms
from .errors import ErpError
from .payment_notices import payment_notice
from .rpc import MasterRpc
from .view import LockEnded, Resynced, StoreView

log = logging.getLogger(__name__)

#: Locks renewed while the user keeps them open: the editor and the payment page. A
#: presettle lock stands for a printed bill and runs its configured course.
RENEWED_KINDS = frozenset({"order", "payment"})
NOT_EDITING = ("NOT_EDITING", "请先打开订单编辑(取得订单锁)", "Open the order editor (take the order lock) first")

Listener = Callable[["Terminal", "dict[str, Any] | None"], None]


def terminal_id_of(token: str) -> str:
    """The terminal id inside a terminal token (``erp~<store>~<terminal>~<secret>``)."""
    parts = token.split("~")
    if len(parts) != 4 or parts[0] != "erp":
        raise ValueError("not a terminal token (erp~store~terminal~secret)")
    return parts[2]


def refused_by_erp(error: ErpError) -> Refused:
    """An ERP database refusal as the waiter page shows it."""
    return Refused(error.code, error.message, error.message_en)


class Terminal:
    """One ERP terminal of a store (master or secondary)."""

    def __init__(self, coordinator_url: str, store_id: str, token: str, db: ErpDatabase, *,
                 name: str | None = None, master: bool = False, min_backoff: float = 0.2,
                 max_backoff: float = 5.0, clock: Callable[[], int] = wall_ms) -> None:
        self.coordinator_url = coordinator_url.rstrip("/")
        self.store_id = store_id
        self.terminal_id = terminal_id_of(token)
        self.name = name or self.terminal_id
        self.master = master
        self.db = db
        self.view = StoreView()
        self.client = CoordinatorClient(self.coordinator_url, store_id, token)
        #: Lock requests go as websocket commands while the socket is up, else over HTTP (``client``).
        self.locks = LockRequests(self.client)
        self.held: dict[tuple[str, str], dict[str, Any]] = {}  # (order_id, kind) -> lock with token
        self.notices: deque[dict[str, Any]] = deque(maxlen=30)
        self.listeners: list[Listener] = []
        self.connected = False
        self.revoked = False
        self.connections = 0
        self._token = token
        self._clock = clock
        self._backoff = (min_backoff, max_backoff)
        self._ws: Any = None
        self._runner: asyncio.Task | None = None
        self._renewers: dict[tuple[str, str], asyncio.Task] = {}
        self._tasks: set[asyncio.Task] = set()
        self._up = asyncio.Event()
        self.rpc = MasterRpc(self)

    # --- life cycle -------------------------------------------------------------------------

    async def start(self) -> Terminal:
        """Start the websocket loop (returns at once; see ``wait_connected``)."""
        self._runner = asyncio.create_task(self._run(), name=f"terminal {self.terminal_id}")
        return self

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Wait until the socket has said hello (raises TimeoutError)."""
        await asyncio.wait_for(self._up.wait(), timeout)

    async def stop(self) -> None:
        """Close the socket and every task; held locks are left to expire (or the grace rule)."""
        tasks = [t for t in (self._runner, *self._renewers.values(), *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
        await self.client.close()

    def now(self) -> int:
        """The coordinator's clock estimated from event timestamps (ms)."""
        return self._clock() + (self.view.clock_offset_ms or 0)

    def tell(self, notice: dict[str, Any] | None = None) -> None:
        """Tell the listeners (pages) that state changed, with ``notice`` for the user if any."""
        if notice is not None:
            notice = {"id": uuid.uuid4().hex[:10], "ts": self._clock(), **notice}
            self.notices.append(notice)
        for listener in list(self.listeners):
            listener(self, notice)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the socket ---------------------------------------------------------------------------

    def ws_url(self) -> str:
        """The websocket URL, with ``since`` once this terminal has seen events (the token goes in ws_protocols)."""
        base = "ws" + self.coordinator_url[4:] if self.coordinator_url.startswith("http") else self.coordinator_url
        url = f"{base}/api/v1/ws"
        return f"{url}?since={self.view.seq}" if self.view.seq else url

    def ws_protocols(self) -> list[Subprotocol]:
        """The subprotocols offered: the coordinator's, and the token (so it is in no URL or access log)."""
        return [Subprotocol("tablelock.v1"), Subprotocol(f"bearer.{self._token}")]

    async def _run(self) -> None:
        attempt = 0
        while not self.revoked:
            try:
                async with connect(self.ws_url(), subprotocols=self.ws_protocols(), proxy=None, open_timeout=5,
                                   ping_interval=10, ping_timeout=20, close_timeout=2, max_size=4 * 2**20) as ws:
                    self._ws = ws
                    async for raw in ws:
                        try:
                            hello = await self._receive(json.loads(raw))
                        except (ValueError, KeyError, TypeError, AttributeError):
                            # One malformed message must not cost the connection (a resume would
                            # replay it and fail again): log it and read on.
                            log.exception("terminal %s: cannot handle a message: %.200s", self.terminal_id, raw)
                            continue
                        if hello:
                            attempt = 0
            except asyncio.CancelledError:
                raise
            except ConnectionClosed as e:
                if e.rcvd is not None and e.rcvd.code == 4401:
                    self._revoke()
            except InvalidStatus as e:
                if e.response.status_code in (401, 403):
                    self._revoke()
                # Say it once per outage, not once per retry.
                log.log(logging.DEBUG if attempt else logging.WARNING, "terminal %s: websocket refused: %s",
                        self.terminal_id, e)
            except InvalidURI:
                raise
            except (OSError, TimeoutError, WebSocketException) as e:
                log.log(logging.DEBUG if attempt else logging.WARNING, "terminal %s: cannot connect: %s",
                        self.terminal_id, e)
            finally:
                self._ws = None
                self.locks.detach()
                if self.connected:
                    self.connected = False
                    self._up.clear()
                    self.tell()
            if self.revoked:
                return
            delay = min(self._backoff[1], self._backoff[0] * 2 ** attempt)
            attempt += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    def _revoke(self) -> None:
        self.revoked = True
        self.tell({"kind": "revoked", "message": "此终端已被停用", "message_en": "This terminal was revoked"})

    async def _receive(self, message: dict[str, Any]) -> bool:
        """Handle one server message; True when it was the connection's hello."""
        kind = message.get("type")
        if kind == "rpc":
            self._spawn(self._answer(message, self._ws))
            return False
        if kind == "result":
            self.locks.on_result(message)
            return False
        if kind in ("rpc_result", "rpc_error", "pong", "error"):
            return False
        happenings = self.view.apply(message, self._clock())
        self._observe_fences(message)
        for happening in happenings:
            self._lock_ended(happening)
        if kind == "hello":
            self.locks.attach(self._ws)
            self.connected = True
            self.connections += 1
            self._up.set()
            if self.master:
                self._spawn(self._resync())
        self.tell(payment_notice(message))  # surplus alerts, the add-on toast
        return kind == "hello"

    def _observe_fences(self, message: dict[str, Any]) -> None:
        locks = (message.get("locks") or []) if message.get("type") == "snapshot" else []
        lock = (message.get("data") or {}).get("lock") if message.get("type") == "event" else None
        for item in [*locks, *([lock] if lock else [])]:
            if not item.get("share"):  # shares held side by side never fence each other out (docs/protocol.md A13)
                self.db.observe_fence(item["order_id"], int(item["fence"]))

    def _lock_ended(self, happening: Any) -> None:
        ended = happening.locks if isinstance(happening, Resynced) else (happening.lock,)
        for lock in ended:
            mine = self.held.get((lock["order_id"], lock["kind"]))
            if mine is None or mine["fence"] != lock["fence"]:
                continue
            self._drop(lock["order_id"], lock["kind"])
            if isinstance(happening, LockEnded):
                self._tell_lost(lock, happening)

    def _tell_lost(self, lock: dict[str, Any], ended: LockEnded) -> None:
        where = {"order_id": lock["order_id"], "table_id": lock["table_id"], "lock_kind": lock["kind"]}
        if ended.how == "lock.forced":
            by = ended.by or {}
            who = by.get("name") or ("顾客" if by.get("role") == "h5" else by.get("terminal_id", "?"))
            who_en = by.get("name") or ("a diner" if by.get("role") == "h5" else by.get("terminal_id", "?"))
            self.tell({"kind": "forced", "by": by, **where,
                       "message": f"您在 {lock['table_id']} 的锁已被 {who} 强制解锁",
                       "message_en": f"Your lock on {lock['table_id']} was taken by {who_en}"})
        elif ended.how == "lock.expired":
            self.tell({"kind": "expired", **where, "message": f"您在 {lock['table_id']} 的锁已超时",
                       "message_en": f"Your lock on {lock['table_id']} expired"})
        elif ended.data.get("reason") == "revoked":
            self.tell({"kind": "lost", **where, "message": "锁已被管理员收回",
                       "message_en": "The lock was released by an administrator"})

    async def _resync(self) -> None:
        """Push every open ERP order the coordinator does not have at its version (master)."""
        await asyncio.sleep(0.3)  # let the snapshot or replay that follows hello arrive
        for order in self.db.open_orders():
            known = self.view.orders.get(order["order_id"])
            if known is None or known.get("version") != order["version"] or known.get("status") != "open":
                try:
                    await self.push(order)
                except Refused as e:
                    log.warning("terminal %s: cannot push %s: %s", self.terminal_id, order["order_id"], e)

    async def _answer(self, message: dict[str, Any], ws: Any) -> None:
        """Answer one RPC on the socket it came on (requests may overlap: each has its own task)."""
        reply = await self.rpc.answer(message)
        if reply is not None and ws is not None:
            try:
                await ws.send(json.dumps(reply, ensure_ascii=False))
            except ConnectionClosed:
                log.info("terminal %s: rpc %s answered after the socket closed", self.terminal_id, reply["id"])

    # --- pushing orders ---------------------------------------------------------------------------

    async def push(self, order: dict[str, Any]) -> dict[str, Any]:
        """Send the ERP's order to the coordinator; a newer version already there is not an error."""
        try:
            return await self.client.put_order(order)
        except Refused as e:
            if e.code == "STALE_VERSION" and e.order and e.order.get("version", 0) > order["version"]:
                return e.order  # another terminal pushed a later change first
            raise

    def _erp(self, change: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            order = change()
        except ErpError as e:
            raise refused_by_erp(e) from e
        self.tell()
        return order

    # --- the waiter's actions -----------------------------------------------------------------------

    async def open_order(self, table_id: str, items: list[dict[str, Any]] = ()) -> dict[str, Any]:
        """开台: open a new order on the table and push it."""
        return await self.push(self._erp(lambda: self.db.open_order(table_id, items)))

    async def open_editor(self, order_id: str, force: bool = False) -> dict[str, Any]:
        """Open the order editor: take the ``order`` lock (renewed while it stays open)."""
        return await self._take(order_id, "order", force)

    async def add_dishes(self, order_id: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        """加菜: in the editor under its fence; outside it after the coordinator allows ``add_items``."""
        lock = self.held.get((order_id, "order"))
        if lock is None:
            result = await self.locks.check(order_id, "add_items")
            if not result["allowed"]:
                raise Refused(result["code"], result["message"], result.get("message_en") or "")
        fence = lock["fence"] if lock else None
        return await self.push(self._erp(lambda: self.db.add_items(order_id, items, source="erp", fence=fence)))

    async def remove_line(self, order_id: str, line_id: str) -> dict[str, Any]:
        """退菜: remove a line; only in the editor, under its fence."""
        lock = self.held.get((order_id, "order"))
        if lock is None:
            raise Refused(*NOT_EDITING)
        return await self.push(self._erp(lambda: self.db.remove_line(order_id, line_id, fence=lock["fence"])))

    async def submit(self, order_id: str) -> bool:
        """落单: close the editor and release the order lock."""
        return await self._release(order_id, "order")

    async def presettle(self, order_id: str, force: bool = False) -> dict[str, Any]:
        """预结: print the bill and freeze the order (the editor, if open, converts into it)."""
        return await self._take(order_id, "presettle", force)

    async def unpresettle(self, order_id: str) -> bool:
        """反预结: release this terminal's presettle lock."""
        return await self._release(order_id, "presettle")

    async def checkout(self, order_id: str, force: bool = False, force_unverified: bool = False) -> dict[str, Any]:
        """结账: open the payment page, i.e. take the ``payment`` lock bound to the ERP's version.

        ``force_unverified``: the cashier confirmed PAYMENT_UNVERIFIED (the provider could not be
        asked about the diner's in-flight payment; a late success becomes a refunded surplus).
        """
        return await self._take(order_id, "payment", force, force_unverified)

    async def complete_payment(self, order_id: str, payment_ref: str | None = None) -> dict[str, Any]:
        """完成支付: complete with the payment lock's token, then record it in the ERP."""
        lock = self.held.get((order_id, "payment"))
        if lock is None:
            raise Refused("LOCK_LOST", "支付已超时或已被其他终端接管,请重新获取订单后再支付",
                          "The payment timed out or was taken over; fetch the order again")
        order = self._erp(lambda: self.db.order(order_id))
        try:
            self.db.check_fence(order_id, lock["fence"])
        except ErpError as e:
            raise refused_by_erp(e) from e
        ref = payment_ref or f"{self.terminal_id}-{uuid.uuid4().hex[:12]}"
        if not lock["enforced"]:
            # Legacy mode: the coordinator stores no lock and takes no completion; the ERP records
            # the payment and pushes the closed order as a new version, like any other change.
            self._drop(order_id, "payment")
            return await self.push(self._erp(lambda: self.db.mark_paid(
                order_id, version=order["version"], amount_cents=order["total_cents"], payment_ref=ref,
                fence=lock["fence"], new_version=True)))
        await self.locks.pay(order_id, token=lock["token"], amount_cents=order["total_cents"],
                              version=order["version"], payment_ref=ref)
        self._drop(order_id, "payment")
        return self._erp(lambda: self.db.mark_paid(order_id, version=order["version"], amount_cents=order["total_cents"],
                                                   payment_ref=ref, fence=lock["fence"]))

    async def cancel_payment(self, order_id: str) -> bool:
        """取消 on the payment page: release the payment lock."""
        return await self._release(order_id, "payment")

    async def _take(self, order_id: str, kind: str, force: bool, force_unverified: bool = False) -> dict[str, Any]:
        order = self._erp(lambda: self.db.order(order_id))
        if order["status"] != "open":
            raise Refused("ORDER_CLOSED", "订单已结束(已支付或已取消)", "The order is closed (paid or cancelled)")
        known = self.view.orders.get(order_id)
        if known is None or known.get("version") != order["version"]:
            await self.push(order)  # a lock binds to a version the coordinator must know
        expected = order["version"] if kind != "order" else None
        lock = await self.locks.take_lock(order_id, kind, force=force, expected_version=expected,
                                           force_unverified=force_unverified)
        self.db.observe_fence(order_id, int(lock["fence"]))
        if kind in ("payment", "presettle"):
            self._drop(order_id, "order")  # converted in the same atomic step (SPEC §2)
        self.held[(order_id, kind)] = lock
        if lock["enforced"] and kind in RENEWED_KINDS and (order_id, kind) not in self._renewers:
            self._renewers[(order_id, kind)] = asyncio.create_task(self._renew(order_id, kind))
        self.tell()
        return lock

    async def _release(self, order_id: str, kind: str) -> bool:
        lock = self.held.get((order_id, kind))
        if lock is None:
            return False
        # Legacy mode stored nothing: there is nothing to give back.
        released = await self.locks.release(order_id, kind, lock["token"]) if lock["enforced"] else True
        self._drop(order_id, kind)
        self.tell()
        return released

    def _drop(self, order_id: str, kind: str) -> None:
        self.held.pop((order_id, kind), None)
        renewer = self._renewers.pop((order_id, kind), None)
        if renewer is not None and renewer is not asyncio.current_task():
            renewer.cancel()

    async def _renew(self, order_id: str, kind: str) -> None:
        """Renew a held lock every third of its duration until it is released or lost."""
        grant = self.held[(order_id, kind)]
        # Renewal moves expires_at to now + duration and keeps acquired_at: measure it once.
        interval = max(0.5, (int(grant["expires_at"]) - int(grant["acquired_at"])) / 3000)
        while True:
            await asyncio.sleep(interval)
            lock = self.held.get((order_id, kind))
            if lock is None:
                return
            try:
                renewed = await self.locks.renew(order_id, kind, lock["token"])
            except Refused as e:
                if e.code in ("LOCK_LOST", "FORBIDDEN", "ORDER_CLOSED", "NOT_FOUND"):
                    self._renewers.pop((order_id, kind), None)
                    self.held.pop((order_id, kind), None)
                    self.tell({"kind": "lost", "order_id": order_id, "table_id": lock["table_id"],
                                   "lock_kind": kind, "message": e.message, "message_en": e.message_en})
                    return
                continue  # coordinator unreachable: keep the token and try again
            if self.held.get((order_id, kind)) is lock:
                self.held[(order_id, kind)] = {**lock, **renewed, "token": lock["token"]}
