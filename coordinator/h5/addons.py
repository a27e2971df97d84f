"""Dishes a diner adds (SPEC §5 ``POST /h5/items``), through the ERP, idempotent on ``request_id``.

Idempotency is kept in Redis so it holds across processes: ``tl:{s}:req:<table>:<request_id>``
is claimed with SET NX (a pending marker with a nonce) before the RPC and replaced by the result
after it; a concurrent duplicate waits for that result instead of sending a second
``order.add_items``. A failed request gives its claim back (``lua/claim_release.lua``) so a retry
goes to the ERP again — which is itself idempotent on ``request_id`` in case the first attempt
did reach it.

The coordinator itself refuses an add-on while a payment or presettle lock is held (SPEC §9
"Add-ons during a payment": ``PAYMENT_LOCKED`` / ``PRESETTLED``), whatever the ERP would answer,
and tells the store's terminals with ``order.addon_refused`` carrying the seed's toast
("…暂不能接单,如需接单请先取消支付"). A lock taken between this check and the ERP's accept is
still caught by the ERP's own ``accept_items`` check.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
from typing import Any

from coordinator.core import views
from coordinator.core.errors import LockConflict, ValidationFailed, lock_message
from coordinator.core.rules import Action, Role
from coordinator.core.models import ItemsRequest, Order, StoreConfig
from coordinator.h5.erp_link import ErpLink
from coordinator.h5.table import Diner
from coordinator.realtime.erp_answers import unreachable
from coordinator.store import keys
from coordinator.store.engine import LockEngine, compact

log = logging.getLogger(__name__)

#: How long the result of an add-items request is replayed.
REPLAY_SECONDS = 86_400
#: A pending add-items claim outlives the RPC deadline by this much, then frees itself.
CLAIM_MARGIN_MS = 2_000
#: How often a duplicate request looks whether the first one has settled.
POLL_SECONDS = 0.05


class AddOns:
    """Adds dishes to a table's order through the ERP, once per ``request_id``."""

    def __init__(self, redis: Any, engine: LockEngine, erp: ErpLink) -> None:
        self.redis = redis
        self.engine = engine
        self.erp = erp

    async def add(self, diner: Diner, request: ItemsRequest) -> Order:
        """Add the dishes to the table's order (the ERP opens one if none); replay a known request_id."""
        config = await self.engine.config(diner.store_id)
        key = keys.item_request(diner.store_id, f"{diner.table_id}:{request.request_id}")
        items = [line.model_dump() for line in request.items]
        digest = hashlib.sha256(compact(items).encode()).hexdigest()[:32]
        claim = compact({"state": "pending", "items": digest, "nonce": secrets.token_hex(8)})
        claim_ms = config.erp_rpc_timeout_ms + CLAIM_MARGIN_MS
        replay = await self._claim(key, claim, digest, claim_ms)
        if replay is not None:
            return replay
        try:
            await self._refuse_if_locked(diner, config, items)
        except BaseException:
            await asyncio.shield(self._give_back(key, claim))
            raise
        try:
            order = await self._ask_erp(diner, config, items, request.request_id)
        except BaseException:
            await asyncio.shield(self._give_back(key, claim))
            raise
        await self.redis.set(key, compact({"state": "done", "items": digest, "order": order}), ex=REPLAY_SECONDS)
        return Order.model_validate(order)

    async def _refuse_if_locked(self, diner: Diner, config: StoreConfig, items: list[dict[str, Any]]) -> None:
        """Refuse (and tell the terminals) an add-on to an order under a payment or presettle lock."""
        current = await self.engine.table_order(diner.store_id, diner.table_id)
        if current is None or not config.strong_link_enabled:
            return
        order_id = current["order_id"]
        decision = await self.engine.check(diner.store_id, order_id, diner.holder(), Action.ADD_ITEMS)
        if decision.allowed:
            return
        code = str(decision.code)
        # The cashier's toast is the ERP accept_items wording (SPEC §5 messages table).
        toast, toast_en = lock_message(code, Role.ERP, Action.ACCEPT_ITEMS, False)
        # Under the audit bound of refused H5 requests (issue 15 finding 3): a diner repeating a
        # refused add-on cannot push the staff's history out of the capped streams.
        await self.engine.emit_refusal(
            diner.store_id, "order.addon_refused",
            {"code": code, "message": toast, "message_en": toast_en, "items": items},
            diner.holder(), table_id=diner.table_id, order_id=order_id, code=code,
        )
        _, locks = await self.engine.get_order(diner.store_id, order_id)
        reported = next((l for l in locks if decision.reported and l["kind"] == decision.reported.kind.value), None)
        raise LockConflict(code, Role.H5, Action.ADD_ITEMS,
                           lock=views.h5_lock(reported, diner.session_id) if reported else None)

    async def _claim(self, key: str, claim: str, digest: str, claim_ms: int) -> Order | None:
        """Claim the request_id (None), or wait, bounded, for whoever holds it and return its order."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + claim_ms / 1000
        while not await self.redis.set(key, claim, nx=True, px=claim_ms):
            raw = await self.redis.get(key)
            record = json.loads(raw) if raw is not None else None  # None: the holder gave it back
            if record is not None and record["items"] != digest:
                raise ValidationFailed(details=[{"loc": ["body", "request_id"], "type": "request_id_reused",
                                                 "msg": "this request_id was already used with other items"}])
            if record is not None and record["state"] == "done":
                return Order.model_validate(record["order"])
            if loop.time() >= give_up:
                raise unreachable("timeout", "order.add_items")
            if record is not None:
                await asyncio.sleep(POLL_SECONDS)
        return None

    async def _give_back(self, key: str, claim: str) -> None:
        """Release our claim so a retry may go to the ERP again (it expires anyway)."""
        try:
            await self.engine.scripts.claim_release(keys=[key], args=[claim])
        except Exception as exc:  # never hide why the request failed
            log.warning("could not give back claim %s (it expires by itself): %s", key, exc)

    async def _ask_erp(self, diner: Diner, config: StoreConfig, items: list[dict[str, Any]],
                       request_id: str) -> dict[str, Any]:
        """Have the ERP master add the dishes to the table's current order (None: open one)."""
        current = await self.engine.table_order(diner.store_id, diner.table_id)
        params = {"order_id": current["order_id"] if current else None, "table_id": diner.table_id,
                  "items": items, "request_id": request_id}
        result = await self.erp.ask(diner, config, "order.add_items", params)
        return await self.erp.keep(diner, self.erp.order_answer(diner, "order.add_items", result))
