"""What a master ERP's RPC answers mean (SPEC §7): the shape each result must have, and the
coordinator error each refusal becomes.

A result that does not validate, an error without a code, or a code the coordinator has no
error for, are all ``503 ERP_UNREACHABLE`` (with the reason, and the ERP's own code and message,
in ``details``): whatever the ERP sends, the diner never gets a 500. Every error built here sets
``erp_code`` (a declared field of ``TablelockError``), the code to record in ``payment.rejected``
when it ends a payment.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from coordinator.core.errors import (
    AmountMismatch,
    ErpUnreachable,
    LockConflict,
    LockLost,
    NotFound,
    OrderClosed,
    StaleVersion,
    TablelockError,
    ValidationFailed,
)
from coordinator.core.models import Menu, OrderIn
from coordinator.core.rules import Action, Role


class ErpOrder(OrderIn):
    """An Order as the ERP answers it: ``updated_at`` optional, vendor fields ignored."""

    model_config = ConfigDict(extra="ignore")
    updated_at: int | None = None

    def order_in(self) -> OrderIn:
        """The order as the coordinator stores it (``updated_at`` is the coordinator's)."""
        return OrderIn.model_validate(self.model_dump(exclude={"updated_at"}))


class ErpMerge(BaseModel):
    """The ERP's answer to ``order.merge`` (SPEC §11): the kept order and the closed sources."""

    into: ErpOrder
    sources: list[ErpOrder]


#: What each method's ``result`` must be; anything else is an unreachable ERP, never a 500.
RESULTS: dict[str, type[BaseModel]] = {
    "order.fetch": ErpOrder,
    "order.add_items": ErpOrder,
    "order.pay": ErpOrder,
    "menu.list": Menu,
    # SPEC §11 table operations (coordinator/tableops/service.py)
    "order.move": ErpOrder,
    "order.merge": ErpMerge,
    "order.cancel": ErpOrder,
    "order.reopen": ErpOrder,
}

#: The lock action behind a method, so a lock refusal carries the H5 text for that action.
_ACTIONS = {"order.add_items": Action.ADD_ITEMS, "order.pay": Action.PAY}
_LOCK_CODES = frozenset({"ORDER_LOCKED", "PAYMENT_LOCKED", "PRESETTLED"})
#: ERP refusal codes that have a coordinator error of their own (STALE_FENCE: the ERP has seen a
#: newer grant, so this payment lock was taken over — to the diner that is LOCK_LOST).
_ERP_CODES: dict[str, type[TablelockError]] = {
    "STALE_VERSION": StaleVersion, "LOCK_LOST": LockLost, "STALE_FENCE": LockLost,
    "AMOUNT_MISMATCH": AmountMismatch, "ORDER_CLOSED": OrderClosed, "NOT_FOUND": NotFound,
    "VALIDATION_ERROR": ValidationFailed,
}


def unreachable(reason: str, method: str, **extra: Any) -> ErpUnreachable:
    """ERP_UNREACHABLE with why in ``details``: no_rpc, no_master, not_delivered, timeout, disconnected, bad_reply, erp_error."""
    return ErpUnreachable(details=[{"reason": reason, "method": method, **extra}],
                          erp_code=extra.get("erp_code") or "ERP_UNREACHABLE")


def erp_error(method: str, error: Any) -> TablelockError:
    """The coordinator error for an ERP's ``rpc_error`` answer to ``method``."""
    if not isinstance(error, dict) or not isinstance(error.get("code"), str):
        return unreachable("bad_reply", method)
    code, message = error["code"][:64], str(error.get("message") or "")[:200]
    details = [{"erp_code": code, "erp_message": message}]
    order = error.get("order")
    try:
        order = ErpOrder.model_validate(order).model_dump(mode="json") if order is not None else None
    except ValidationError:
        order = None
    if code in _LOCK_CODES:
        return LockConflict(code, Role.H5, _ACTIONS.get(method), details=details, erp_code=code)
    if code in _ERP_CODES:
        return _ERP_CODES[code](details=details, order=order, erp_code=code)
    return unreachable("erp_error", method, erp_code=code, erp_message=message)
