"""Service requests (SPEC §11): the diner asks (呼叫服务员, 加水, 请求结账), one waiter takes it.

- ``POST /h5/service-requests {kind}`` (H5 session) → 201; the same kind again from the table
  within the cooldown → 429 RATE_LIMITED with Retry-After.
- ``GET /stores/{s}/service-requests`` (ERP) and ``GET /admin/stores/{s}/service-requests``
  (admin board): the recent requests, newest first, with who took each.
- ``POST /stores/{s}/service-requests/{request_id}/take`` (ERP) → 200, or 409 ALREADY_TAKEN
  naming the waiter who was first (``details[0].taken_by``).
"""

from __future__ import annotations

from coordinator.api.routing import Call, Reply, Router
from coordinator.core import views
from coordinator.core.models.tableops import (
    DinerServiceRequest,
    ServiceRequest,
    ServiceRequestIn,
    ServiceRequestList,
    ServiceRequestReply,
    ServiceTaken,
)
from coordinator.store.service_desk import ServiceDesk

router = Router("service-requests")


def _staff(request: dict, online: set[str] | frozenset[str]) -> ServiceRequest:
    shown = dict(request)
    if shown.get("taken_by"):
        shown["taken_by"] = views.staff_holder(shown["taken_by"], online)
    return ServiceRequest.model_validate(shown)


@router.route("POST", "/h5/service-requests", auth=("h5",), body=ServiceRequestIn,
              responses={201: ServiceRequestReply}, errors=(429,))
async def request_service(call: Call) -> Reply:
    """Call a waiter, ask for water or for the bill: pushed at once to the store's terminals."""
    principal = call.principal
    request = await ServiceDesk(call.services.engine).request(
        principal.store_id, principal.table_id, call.body.kind, principal.holder(),
    )
    return Reply(201, ServiceRequestReply(request=DinerServiceRequest.model_validate(request)))


async def _list(call: Call) -> Reply:
    store_id = call.path["store_id"]
    requests = await ServiceDesk(call.services.engine).recent(store_id)
    online = await call.services.liveness.online(store_id)
    return Reply(200, ServiceRequestList(requests=[_staff(r, online) for r in requests]))


@router.route("GET", "/stores/{store_id}/service-requests", auth=("erp",), responses={200: ServiceRequestList})
async def list_requests(call: Call) -> Reply:
    """The store's recent service requests, newest first (the waiter's inbox)."""
    return await _list(call)


@router.route("GET", "/admin/stores/{store_id}/service-requests", auth=("admin",),
              responses={200: ServiceRequestList})
async def admin_list_requests(call: Call) -> Reply:
    """The store's recent service requests, newest first (the admin board)."""
    return await _list(call)


@router.route("POST", "/stores/{store_id}/service-requests/{request_id}/take", auth=("erp",),
              responses={200: ServiceTaken}, errors=(404, 409))
async def take_request(call: Call) -> Reply:
    """Take a service request: the first waiter wins; the others get 409 ALREADY_TAKEN with who took it."""
    store_id = call.path["store_id"]
    request = await ServiceDesk(call.services.engine).take(store_id, call.path["request_id"], call.principal.holder())
    online = await call.services.liveness.online(store_id)
    return Reply(200, ServiceTaken(request=_staff(request, online)))
