"""H5 (diner) endpoints of SPEC §5 that ask the ERP over RPC: menu, dishes, checkout and payment.

Every call to the ERP goes to the store's master terminal through ``services.rpc`` (rpc.py) and is
bounded by the store's ``erp_rpc_timeout_ms``; no master, no answer or a malformed answer is
``503 ERP_UNREACHABLE``. A session only ever reaches its own table (invariant 6): orders are the
table's, and locks in errors are shown in the H5 viewer form.

Idempotency, kept in Redis so it holds across processes:
- ``POST /h5/items``: ``tl:{s}:req:<table>:<request_id>`` is claimed with SET NX (a pending marker
  with a nonce) before the RPC and replaced by the result after it; a concurrent duplicate waits
  for that result instead of sending a second ``order.add_items``. A failed request gives its
  claim back (``lua/claim_release.lua``) so a retry goes to the ERP again — which is itself
  idempotent on ``request_id`` in case the first attempt did reach it.
- ``POST /h5/payments``: ``complete.lua`` replays a paid ``payment_ref``; ``tl:{s}:h5pay:...``
  also remembers which order a ref paid, for a replay after the ERP's own push closed the order.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import logging
import secrets
from typing import Any

from coordinator.api.routing import Call, Handler, Reply, Router
from coordinator.core import views
from coordinator.core.errors import (
    ErpUnreachable,
    LockConflict,
    LockLost,
    NotFound,
    OrderClosed,
    StaleVersion,
    TablelockError,
    ValidationFailed,
)
from coordinator.core.models import (
    Checkout,
    ItemsRequest,
    Lock,
    Menu,
    Order,
    OrderResponse,
    PaymentRequest,
    Released,
    StoreConfig,
    TokenBody,
)
from coordinator.core.rules import Action, Kind, Role
from coordinator.realtime.erp_answers import ErpOrder, unreachable
from coordinator.store import keys
from coordinator.store.engine import compact
from coordinator.store.scripts import Scripts

log = logging.getLogger(__name__)

router = Router("h5")

#: The menu is asked of the ERP at most once a minute per store; the last one is kept a day and
#: served while the ERP cannot be reached.
MENU_FRESH_MS = 60_000
MENU_KEEP_SECONDS = 86_400
#: How long the result of an add-items request or a paid payment_ref is replayed.
REPLAY_SECONDS = 86_400
#: A pending add-items claim outlives the RPC deadline by this much, then frees itself.
CLAIM_MARGIN_MS = 2_000
#: The completing window of an H5 payment beyond the RPC deadline (SPEC §2 "completing").
COMPLETING_MARGIN_MS = 2_000
#: Whom the audit log names for an order the coordinator stored from an RPC answer.
ERP_ANSWER = {"role": "system", "source": "erp_rpc"}


def h5_view(handler: Handler) -> Handler:
    """Show any lock an error carries in the H5 viewer form (no token, no terminal or session ids)."""

    @functools.wraps(handler)
    async def wrapped(call: Call) -> Reply:
        try:
            return await handler(call)
        except TablelockError as error:
            if error.lock:
                error.lock = views.h5_lock(error.lock, call.principal.session_id)
            raise

    return wrapped


async def erp_call(call: Call, config: StoreConfig, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """Ask the store's master ERP, bounded by the store's ``erp_rpc_timeout_ms``."""
    rpc = call.services.rpc
    if rpc is None:
        raise unreachable("no_rpc", method)
    return await rpc.call(call.principal.store_id, method, params, config.erp_rpc_timeout_ms)


def table_order_answer(call: Call, method: str, result: dict[str, Any], order_id: str | None = None) -> ErpOrder:
    """The ERP's order answer, checked to be of this session's table (and of ``order_id``)."""
    order = ErpOrder.model_validate(result)
    if order.table_id != call.principal.table_id or (order_id is not None and order.order_id != order_id):
        log.warning("rpc: %s answered order %s of table %s for table %s", method, order.order_id,
                    order.table_id, call.principal.table_id)
        raise unreachable("bad_reply", method)
    return order


async def store_answer(call: Call, order: ErpOrder) -> dict[str, Any]:
    """Store the ERP's answer as the ERP's own push would (idempotent); the coordinator's copy."""
    try:
        stored, _changed = await call.services.engine.put_order(call.principal.store_id, order.order_in(), ERP_ANSWER)
    except StaleVersion as stale:
        # The ERP pushed a later version before answering: that one is the truth now.
        return stale.order
    return stored


async def table_order_ids(call: Call) -> list[str]:
    """The session table's open orders, most recently opened first."""
    orders = await call.services.engine.open_orders(call.principal.store_id)
    mine = [(opened_at, order_id) for order_id, (table_id, opened_at) in orders.items()
            if table_id == call.principal.table_id]
    return [order_id for _, order_id in sorted(mine, reverse=True)]


async def order_paying_with(call: Call, token: str) -> str | None:
    """The table's open order whose live payment lock has ``token``."""
    for order_id in await table_order_ids(call):
        _, locks = await call.services.engine.get_order(call.principal.store_id, order_id)
        for lock in locks:
            if lock["kind"] == Kind.PAYMENT.value and hmac.compare_digest(lock["token"].encode(), token.encode()):
                return order_id
    return None


# --- menu ---------------------------------------------------------------------------------


@router.route("GET", "/h5/menu", auth=("h5",), responses={200: Menu}, errors=(503,))
async def get_menu(call: Call) -> Reply:
    """The store's menu from the ERP (cached a minute; the last one while the ERP is unreachable)."""
    services, store_id = call.services, call.principal.store_id
    key = keys.menu(store_id)
    now = await services.engine.now()
    raw = await services.redis.get(key)
    cached = json.loads(raw) if raw else None
    if cached is not None and now - cached["fetched_at"] < MENU_FRESH_MS:
        return Reply(200, Menu.model_validate(cached))
    config = await services.engine.config(store_id)
    try:
        menu = await erp_call(call, config, "menu.list", {})
    except ErpUnreachable:
        if cached is None:
            raise
        return Reply(200, Menu.model_validate(cached))
    await services.redis.set(key, compact({"fetched_at": now, **menu}), ex=MENU_KEEP_SECONDS)
    return Reply(200, Menu.model_validate(menu))


# --- dishes -------------------------------------------------------------------------------


@router.route("POST", "/h5/items", auth=("h5",), body=ItemsRequest, responses={200: OrderResponse},
              errors=(409,))
@h5_view
async def add_items(call: Call) -> Reply:
    """Add dishes to the table's order through the ERP (it opens one if none); idempotent on request_id."""
    services, me = call.services, call.principal
    request: ItemsRequest = call.body
    config = await services.engine.config(me.store_id)
    key = keys.item_request(me.store_id, f"{me.table_id}:{request.request_id}")
    items = [line.model_dump() for line in request.items]
    digest = hashlib.sha256(compact(items).encode()).hexdigest()[:32]
    claim = compact({"state": "pending", "items": digest, "nonce": secrets.token_hex(8)})
    claim_ms = config.erp_rpc_timeout_ms + CLAIM_MARGIN_MS
    loop = asyncio.get_running_loop()
    give_up = loop.time() + claim_ms / 1000
    # Claim the request_id, or wait (bounded) for whoever holds it to settle.
    while not await services.redis.set(key, claim, nx=True, px=claim_ms):
        raw = await services.redis.get(key)
        record = json.loads(raw) if raw is not None else None  # None: the holder gave it back
        if record is not None and record["items"] != digest:
            raise ValidationFailed(details=[{"loc": ["body", "request_id"], "type": "request_id_reused",
                                             "msg": "this request_id was already used with other items"}])
        if record is not None and record["state"] == "done":
            return Reply(200, OrderResponse(order=Order.model_validate(record["order"])))
        if loop.time() >= give_up:
            raise unreachable("timeout", "order.add_items")
        if record is not None:
            await asyncio.sleep(0.05)
    try:
        order = await _add_items(call, config, items, request.request_id)
    except BaseException:
        await asyncio.shield(_give_back(services.engine.scripts, key, claim))
        raise
    await services.redis.set(key, compact({"state": "done", "items": digest, "order": order}), ex=REPLAY_SECONDS)
    return Reply(200, OrderResponse(order=Order.model_validate(order)))


async def _give_back(scripts: Scripts, key: str, claim: str) -> None:
    """Release our add-items claim so a retry may go to the ERP again (it expires anyway)."""
    try:
        await scripts.claim_release(keys=[key], args=[claim])
    except Exception as exc:  # never hide why the request failed
        log.warning("could not give back claim %s (it expires by itself): %s", key, exc)


async def _add_items(call: Call, config: StoreConfig, items: list[dict[str, Any]], request_id: str) -> dict[str, Any]:
    """Ask the ERP master to add the dishes.

    The coordinator does not refuse on its own during a payment or presettle lock: SPEC §7 has
    the ERP auto-accept and run the ``accept_items`` check, so its cashier sees the refusal
    ("…暂不能接单,如需接单请先取消支付") and the diner gets the ERP's 409 in the H5 wording.
    """
    engine, me = call.services.engine, call.principal
    current = await engine.table_order(me.store_id, me.table_id)
    params = {"order_id": current["order_id"] if current else None, "table_id": me.table_id,
              "items": items, "request_id": request_id}
    result = await erp_call(call, config, "order.add_items", params)
    return await store_answer(call, table_order_answer(call, "order.add_items", result))


# --- checkout -----------------------------------------------------------------------------


@router.route("POST", "/h5/checkout", auth=("h5",), responses={201: Checkout}, errors=(409,))
@h5_view
async def checkout(call: Call) -> Reply:
    """Pull the table's order from the ERP and take the H5 payment lock bound to that version."""
    engine, me = call.services.engine, call.principal
    config = await engine.config(me.store_id)
    order = await engine.table_order(me.store_id, me.table_id)
    if order is None:
        raise NotFound()
    if config.strong_link_enabled:
        await _refuse_if_locked(call, order["order_id"])
        result = await erp_call(call, config, "order.fetch", {"order_id": order["order_id"]})
        pulled = table_order_answer(call, "order.fetch", result, order["order_id"])
        order = await store_answer(call, pulled)
        if pulled.status != "open":
            raise OrderClosed(order=order)
        version = pulled.version
    else:
        version = order["version"]  # legacy mode: the last order the ERP pushed, nothing pulled
    lock, enforced = await engine.acquire(
        me.store_id, order["order_id"], me.holder(), Kind.PAYMENT, expected_version=version,
    )
    return Reply(201, Checkout(lock=Lock.model_validate(views.own_lock(lock)), order=Order.model_validate(order),
                               enforced=enforced))


async def _refuse_if_locked(call: Call, order_id: str) -> None:
    """Refuse a checkout the rules deny already (a waiter editing, someone paying) before the ERP pull."""
    engine, me = call.services.engine, call.principal
    decision = await engine.check(me.store_id, order_id, me.holder(), Action.PAY)
    if decision.allowed:
        return
    _, locks = await engine.get_order(me.store_id, order_id)
    reported = next((l for l in locks if decision.reported and l["kind"] == decision.reported.kind.value), None)
    raise LockConflict(str(decision.code), Role.H5, Action.PAY,
                       lock=views.h5_lock(reported, me.session_id) if reported else None)


@router.route("POST", "/h5/checkout/cancel", auth=("h5",), body=TokenBody, responses={200: Released})
async def cancel_checkout(call: Call) -> Reply:
    """Give the H5 payment lock back; ``released`` is false when the token holds nothing releasable."""
    me, token = call.principal, call.body.token
    order_id = await order_paying_with(call, token)
    if order_id is None:
        return Reply(200, Released(released=False))
    released = await call.services.engine.release(me.store_id, order_id, Kind.PAYMENT, token, me.holder())
    return Reply(200, Released(released=released))


# --- payment ------------------------------------------------------------------------------


@router.route("POST", "/h5/payments", auth=("h5",), body=PaymentRequest, responses={200: OrderResponse},
              errors=(409,))
@h5_view
async def pay(call: Call) -> Reply:
    """Complete the diner's payment: check the lock, have the ERP confirm order.pay, mark the order paid."""
    services, engine, me = call.services, call.services.engine, call.principal
    payment: PaymentRequest = call.body
    record_key = keys.h5_payment(me.store_id, me.table_id, payment.payment_ref)
    raw = await services.redis.get(record_key)
    if raw is not None:  # this payment_ref already paid an order of this table: replay it
        paid, _ = await engine.get_order(me.store_id, json.loads(raw)["order_id"])
        return Reply(200, OrderResponse(order=Order.model_validate(paid)))

    order_id = await order_paying_with(call, payment.token)
    if order_id is None:
        # No live lock has this token (expired, forced away, legacy mode): let complete.lua say
        # so — and record it — against the order the diner is looking at.
        open_ids = await table_order_ids(call)
        if not open_ids:
            raise LockLost()
        order_id = open_ids[0]
    config = await engine.config(me.store_id)
    begun = await engine.complete(
        me.store_id, order_id, me.holder(), token=payment.token, amount_cents=payment.amount_cents,
        version=payment.version, payment_ref=payment.payment_ref, mode="begin",
        window_ms=config.erp_rpc_timeout_ms + COMPLETING_MARGIN_MS,
    )
    if begun.get("paid"):
        order = begun["order"]  # a replay complete.lua recognised
    else:
        order = await _confirm_with_erp(call, config, order_id, payment, begun.get("lock"))
    await services.redis.set(record_key, compact({"order_id": order_id}), ex=REPLAY_SECONDS)
    return Reply(200, OrderResponse(order=Order.model_validate(order)))


async def _confirm_with_erp(
    call: Call, config: StoreConfig, order_id: str, payment: PaymentRequest, lock: dict[str, Any] | None,
) -> dict[str, Any]:
    """Ask the ERP to take the payment, then end the completion as it answered."""
    engine, me = call.services.engine, call.principal
    finish = functools.partial(
        engine.finish, me.store_id, order_id, me.holder(), token=payment.token,
        payment_ref=payment.payment_ref, amount_cents=payment.amount_cents,
    )
    params = {"order_id": order_id, "version": payment.version, "amount_cents": payment.amount_cents,
              "payment_ref": payment.payment_ref, "fence": lock["fence"] if lock else None}
    try:
        result = await erp_call(call, config, "order.pay", params)
        confirmed = table_order_answer(call, "order.pay", result, order_id)
        if confirmed.status != "paid":
            raise unreachable("bad_reply", "order.pay", erp_status=confirmed.status)
    except TablelockError as refused:
        await asyncio.shield(finish(paid=False, code=getattr(refused, "erp_code", refused.code)))
        raise
    except BaseException:  # Redis trouble, or the request cancelled: the payment did not complete here
        await asyncio.shield(finish(paid=False, code="ERP_UNREACHABLE"))
        raise
    try:
        return (await finish(paid=True))["order"]
    except OrderClosed:
        # The ERP's own push of the paid order may land first and close it: that is success.
        current, _ = await engine.get_order(me.store_id, order_id)
        if current is None or current["status"] != "paid":
            raise
        return current
