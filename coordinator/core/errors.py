"""Every error the coordinator returns, with its SPEC code, HTTP status and messages.

    TablelockError                                 (abstract: no wire code, never raised as-is)
    ├── ValidationFailed      400 VALIDATION_ERROR   (details)
    ├── Unauthenticated       401 UNAUTHENTICATED
    ├── Forbidden             403 FORBIDDEN
    ├── NotFound              404 NOT_FOUND          (an unknown record, or an unknown path)
    ├── MethodNotAllowed      405 METHOD_NOT_ALLOWED (allowed: sent as the Allow header)
    ├── Conflict              409                    (abstract)
    │   ├── LockConflict          ORDER_LOCKED | PAYMENT_LOCKED | PRESETTLED (force_allowed, lock)
    │   ├── StaleVersion          STALE_VERSION   (order)
    │   ├── LockLost              LOCK_LOST
    │   ├── AmountMismatch        AMOUNT_MISMATCH (order)
    │   ├── OrderClosed           ORDER_CLOSED    (order)
    │   ├── PaidMeanwhile         PAYMENT_LOCKED  (a force refused: the diner's payment went through)
    │   ├── PaymentUnverified     PAYMENT_UNVERIFIED (force_allowed: the provider cannot be asked)
    │   ├── PaymentRefReused      PAYMENT_REF_REUSED
    │   ├── ShareTaken            SHARE_TAKEN     (a line or part already claimed or paid; split bill)
    │   ├── ShareExceeds          SHARE_EXCEEDS   (a share above what remains due)
    │   └── (SharePaid            SHARE_PAID: below, with the table operations' block)
    ├── PayloadTooLarge       413 PAYLOAD_TOO_LARGE
    ├── RateLimited           429 RATE_LIMITED       (retry_after: sent as Retry-After)
    ├── InternalError         500 INTERNAL           (a coordinator bug; the body names nothing of it)
    ├── ErpUnreachable        503 ERP_UNREACHABLE
    ├── PaymentUnavailable    503 PAYMENT_UNAVAILABLE (no provider configured, or it cannot be reached)
    └── Unavailable           503 UNAVAILABLE        (Redis unreachable)

Every error may carry ``erp_code``: when it stands for the ERP's refusal of an RPC
(``realtime/erp_answers.py``), the ERP's own code, which ``payment.rejected`` records.
``api/middleware.py`` is the one place that turns these into the SPEC error body and headers;
no handler builds error JSON by hand.
"""

from __future__ import annotations

from typing import Any

from coordinator.core.rules import Action, Code, Role

#: (zh-CN, English) per code; the lock codes have audience-specific texts in ``lock_message``.
MESSAGES: dict[str, tuple[str, str]] = {
    "VALIDATION_ERROR": ("请求参数有误", "The request is invalid"),
    "UNAUTHENTICATED": ("未登录或凭证无效", "Missing or invalid credentials"),
    "FORBIDDEN": ("无权执行此操作", "Not allowed"),
    "NOT_FOUND": ("未找到", "Not found"),
    "ORDER_LOCKED": ("订单正在其他机器修改,暂不能支付", "The order is being edited on another terminal; it cannot be paid now"),
    "PAYMENT_LOCKED": ("订单正在其他机器/顾客端进行支付,请稍后再试", "The order is being paid on another terminal or by a diner; please try again later"),
    "PRESETTLED": ("订单已预结,如需修改请联系服务员", "The bill has been pre-settled; ask a waiter to change it"),
    "STALE_VERSION": ("订单已更新,请确认最新金额后再支付", "The order has changed; check the latest total before paying"),
    "LOCK_LOST": ("支付已超时或已被其他终端接管,请重新获取订单后再支付", "The payment timed out or was taken over by another terminal; fetch the order again before paying"),
    "AMOUNT_MISMATCH": ("支付金额与订单金额不符", "The amount does not match the order total"),
    "ORDER_CLOSED": ("订单已结束(已支付或已取消)", "The order is closed (paid or cancelled)"),
    "PAYLOAD_TOO_LARGE": ("请求内容过大", "The request body is too large"),
    "RATE_LIMITED": ("请求过于频繁,请稍后再试", "Too many requests; try again shortly"),
    "ERP_UNREACHABLE": ("获取订单失败,请到前台结账", "Could not fetch the order; please pay at the front desk"),
    "UNAVAILABLE": ("服务暂不可用,请稍后再试", "The service is temporarily unavailable"),
    "PAID_MEANWHILE": ("顾客刚刚已完成支付,无需重复结账", "The diner has just paid this order; do not charge it again"),
    "PAYMENT_UNVERIFIED": ("顾客正在线上支付,但暂时无法向支付平台确认支付结果。强制继续可能导致重复收款(多收款项将自动退款),是否确定继续?",
                           "A diner is paying online and the payment provider cannot be reached to verify it. Forcing may charge the order twice (any surplus is refunded automatically). Continue anyway?"),
    "PAYMENT_REF_REUSED": ("该支付流水号已用于其他订单", "This payment reference was already used for another order"),
    "PAYMENT_UNAVAILABLE": ("在线支付暂不可用,请到前台结账", "Online payment is unavailable; please pay at the front desk"),
    "METHOD_NOT_ALLOWED": ("不支持此请求方法", "Method not allowed"),
    "INTERNAL": ("服务内部错误", "Internal error"),
    "SHARE_TAKEN": ("该菜品或份额已被同桌其他人选择或支付", "That dish or part is already being paid or was paid by someone else at the table"),
    "SHARE_EXCEEDS": ("所选金额超过订单未付金额", "The share is more than what remains due on the order"),
}

#: ERP force-confirm dialog texts (SPEC §5 messages table).
_FORCE_CONFIRM: dict[str, tuple[str, str]] = {
    "ORDER_LOCKED": ("此订单正在其他机器修改,是否强制解锁并继续?", "This order is being edited on another terminal. Force unlock and continue?"),
    "PAYMENT_LOCKED": ("此订单正在其他机器/顾客端进行结账,现在结账可能导致重复支付,是否确定继续结账?", "This order is being paid on another terminal or by a diner. Paying now may charge it twice. Continue anyway?"),
    # Not in SPEC §5's table (issue 17): modify / presettle under a presettle lock is forceable for a
    # terminal, so its dialog asks, as the other force texts do.
    "PRESETTLED": ("订单已预结,是否强制解除预结并继续?", "The bill has been pre-settled. Force-release the pre-settlement and continue?"),
}
_ACCEPT_ITEMS_PAYMENT = ("订单正在其他机器/顾客端进行支付,暂不能接单,如需接单请先取消支付", "The order is being paid on another terminal or by a diner; cancel that payment before accepting dishes")


def lock_message(code: Code | str, role: Role, action: Action | None, force_allowed: bool) -> tuple[str, str]:
    """Pick the SPEC text for a lock denial, by who is asking and what they asked for."""
    code = str(code)
    if role is Role.ERP and code == "PAYMENT_LOCKED" and action is Action.ACCEPT_ITEMS:
        return _ACCEPT_ITEMS_PAYMENT
    if role is Role.ERP and force_allowed and code in _FORCE_CONFIRM:
        return _FORCE_CONFIRM[code]
    return MESSAGES[code]


class TablelockError(Exception):
    """Base of every error with a SPEC code; carries what the error body needs.

    It has no wire code of its own: only the leaves of the tree above are raised.
    """

    status: int
    code: str

    def __init__(
        self,
        message: str | None = None,
        message_en: str | None = None,
        *,
        force_allowed: bool = False,
        lock: dict[str, Any] | None = None,
        order: dict[str, Any] | None = None,
        details: list[Any] | None = None,
        erp_code: str | None = None,
    ) -> None:
        if not getattr(self, "code", None) or not getattr(self, "status", None):
            raise TypeError(f"{type(self).__name__} has no wire code: raise one of its subclasses")
        zh, en = MESSAGES[self.code]
        self.message = message or zh
        self.message_en = message_en or en
        self.force_allowed = force_allowed
        self.lock = lock
        self.order = order
        self.details = details
        #: The ERP's own refusal code when this error stands for one (else None).
        self.erp_code = erp_code
        super().__init__(f"{self.code}: {self.message_en}")

    def body(self) -> dict[str, Any]:
        """The SPEC ``Error`` body."""
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "message_en": self.message_en,
                "force_allowed": self.force_allowed,
                "lock": self.lock,
                "order": self.order,
                "details": self.details,
            }
        }

    def headers(self) -> dict[str, str]:
        """The HTTP headers the response needs besides the body (Retry-After, Allow)."""
        return {}


class ValidationFailed(TablelockError):
    """The request body, query or path did not validate; ``details`` says where."""

    status, code = 400, "VALIDATION_ERROR"


class Unauthenticated(TablelockError):
    """No token, or a token that is unknown, expired or revoked."""

    status, code = 401, "UNAUTHENTICATED"


class Forbidden(TablelockError):
    """A valid token asking outside its scope (other store, other table, H5 forcing…)."""

    status, code = 403, "FORBIDDEN"


class NotFound(TablelockError):
    """The store, order, table or terminal does not exist (or the route does not)."""

    status, code = 404, "NOT_FOUND"


class MethodNotAllowed(TablelockError):
    """The path exists but not with this method."""

    status, code = 405, "METHOD_NOT_ALLOWED"

    def __init__(self, allowed: set[str] | frozenset[str], **kw: Any) -> None:
        self.allowed = sorted(allowed)
        super().__init__(details=[{"msg": f"method not allowed; allowed: {self.allowed}"}], **kw)

    def headers(self) -> dict[str, str]:
        """Allow: the methods the path takes."""
        return {"Allow": ", ".join(self.allowed)}


class Conflict(TablelockError):
    """Base of the 409s: the request is valid but the order's state refuses it (no code of its own)."""

    status = 409


class LockConflict(Conflict):
    """A lock rule denied the request (ORDER_LOCKED, PAYMENT_LOCKED or PRESETTLED)."""

    def __init__(self, code: str, role: Role, action: Action | None, **kw: Any) -> None:
        self.code = code
        message, message_en = lock_message(code, role, action, kw.get("force_allowed", False))
        super().__init__(message, message_en, **kw)


class StaleVersion(Conflict):
    """The coordinator knows a newer order version than the one given."""

    code = "STALE_VERSION"


#: LOCK_LOST per lock kind (issue 17): renewing a lost order or presettle lock is not a payment.
#: The payment text is SPEC §5's and the default (a completion names no kind).
LOCK_LOST_BY_KIND: dict[str, tuple[str, str]] = {
    "order": ("编辑已超时或已被其他终端接管,请重新获取订单后再修改",
              "The edit lock timed out or was taken over by another terminal; fetch the order again before editing"),
    "presettle": ("预结已超时或已被其他终端接管,请重新获取订单后再预结",
                  "The pre-settlement lock timed out or was taken over by another terminal; fetch the order again before pre-settling"),
    "payment": MESSAGES["LOCK_LOST"],
}


class LockLost(Conflict):
    """The token does not belong to a live lock any more (expired, forced, released); text per ``kind``."""

    code = "LOCK_LOST"

    def __init__(self, *, kind: str | None = None, **kw: Any) -> None:
        message, message_en = LOCK_LOST_BY_KIND.get(kind or "payment", MESSAGES["LOCK_LOST"])
        super().__init__(message, message_en, **kw)


class AmountMismatch(Conflict):
    """A payment's amount differs from the order total."""

    code = "AMOUNT_MISMATCH"


class OrderClosed(Conflict):
    """The order is paid or cancelled."""

    code = "ORDER_CLOSED"


class PaidMeanwhile(Conflict):
    """A force during an in-flight H5 payment the provider says is paid: it completes instead."""

    code = "PAYMENT_LOCKED"

    def __init__(self, **kw: Any) -> None:
        zh, en = MESSAGES["PAID_MEANWHILE"]
        super().__init__(zh, en, force_allowed=False, **kw)


class PaymentUnverified(Conflict):
    """A force during an in-flight H5 payment while the provider cannot be asked (repeat with force_unverified)."""

    code = "PAYMENT_UNVERIFIED"

    def __init__(self, **kw: Any) -> None:
        super().__init__(force_allowed=True, **kw)


class PaymentRefReused(Conflict):
    """A payment reference or provider transaction already paid another order of the store."""

    code = "PAYMENT_REF_REUSED"


class PaymentUnavailable(TablelockError):
    """The store has no payment provider set up, or the provider cannot be reached."""

    status, code = 503, "PAYMENT_UNAVAILABLE"


class PayloadTooLarge(TablelockError):
    """The request body exceeds ``max_body_bytes``."""

    status, code = 413, "PAYLOAD_TOO_LARGE"


class RateLimited(TablelockError):
    """Too many requests from one client address or session."""

    status, code = 429, "RATE_LIMITED"

    def __init__(self, retry_after: int, **kw: Any) -> None:
        self.retry_after = retry_after
        super().__init__(**kw)

    def headers(self) -> dict[str, str]:
        """Retry-After: the seconds until the window frees a request."""
        return {"Retry-After": str(self.retry_after)}


class InternalError(TablelockError):
    """A bug in the coordinator: logged with its traceback, answered without any detail of it."""

    status, code = 500, "INTERNAL"


class ErpUnreachable(TablelockError):
    """The store's ERP master is not connected or did not answer in time."""

    status, code = 503, "ERP_UNREACHABLE"


class Unavailable(TablelockError):
    """Redis cannot be reached."""

    status, code = 503, "UNAVAILABLE"


#: Script reply codes (lua/*.lua return ``{code, ...}``) → error class.
BY_CODE: dict[str, type[TablelockError]] = {
    cls.code: cls
    for cls in (
        ValidationFailed, Unauthenticated, Forbidden, NotFound, StaleVersion, LockLost,
        AmountMismatch, OrderClosed, PayloadTooLarge, ErpUnreachable, Unavailable,
        PaymentUnverified, PaymentRefReused, PaymentUnavailable,
    )
}


# --- table operations and service requests (SPEC §11) -----------------------------------------
# Appended as a block (Conflict subclasses; the tree above gains them):
#     Conflict 409 ── PaymentInFlight  PAYMENT_IN_FLIGHT (force_allowed for ERP: forcing opens a refund task)
#                  ├─ SharePaid        SHARE_PAID        (force_allowed for ERP: forcing opens a refund task)
#                  ├─ AlreadyTaken     ALREADY_TAKEN     (details: who took the service request, when)
#                  └─ OrderOpen        ORDER_OPEN        (order: reopening an order that is open)

MESSAGES.update({
    "PAYMENT_IN_FLIGHT": ("顾客正在线上支付,暂不能换桌/并桌;强制继续将为这笔支付生成退款任务",
                          "A diner's online payment is in progress; forcing the table change opens a refund task for it"),
    "SHARE_PAID": ("此订单已有分单支付:不能减少已付金额、修改已付菜品或换桌/并桌;强制继续将为已付款项生成退款任务",
                   "Part of this bill is already paid: lowering it below what is paid, changing a paid dish or "
                   "moving/merging it needs force, which opens a refund task for the paid shares"),
    "ALREADY_TAKEN": ("该呼叫已有服务员接单", "Another waiter has already taken this request"),
    "ORDER_OPEN": ("订单未结账,无需反结账", "The order is open; there is nothing to reopen"),
})


class PaymentInFlight(Conflict):
    """A move or merge while a diner's online payment is in flight (phase in_flight or completing)."""

    code = "PAYMENT_IN_FLIGHT"


class SharePaid(Conflict):
    """A change, move or merge of an order of which a share is already paid (split bill, SPEC §10)."""

    code = "SHARE_PAID"


class ShareTaken(Conflict):
    """A split-bill share names a line or part already claimed or paid (SPEC §10)."""

    code = "SHARE_TAKEN"


class ShareExceeds(Conflict):
    """A split-bill share is above what remains due (SPEC §10, invariant 10)."""

    code = "SHARE_EXCEEDS"


class AlreadyTaken(Conflict):
    """A waiter taking a service request another waiter took first; ``details`` names who and when."""

    code = "ALREADY_TAKEN"


class OrderOpen(Conflict):
    """Reopening (反结账) an order that is still open."""

    code = "ORDER_OPEN"


BY_CODE.update({cls.code: cls for cls in (PaymentInFlight, SharePaid, AlreadyTaken, OrderOpen)})
BY_CODE.update({cls.code: cls for cls in (ShareTaken, ShareExceeds)})
