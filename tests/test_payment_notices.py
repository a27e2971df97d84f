"""What a waiter page is told about provider payments (erp_simulator/payment_notices.py), from literal events."""

from __future__ import annotations

from erp_simulator.payment_notices import payment_notice


def _event(name: str, data: dict) -> dict:
    return {"type": "event", "seq": 9, "name": name, "store_id": "s1", "table_id": "T1", "order_id": "o1", "data": data}


def test_surplus_becomes_an_alert_with_amount_and_refund_state() -> None:
    """payment.surplus → a ``surplus`` notice naming the table, the provider, the amount and the refund state."""
    notice = payment_notice(_event("payment.surplus", {
        "out_trade_no": "TL1", "provider": "wechatpay", "amount_cents": 10400, "refund_state": "pending",
        "reason": "order_closed", "transaction_id": "42", "refund_no": "RTL1"}))
    assert notice is not None and notice["kind"] == "surplus" and notice["out_trade_no"] == "TL1"
    assert notice["message"] == "多收款项:T1 顾客微信支付付款 ¥104.00 未结任何订单 · 待退款"
    assert notice["message_en"].endswith("· refund pending") and notice["amount_cents"] == 10400


def test_refund_update_moves_the_alert_on() -> None:
    """payment.refund_updated → a ``refund`` notice with the new state in both languages."""
    notice = payment_notice(_event("payment.refund_updated", {"out_trade_no": "TL1", "refund_state": "succeeded"}))
    assert notice == {"kind": "refund", "order_id": "o1", "table_id": "T1", "out_trade_no": "TL1",
                      "refund_state": "succeeded", "refund_zh": "已退款", "refund_en": "refunded"}


def test_addon_refusal_carries_the_coordinators_toast() -> None:
    """order.addon_refused → an ``addon_refused`` notice with the coordinator's wording, shown as a toast."""
    toast = "订单正在其他机器/顾客端进行支付,暂不能接单,如需接单请先取消支付"
    notice = payment_notice(_event("order.addon_refused", {"code": "PAYMENT_LOCKED", "message": toast,
                                                           "message_en": "paying", "items": []}))
    assert notice is not None and notice["kind"] == "addon_refused" and notice["message"] == toast


def test_other_messages_tell_nothing() -> None:
    """Lock events, hello and snapshots are not payment notices."""
    assert payment_notice(_event("lock.acquired", {"lock": {}})) is None
    assert payment_notice({"type": "hello", "seq": 1}) is None
    assert payment_notice({"type": "snapshot", "seq": 1, "locks": []}) is None
