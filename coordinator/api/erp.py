"""ERP terminal endpoints of SPEC §5: orders pushed by the ERP, locks, checks and payments.

Every endpoint is scoped to the terminal's own ``{store_id}`` (the router's wrapper enforces
it). Handlers are thin: the engine decides and raises, the views decide what a terminal sees.
"""

from __future__ import annotations

from typing import Any

from coordinator.api.routing import Call, Reply, Router
from coordinator.core import views
from coordinator.core.errors import NotFound, ValidationFailed, lock_message
from coordinator.core.models import (
    CheckRequest,
    CheckResult,
    Lock,
    LockGrant,
    LockRequest,
    LockResponse,
    LockView,
    LockViewList,
    Order,
    OrderIn,
    OrderResponse,
    OrderWithLockViews,
    PaymentRequest,
    PutOrderQuery,
    Released,
    TokenBody,
)
from coordinator.core.rules import ACTION_KIND, Action, Kind, Role
from coordinator.realtime import liveness as presence

router = Router("erp")

_ORDER = "/stores/{store_id}/orders/{order_id}"


async def _online(call: Call, store_id: str) -> set[str]:
    """The store's terminals with a live socket, for the ``online`` flag of holders."""
    return await presence.online(call.services.redis, store_id, await call.services.engine.now())


def _ids(call: Call) -> tuple[str, str]:
    return call.path["store_id"], call.path["order_id"]


@router.route("PUT", _ORDER, auth=("erp",), body=OrderIn, query=PutOrderQuery, responses={200: OrderResponse},
              errors=(409,))
async def put_order(call: Call) -> Reply:
    """Store the order as the ERP has it now (idempotent for the same version and content)."""
    store_id, order_id = _ids(call)
    order: OrderIn = call.body
    if order.order_id != order_id:
        raise ValidationFailed(details=[{
            "loc": ["body", "order_id"], "msg": f"must equal the order_id of the path ({order_id})",
            "type": "path_mismatch",
        }])
    force = call.query.force if call.query is not None else False  # past a paid share (SPEC §10)
    stored, _changed = await call.services.engine.put_order(store_id, order, call.principal.holder(), force=force)
    return Reply(200, OrderResponse(order=Order.model_validate(stored)))


@router.route("GET", _ORDER, auth=("erp",), responses={200: OrderWithLockViews})
async def get_order(call: Call) -> Reply:
    """The order as last reported by the ERP, with its live locks (no tokens)."""
    store_id, order_id = _ids(call)
    order, locks = await call.services.engine.get_order(store_id, order_id)
    if order is None:
        raise NotFound()
    online = await _online(call, store_id)
    return Reply(200, OrderWithLockViews(
        order=Order.model_validate(order),
        locks=[LockView.model_validate(views.staff_lock(lock, online)) for lock in locks],
    ))


@router.route("GET", "/stores/{store_id}/locks", auth=("erp",), responses={200: LockViewList})
async def list_locks(call: Call) -> Reply:
    """Every live lock of the store (the polling form of the lock board)."""
    store_id = call.path["store_id"]
    locks = await call.services.engine.locks(store_id)
    online = await _online(call, store_id)
    return Reply(200, LockViewList(locks=[LockView.model_validate(views.staff_lock(l, online)) for l in locks]))


@router.route("POST", _ORDER + "/locks", auth=("erp",), body=LockRequest, responses={201: LockGrant},
              errors=(409,))
async def take_lock(call: Call) -> Reply:
    """Take an order, presettle or payment lock (with ``force`` after the user confirmed)."""
    store_id, order_id = _ids(call)
    request: LockRequest = call.body
    if request.force and call.services.payments is not None:
        # A diner's payment in flight is asked about at the provider before it may be broken (SPEC §9.6).
        await call.services.payments.service.before_force(store_id, order_id, unverified_ok=request.force_unverified)
    # One Redis round trip (issue 18): the script checks the terminal and reads the holder's presence.
    lock, enforced = await call.services.engine.acquire(
        store_id, order_id, call.principal.holder(), request.kind,
        force=request.force, expected_version=request.expected_version,
        credential=call.principal.credential, online=True,
    )
    return Reply(201, LockGrant(lock=Lock.model_validate(views.own_lock(lock)), enforced=enforced))


@router.route("POST", _ORDER + "/locks/{kind}/renew", auth=("erp",), body=TokenBody,
              responses={200: LockResponse}, errors=(409,))
async def renew_lock(call: Call) -> Reply:
    """Extend the terminal's lock to now + the kind's duration; LOCK_LOST when it is gone."""
    store_id, order_id = _ids(call)
    lock = await call.services.engine.renew(
        store_id, order_id, Kind(call.path["kind"]), call.body.token, call.principal.holder(),
        credential=call.principal.credential, online=True,
    )
    return Reply(200, LockResponse(lock=Lock.model_validate(views.own_lock(lock))))


@router.route("POST", _ORDER + "/locks/{kind}/release", auth=("erp",), body=TokenBody,
              responses={200: Released})
async def release_lock(call: Call) -> Reply:
    """Give the lock back; ``released`` is false when the token holds nothing releasable."""
    store_id, order_id = _ids(call)
    released = await call.services.engine.release(
        store_id, order_id, Kind(call.path["kind"]), call.body.token, call.principal.holder(),
        credential=call.principal.credential,
    )
    return Reply(200, Released(released=released))


@router.route("POST", _ORDER + "/check", auth=("erp",), body=CheckRequest, responses={200: CheckResult},
              errors=(409,))
async def check(call: Call) -> Reply:
    """Say whether an action is allowed on the order now, with the text to show if not."""
    store_id, order_id = _ids(call)
    action: Action = call.body.action
    decision = await call.services.engine.check(store_id, order_id, call.principal.holder(), action,
                                                credential=call.principal.credential)
    return Reply(200, _check_result(decision.allowed, decision.code, decision.force_allowed, action))


def _check_result(allowed: bool, code: Any, force_allowed: bool, action: Action) -> CheckResult:
    """The CheckResult of a decision, as an ERP terminal reads it."""
    if allowed:
        return CheckResult(allowed=True, code=None, message=None, message_en=None, force_allowed=False)
    # Only a lock request can be repeated with force; dishes cannot be added under a payment or
    # presettle lock "whoever asks" (SPEC §2), so the remedy the terminal shows is to cancel it.
    # For an ERP terminal adding dishes and accepting a diner's dishes are the same act (接单).
    force_allowed = force_allowed and action in ACTION_KIND
    shown = Action.ACCEPT_ITEMS if action is Action.ADD_ITEMS else action
    message, message_en = lock_message(code, Role.ERP, shown, force_allowed)
    return CheckResult(allowed=False, code=str(code), message=message, message_en=message_en,
                       force_allowed=force_allowed)


@router.route("POST", _ORDER + "/payments", auth=("erp",), body=PaymentRequest,
              responses={200: OrderResponse}, errors=(409,))
async def complete_payment(call: Call) -> Reply:
    """Complete the terminal's own payment: it is the ERP, so check and mark paid are one step."""
    store_id, order_id = _ids(call)
    payment: PaymentRequest = call.body
    reply = await call.services.engine.complete(
        store_id, order_id, call.principal.holder(), token=payment.token,
        amount_cents=payment.amount_cents, version=payment.version, payment_ref=payment.payment_ref,
    )
    return Reply(200, OrderResponse(order=Order.model_validate(reply["order"])))
