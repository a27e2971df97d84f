"""Table operations, stuck locks and service requests (SPEC §11): request and reply bodies.

Imported from this module directly (``coordinator.core.models.tableops``): the package's
``__init__`` is shared by every branch and these models are used only by the §11 endpoints.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from coordinator.core.models.base import NOT_BLANK, Body, Id, Millis
from coordinator.core.models.locks import LockView
from coordinator.core.models.orders import Order

#: The admin's reason for ending a lock: shown on the board and kept in the audit log.
Reason = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NOT_BLANK)]
ServiceKind = Literal["call_waiter", "water", "bill"]


class AdminRelease(Body):
    """POST /admin/stores/{s}/orders/{o}/locks/{kind}/release and .../tables/{t}/release."""

    reason: Reason
    #: Only the lock with this fence (one diner's split-bill share among several payment locks of the
    #: order, SPEC §10); None: every lock of the kind. Orders route only.
    fence: int | None = None


class AdminReleased(BaseModel):
    """What an admin release ended, and the locks it kept (completing: money being confirmed)."""

    released: list[LockView]
    kept: list[LockView]


class ServiceRequestIn(Body):
    """POST /h5/service-requests."""

    kind: ServiceKind


class ServiceRequest(BaseModel):
    """A service request as staff see it (``taken_by`` once a waiter took it)."""

    id: str
    kind: ServiceKind
    table_id: str
    requested_at: Millis
    state: Literal["open", "taken"]
    taken_at: Millis | None = None
    taken_by: dict[str, Any] | None = None


class DinerServiceRequest(BaseModel):
    """A service request as the diner sees it: no staff ids."""

    id: str
    kind: ServiceKind
    table_id: str
    requested_at: Millis
    state: Literal["open", "taken"]


class ServiceRequestReply(BaseModel):
    """201 of POST /h5/service-requests."""

    request: DinerServiceRequest


class ServiceTaken(BaseModel):
    """200 of POST /stores/{s}/service-requests/{id}/take."""

    request: ServiceRequest


class ServiceRequestList(BaseModel):
    """The store's service requests of the last hours, newest first."""

    requests: list[ServiceRequest]


class MoveRequest(Body):
    """POST /stores/{s}/orders/{o}/move: take the party to another table (换桌)."""

    to_table_id: Id
    force: bool = False
    #: After 409 PAYMENT_UNVERIFIED: force although the provider could not be asked (docs/protocol.md A5).
    force_unverified: bool = False


class MergeRequest(Body):
    """POST /stores/{s}/orders/{o}/merge: fold other orders into this one (并桌)."""

    from_order_ids: Annotated[list[Id], Field(min_length=1, max_length=20)]
    force: bool = False
    force_unverified: bool = False


class ForceBody(Body):
    """POST /stores/{s}/orders/{o}/cancel: ``force`` after the user confirmed (the body may be absent)."""

    force: bool = False
    force_unverified: bool = False


class TableOpReply(BaseModel):
    """The order after a move, merge, reopen or cancel, with the locks it now has."""

    order: Order
    locks: list[LockView]
    refund_tasks: list[dict[str, Any]] = []
