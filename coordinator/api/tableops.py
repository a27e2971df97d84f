"""Stuck locks and table operations (SPEC §11): thin handlers over ``store/tableops.py``.

Admin (the lock board):
- ``POST /admin/stores/{s}/orders/{o}/locks/{kind}/release {reason}`` ends that lock;
- ``POST /admin/stores/{s}/tables/{t}/release {reason}`` ends every lock of the table's orders
  (a table stuck after a device died).
Each ended lock is ``lock.released {reason: "admin", note: <the admin's reason>, lock}``, in the
audit log with the admin as actor; its holder learns it from that event. A ``completing`` lock
(the ERP is confirming money) is kept and listed in ``kept``. 200 either way: releasing a lock
that has gone meanwhile answers ``released: []``.
"""

from __future__ import annotations

from coordinator.api.routing import Call, Reply, Router
from coordinator.core import views
from coordinator.core.models import LockView
from coordinator.core.models.tableops import AdminRelease, AdminReleased
from coordinator.store.tableops import TableOps

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
        store_id, [order_id], call.path["kind"], call.body.reason, call.principal.holder(),
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
