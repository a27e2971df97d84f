"""What a waiter page is told about provider payments (SPEC §9), from the coordinator's events. Pure.

``payment_notice(message)`` turns one websocket message into a notice for the page, or None:

- ``payment.surplus`` → ``surplus``: money that paid no order (a late notification after a
  force, a second payment…), with its amount and refund state — the page keeps it as a banner;
- ``payment.refund_updated`` → ``refund``: the same banner's refund state moves on;
- ``order.addon_refused`` → ``addon_refused``: the seed's toast ("…暂不能接单,如需接单请先取消支付"),
  now sent by the coordinator itself when it refuses a diner's add-on during a payment.
"""

from __future__ import annotations

from typing import Any

PROVIDER_NAMES = {"wechatpay": ("微信支付", "WeChat Pay"), "alipay": ("支付宝", "Alipay")}
REFUND_STATES = {
    "manual": ("待人工退款", "to refund by hand"),
    "pending": ("待退款", "refund pending"),
    "processing": ("退款中", "refunding"),
    "succeeded": ("已退款", "refunded"),
    "failed": ("退款失败", "refund failed"),
}


def _money(cents: Any) -> str:
    return f"¥{int(cents or 0) / 100:.2f}"


def _refund(state: str | None) -> tuple[str, str]:
    return REFUND_STATES.get(state or "", (state or "-", state or "-"))


def payment_notice(message: dict[str, Any]) -> dict[str, Any] | None:
    """The page notice one coordinator message calls for (None: nothing to tell)."""
    if message.get("type") != "event":
        return None
    name, data = message.get("name"), message.get("data") or {}
    where = {"order_id": message.get("order_id") or "", "table_id": message.get("table_id") or ""}
    if name == "payment.surplus":
        zh, en = PROVIDER_NAMES.get(str(data.get("provider")), (str(data.get("provider")),) * 2)
        refund_zh, refund_en = _refund(data.get("refund_state"))
        table = where["table_id"] or "-"
        return {"kind": "surplus", **where, "out_trade_no": data.get("out_trade_no"),
                "amount_cents": data.get("amount_cents"), "refund_state": data.get("refund_state"),
                "reason": data.get("reason"),
                "message": f"多收款项:{table} 顾客{zh}付款 {_money(data.get('amount_cents'))} 未结任何订单 · {refund_zh}",
                "message_en": f"Surplus payment: {en} {_money(data.get('amount_cents'))} on {table} paid no order"
                              f" · {refund_en}"}
    if name == "payment.refund_updated":
        refund_zh, refund_en = _refund(data.get("refund_state"))
        return {"kind": "refund", **where, "out_trade_no": data.get("out_trade_no"),
                "refund_state": data.get("refund_state"), "refund_zh": refund_zh, "refund_en": refund_en}
    if name == "order.addon_refused":
        return {"kind": "addon_refused", **where, "code": data.get("code"),
                "message": data.get("message") or "", "message_en": data.get("message_en") or ""}
    return None
