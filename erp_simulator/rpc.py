"""The master terminal's duties: answering the coordinator's ERP RPCs from the ERP database.

``order.fetch`` and ``menu.list`` read; ``order.add_items`` auto-accepts a diner's dishes after
asking the coordinator ``accept_items`` (refused: the SPEC toast on the cashier's page and an
``rpc_error``), then pushes the new version; ``order.pay`` records a diner's payment after the
fence, version and amount checks. Refusals become ``rpc_error`` with the codes of
docs/protocol.md §A7 (``STALE_FENCE``, ``STALE_VERSION``, ``PAYMENT_LOCKED``…).

``received`` keeps every RPC in the order it came; ``behaviour`` makes the master act like a slow,
hung, eager or refusing ERP, for tests of how the coordinator copes (all off by default).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .client import Refused
from .db import AcceptCheck
from .errors import AcceptRefused, ErpError
from .shares import ShareLedger

if TYPE_CHECKING:
    from .terminal import Terminal


@dataclass
class Behaviour:
    """How a real ERP may behave towards the coordinator's RPCs; the defaults are a prompt, well-behaved ERP."""

    #: A slow ERP: seconds to wait before handling each RPC.
    delay: float = 0.0
    #: A hung ERP: RPCs arrive (and are journalled) but are neither acted on nor answered.
    silent: bool = False
    #: An ERP that closes a paid order itself: ``order.pay`` records the payment as a new version
    #: and pushes it to the coordinator before answering.
    push_paid_before_answering: bool = False
    #: An ERP that bumps the version when it records a payment and only answers with it (no push):
    #: the coordinator keeps the version answered (docs/protocol.md A7.4).
    answer_paid_as_new_version: bool = False
    #: An ERP that turns a request down for reasons of its own: method -> the refusal to answer
    #: with, e.g. ``{"order.pay": AmountMismatch("the card terminal disagrees")}`` (nothing is changed).
    refuse: dict[str, ErpError] = field(default_factory=dict)


class MasterRpc:
    """Answers RPCs for one terminal (a terminal that is not the master refuses them)."""

    def __init__(self, terminal: Terminal) -> None:
        self.terminal = terminal
        self.db = terminal.db
        self.behaviour = Behaviour()
        self.received: list[tuple[str, dict[str, Any]]] = []  # (method, params) of every RPC, oldest first

    def calls_of(self, method: str) -> list[dict[str, Any]]:
        """The params of every ``method`` RPC received so far."""
        return [params for name, params in self.received if name == method]

    async def answer(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """The ``rpc_result`` or ``rpc_error`` reply to one ``rpc`` message (None: a hung ERP stays silent)."""
        rpc_id, method, params = message.get("id"), message.get("method"), message.get("params") or {}
        self.received.append((str(method), params))
        if self.behaviour.delay:
            await asyncio.sleep(self.behaviour.delay)
        if self.behaviour.silent:
            return None
        refusal = self.behaviour.refuse.get(str(method))
        if refusal is not None:
            return {"type": "rpc_error", "id": rpc_id, "error": refusal.wire()}
        try:
            if not self.terminal.master:
                raise Refused("NOT_MASTER", "此终端不是主收银机", "This terminal is not the master")
            handler = {"order.fetch": self.fetch, "order.add_items": self.add_items,
                       "order.pay": self.pay, "menu.list": self.menu,
                       "order.move": self.move, "order.merge": self.merge,
                       "order.cancel": self.cancel, "order.reopen": self.reopen}.get(method)
            if handler is None:
                raise Refused("NOT_FOUND", f"未知方法 {method}", f"Unknown method {method}")
            return {"type": "rpc_result", "id": rpc_id, "result": await handler(params)}
        except ErpError as e:
            return {"type": "rpc_error", "id": rpc_id, "error": e.wire()}
        except Refused as e:
            return {"type": "rpc_error", "id": rpc_id,
                    "error": {"code": e.code, "message": e.message, "message_en": e.message_en}}
        except (KeyError, TypeError, ValueError) as e:
            return {"type": "rpc_error", "id": rpc_id,
                    "error": {"code": "VALIDATION_ERROR", "message": "请求参数有误", "message_en": str(e)}}

    async def fetch(self, params: dict[str, Any]) -> dict[str, Any]:
        """``order.fetch``: the ERP's order as it is now (the coordinator stores the answer)."""
        return self.db.order(params["order_id"])

    async def add_items(self, params: dict[str, Any]) -> dict[str, Any]:
        """``order.add_items``: auto-accept a diner's dishes unless a payment or presettle lock forbids."""
        request_id, table_id = params["request_id"], params["table_id"]
        items = [{"sku": i["sku"], "qty": int(i.get("qty", 1))} for i in params["items"]]
        accepted = self.db.accepted_order(request_id)
        if accepted is not None:
            return accepted
        order_id = params.get("order_id") or (self.db.table_order(table_id) or {}).get("order_id")
        check = AcceptCheck(True)
        if order_id is not None:
            try:
                result = await self.terminal.locks.check(order_id, "accept_items")
                check = AcceptCheck(bool(result["allowed"]), result.get("code"))
            except Refused as e:
                if e.code != "NOT_FOUND":  # an order the coordinator has not heard of yet has no locks
                    raise
        try:
            order, changed = self.db.accept_items(order_id, table_id, items, request_id, check)
        except AcceptRefused as e:
            self.terminal.tell({"kind": "accept_refused", "order_id": order_id, "table_id": table_id,
                                "code": e.code, "message": e.message, "message_en": e.message_en})
            raise
        if changed:
            await self.terminal.push(order)
            self.terminal.tell({"kind": "accepted", "order_id": order["order_id"], "table_id": table_id,
                                "message": f"已自动接单:{table_id} 顾客加菜",
                                "message_en": f"Accepted a diner's dishes on {table_id}"})
        return order

    async def pay(self, params: dict[str, Any]) -> dict[str, Any]:
        """``order.pay``: record a diner's payment if its fence, version and amount hold (no push)."""
        fence = params.get("fence")
        if params.get("share") is not None:  # split bill: one share of the order (docs/protocol.md A13)
            order = ShareLedger(self.db).pay_share(
                params["order_id"], version=int(params["version"]), amount_cents=int(params["amount_cents"]),
                payment_ref=str(params["payment_ref"]), fence=None if fence is None else int(fence),
                share=params["share"])
            self.terminal.tell(None)
            return order
        pushes = self.behaviour.push_paid_before_answering
        order = self.db.mark_paid(params["order_id"], version=int(params["version"]),
                                  amount_cents=int(params["amount_cents"]), payment_ref=str(params["payment_ref"]),
                                  fence=None if fence is None else int(fence),
                                  new_version=pushes or self.behaviour.answer_paid_as_new_version)
        if pushes:
            await self.terminal.push(order)
        self.terminal.tell(None)
        return order

    async def move(self, params: dict[str, Any]) -> dict[str, Any]:
        """``order.move`` (SPEC §11): move the order to another table under the operation's fence."""
        order_id = params["order_id"]
        fence = (params.get("fences") or {}).get(order_id)
        order = self.db.move_order(order_id, str(params["to_table_id"]), fence=None if fence is None else int(fence))
        self.terminal.tell(None)
        return order

    async def merge(self, params: dict[str, Any]) -> dict[str, Any]:
        """``order.merge`` (SPEC §11): fold the sources into the target in one transaction."""
        fences = {k: int(v) for k, v in (params.get("fences") or {}).items()}
        into, sources = self.db.merge_orders(params["into_order_id"], [str(o) for o in params["from_order_ids"]],
                                             fences=fences)
        self.terminal.tell(None)
        return {"into": into, "sources": sources}

    async def cancel(self, params: dict[str, Any]) -> dict[str, Any]:
        """``order.cancel`` (SPEC §11): cancel the order under the operation's fence."""
        order_id = params["order_id"]
        fence = (params.get("fences") or {}).get(order_id)
        order = self.db.cancel(order_id, fence=None if fence is None else int(fence))
        self.terminal.tell(None)
        return order

    async def reopen(self, params: dict[str, Any]) -> dict[str, Any]:
        """``order.reopen`` (反结账): open a paid order again at a new version; its payment stays on record."""
        order = self.db.reopen(params["order_id"])
        self.terminal.tell(None)
        return order

    async def menu(self, params: dict[str, Any]) -> dict[str, Any]:
        """``menu.list``: the ERP's menu."""
        return {"items": self.db.menu()}
