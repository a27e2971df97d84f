"""ERP terminal endpoints of SPEC §5: orders pushed by the ERP, locks, checks and payments.

Every endpoint is scoped to the terminal's own ``{store_id}`` (the router's wrapper enforces
it). Handlers are thin: the lock requests are ``coordinator/erp`` ErpLocks calls (the websocket
commands of ``api/ws_commands.py`` make the same calls), the engine decides and raises.
"""

from __future__ import annotations

from coordinator.api.routing import Call, Reply, Router
from coordinator.core import views
from coordinator.core.errors import NotFound, ValidationFailed
from coordinator.core.models import (
    CheckRequest,
    CheckResult,
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
from coordinator.core.rules import Kind
from coordinator.erp import ErpLocks
from coordinator.services import Services

router = Router("erp")

_ORDER = "/stores/{store_id}/orders/{order_id}"


async def _online(call: Call, store_id: str) -> set[str]:
    """The store's terminals with a live socket, for the ``online`` flag of holders."""
    return await call.services.liveness.online(store_id)


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


def erp_locks(services: Services) -> ErpLocks:
    """The ERP lock service over the process's services (payments may be off); HTTP and websocket commands."""
    return ErpLocks(services.engine, services.payments.service if services.payments else None)


def locks_of(call: Call) -> ErpLocks:
    """The ERP lock service for one HTTP call."""
    return erp_locks(call.services)


@router.route("POST", _ORDER + "/locks", auth=("erp",), body=LockRequest, responses={201: LockGrant},
              errors=(409,))
async def take_lock(call: Call) -> Reply:
    """Take an order, presettle or payment lock (with ``force`` after the user confirmed)."""
    store_id, order_id = _ids(call)
    return Reply(201, await locks_of(call).take(store_id, order_id, call.principal, call.body))


@router.route("POST", _ORDER + "/locks/{kind}/renew", auth=("erp",), body=TokenBody,
              responses={200: LockResponse}, errors=(409,))
async def renew_lock(call: Call) -> Reply:
    """Extend the terminal's lock to now + the kind's duration; LOCK_LOST when it is gone."""
    store_id, order_id = _ids(call)
    kind = Kind(call.path["kind"])
    return Reply(200, await locks_of(call).renew(store_id, order_id, call.principal, kind, call.body.token))


@router.route("POST", _ORDER + "/locks/{kind}/release", auth=("erp",), body=TokenBody,
              responses={200: Released})
async def release_lock(call: Call) -> Reply:
    """Give the lock back; ``released`` is false when the token holds nothing releasable."""
    store_id, order_id = _ids(call)
    kind = Kind(call.path["kind"])
    return Reply(200, await locks_of(call).release(store_id, order_id, call.principal, kind, call.body.token))


@router.route("POST", _ORDER + "/check", auth=("erp",), body=CheckRequest, responses={200: CheckResult},
              errors=(409,))
async def check(call: Call) -> Reply:
    """Say whether an action is allowed on the order now, with the text to show if not."""
    store_id, order_id = _ids(call)
    return Reply(200, await locks_of(call).check(store_id, order_id, call.principal, call.body.action))


@router.route("POST", _ORDER + "/payments", auth=("erp",), body=PaymentRequest,
              responses={200: OrderResponse}, errors=(409,))
async def complete_payment(call: Call) -> Reply:
    """Complete the terminal's own payment: it is the ERP, so check and mark paid are one step."""
    store_id, order_id = _ids(call)
    return Reply(200, await locks_of(call).complete(store_id, order_id, call.principal, call.body))
