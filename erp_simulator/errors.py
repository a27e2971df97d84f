"""Every error the stand-in ERP raises, each with the wire code it answers an RPC with.

    ErpError
    ├── NotFound             NOT_FOUND        the ERP has no such order, table or dish
    ├── OrderClosed          ORDER_CLOSED     the order is paid or cancelled
    ├── FenceRejected        STALE_FENCE      a write carries a fence lower than the highest seen
    ├── AcceptRefused        PAYMENT_LOCKED | PRESETTLED   auto-accept refused (SPEC toast)
    ├── VersionMismatch      STALE_VERSION    a payment names another version than the ERP's
    └── AmountMismatch       AMOUNT_MISMATCH  a payment's amount differs from the total

``code`` and ``message`` (zh-CN) are what a master terminal puts in ``rpc_error``.
"""

from __future__ import annotations

from typing import Any

#: SPEC §5: what the ERP shows when it cannot auto-accept dishes while a payment is under way.
ACCEPT_PAYMENT_LOCKED = "订单正在其他机器/顾客端进行支付,暂不能接单,如需接单请先取消支付"
ACCEPT_PAYMENT_LOCKED_EN = (
    "The order is being paid on another terminal or by a diner; cancel that payment before accepting dishes"
)
PRESETTLED = "订单已预结,如需修改请联系服务员"
PRESETTLED_EN = "The bill has been pre-settled; ask a waiter to change it"


class ErpError(Exception):
    """Base of the ERP's refusals: a wire ``code`` and a zh-CN ``message``."""

    code = "ERP_ERROR"
    message = "ERP 拒绝了此操作"
    message_en = "The ERP refused this operation"

    def __init__(self, detail: str = "", *, order: dict[str, Any] | None = None) -> None:
        self.detail = detail
        self.order = order
        super().__init__(f"{self.code}: {detail or self.message_en}")

    def wire(self) -> dict[str, Any]:
        """The ``error`` object of an ``rpc_error`` reply (with the ERP's order when it helps the caller)."""
        error: dict[str, Any] = {"code": self.code, "message": self.message, "message_en": self.message_en}
        if self.order is not None:
            error["order"] = self.order
        return error


class NotFound(ErpError):
    """The ERP has no such order, table or dish."""

    code, message, message_en = "NOT_FOUND", "未找到", "Not found"


class OrderClosed(ErpError):
    """The order is already paid or cancelled."""

    code, message, message_en = "ORDER_CLOSED", "订单已结束(已支付或已取消)", "The order is closed"


class FenceRejected(ErpError):
    """A write carried a fence lower than the highest the ERP has seen for the order."""

    code = "STALE_FENCE"
    message = "锁已失效(已被其他终端接管),此操作被拒绝"
    message_en = "The lock is stale (taken over by another client); the write was refused"

    def __init__(self, order_id: str, fence: int, highest: int) -> None:
        self.order_id, self.fence, self.highest = order_id, fence, highest
        super().__init__(f"order {order_id}: fence {fence} < highest seen {highest}")


class AcceptRefused(ErpError):
    """Auto-accept of dishes refused because the coordinator reports a payment or presettle lock."""

    def __init__(self, code: str) -> None:
        self.code = code
        if code == "PRESETTLED":
            self.message, self.message_en = PRESETTLED, PRESETTLED_EN
        else:
            self.message, self.message_en = ACCEPT_PAYMENT_LOCKED, ACCEPT_PAYMENT_LOCKED_EN
        super().__init__(self.message_en)


class VersionMismatch(ErpError):
    """A payment names a version other than the ERP's current one."""

    code, message, message_en = (
        "STALE_VERSION", "订单已更新,请确认最新金额后再支付", "The order has changed; check the latest total",
    )


class AmountMismatch(ErpError):
    """A payment's amount differs from the order total."""

    code, message, message_en = "AMOUNT_MISMATCH", "支付金额与订单金额不符", "The amount does not match the total"
