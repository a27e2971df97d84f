"""Stuck locks and table operations (SPEC §11): thin handlers over ``store/tableops.py``.

Admin (the lock board):
- ``POST /admin/stores/{s}/orders/{o}/locks/{kind}/release {reason}`` ends that lock;
- ``POST /admin/stores/{s}/tables/{t}/release {reason}`` ends every lock of the table's orders
  (a table stuck after a device died).
Each ended lock is ``lock.released {reason: "admin", note: <the admin's reason>, lock}``, in the
audit log with the admin as actor; its holder learns it from that event. A ``completing`` lock
(the ERP is confirming money) is kept and listed in ``kept``. 200 either way: releasing a lock
that has gone meanwhile answers ``released: []``.

ERP (docs/protocol.md A10):
- ``POST /stores/{s}/orders/{o}/move {to_table_id, force}`` (换桌) and
  ``POST /stores/{s}/orders/{o}/merge {from_order_ids, force}`` (并桌): one atomic Lua step
  decides under SPEC §2's ``modify`` rules plus money in flight / a share paid (409
  PAYMENT_IN_FLIGHT / SHARE_PAID / ORDER_LOCKED / PRESETTLED / PAYMENT_LOCKED, ``force_allowed``),
  the store's master ERP applies it (``order.move`` / ``order.merge``), the answer is stored and
  the old tables told. 200 ``{order, locks, refund_tasks}``.
"""

from __future__ import annotations

from coordinator.api.routing import Call, Reply, Router
from coordinator.core import views
from coordinator.core.models import LockView
from coordinator.core.models import Order
from coordinator.core.models.tableops import AdminRelease, AdminReleased, ForceBody, MergeRequest, MoveRequest, TableOpReply
from coordinator.store.tableops import TableOps
from coordinator.tableops import TableOperations

router = Router("table-operations")
ADMIN = ("admin",)


async def _released(call: Call, store_id: str, released: list[dict], kept: list[dict]) -> Reply:
    online = await call.services.liveness.online(store_id)
    return Reply(200, AdminReleased(
        released=[LockView.model_validate(views.staff_lock(l, online)) for l in released],
        kept=[LockView.model_validate(views.staff_lock(l, online)) for l in kept],
    ))


@router.route("POST", "/admin/stores/{store_id}/orders/{order_id}/locks/{kind}/release", auth=ADMIN,
              body=AdminRelease, responses={200: AdminReleased})
async def admin_release_lock(call: Call) -> Reply:
    """End a stuck lock from the lock board (lock.released reason admin, audited, its holder told)."""
    store_id, order_id = call.path["store_id"], call.path["order_id"]
    released, kept = await TableOps(call.services.engine).admin_release(
        store_id, [order_id], call.path["kind"], call.body.reason, call.principal.holder(), call.body.fence,
    )
    return await _released(call, store_id, released, kept)


@router.route("POST", "/admin/stores/{store_id}/tables/{table_id}/release", auth=ADMIN,
              body=AdminRelease, responses={200: AdminReleased})
async def admin_release_table(call: Call) -> Reply:
    """End every lock of a table's orders (a table stuck after a device died)."""
    store_id = call.path["store_id"]
    ops = TableOps(call.services.engine)
    order_ids = await ops.orders_at(store_id, call.path["table_id"])
    released, kept = await ops.admin_release(store_id, order_ids, "", call.body.reason, call.principal.holder())
    return await _released(call, store_id, released, kept)


def _operations(call: Call) -> TableOperations:
    payments = call.services.payments
    unverified_ok = bool(getattr(call.body, "force_unverified", False))

    async def vet(store_id: str, order_id: str) -> None:
        # A diner's in-flight provider payment is asked about before a force may break it (SPEC §9).
        await payments.service.before_force(store_id, order_id, unverified_ok=unverified_ok)

    return TableOperations(call.services.engine, call.services.rpc, call.services.directory,
                           vet_force=vet if payments is not None else None)


async def _order_reply(call: Call, store_id: str, order: dict, refunds: list[dict]) -> Reply:
    _, locks = await call.services.engine.get_order(store_id, order["order_id"])
    online = await call.services.liveness.online(store_id)
    return Reply(200, TableOpReply(
        order=Order.model_validate(order),
        locks=[LockView.model_validate(views.staff_lock(l, online)) for l in locks],
        refund_tasks=refunds,
    ))


@router.route("POST", "/stores/{store_id}/orders/{order_id}/move", auth=("erp",), body=MoveRequest,
              responses={200: TableOpReply}, errors=(404, 409, 503))
async def move_order(call: Call) -> Reply:
    """Move the order to another table (换桌); its locks and its diners follow it."""
    store_id, order_id = call.path["store_id"], call.path["order_id"]
    request: MoveRequest = call.body
    order, refunds = await _operations(call).move(
        store_id, order_id, request.to_table_id, call.principal.holder(), force=request.force,
    )
    return await _order_reply(call, store_id, order, refunds)


@router.route("POST", "/stores/{store_id}/orders/{order_id}/merge", auth=("erp",), body=MergeRequest,
              responses={200: TableOpReply}, errors=(400, 404, 409, 503))
async def merge_orders(call: Call) -> Reply:
    """Fold other orders into this one (并桌); their diners see the merged order."""
    store_id, order_id = call.path["store_id"], call.path["order_id"]
    request: MergeRequest = call.body
    order, refunds = await _operations(call).merge(
        store_id, order_id, list(request.from_order_ids), call.principal.holder(), force=request.force,
    )
    return await _order_reply(call, store_id, order, refunds)


@router.route("POST", "/stores/{store_id}/orders/{order_id}/cancel", auth=("erp",), body=ForceBody,
              responses={200: TableOpReply}, errors=(404, 409, 503))
async def cancel_order(call: Call) -> Reply:
    """Cancel the order through the ERP, under the same rules as a move (force for ERP)."""
    store_id, order_id = call.path["store_id"], call.path["order_id"]
    order, refunds = await _operations(call).cancel(store_id, order_id, call.principal.holder(), force=call.body.force)
    return await _order_reply(call, store_id, order, refunds)


@router.route("POST", "/stores/{store_id}/orders/{order_id}/reopen", auth=("erp",),
              responses={200: TableOpReply}, errors=(404, 409, 503))
async def reopen_order(call: Call) -> Reply:
    """Reopen a paid or cancelled order (反结账): a new version; what was paid stays in the books."""
    store_id, order_id = call.path["store_id"], call.path["order_id"]
    order = await _operations(call).reopen(store_id, order_id, call.principal.holder())
    return await _order_reply(call, store_id, order, [])
