"""The sandbox's Alipay gateway: wap pay, query, close, refund, refund query and notifications."""

from __future__ import annotations

import json
import re
import secrets
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from . import crypto
from .core import SANDBOX, Delivery, Sandbox, now_ms
from .keys import SandboxKeys
from .state import RefundRecord, Trade

CST = timezone(timedelta(hours=8))
_YUAN = re.compile(r"^(0|[1-9][0-9]{0,9})(\.[0-9]{1,2})?$")
routes = web.RouteTableDef()


def yuan(fen: int) -> str:
    """Fen as a two-decimal yuan string."""
    return f"{Decimal(fen) / 100:.2f}"


def fen(text: str) -> int:
    """A yuan string as fen; ``ValueError`` for anything else."""
    if not _YUAN.match(text):
        raise ValueError(text)
    return int(Decimal(text) * 100)


def beijing(ms: int | None) -> str:
    """Unix ms as ``yyyy-MM-dd HH:mm:ss`` Beijing time ('' for None)."""
    return "" if ms is None else datetime.fromtimestamp(ms / 1000, tz=CST).strftime("%Y-%m-%d %H:%M:%S")


def content(params: dict[str, str], exclude: tuple[str, ...]) -> bytes:
    """The sorted ``k=v&...`` string Alipay signs."""
    return "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k not in exclude and v != "").encode()


class AlipayWire:
    """Alipay's signing and notification formats, with the Alipay key."""

    def __init__(self, keys: SandboxKeys) -> None:
        self.keys = keys
        self.alipay_key = crypto.load_private(keys.alipay_private_pem)
        self.app_public = keys.app_public()

    def answer(self, method: str, payload: dict[str, Any], *, signed: bool = True) -> web.Response:
        """``{"<method>_response": {...}, "sign": ...}`` signed over the exact object text."""
        inner = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        key = method.replace(".", "_") + "_response"
        text = f'{{"{key}":{inner}'
        if signed:
            text += ',"sign":' + json.dumps(crypto.sign(self.alipay_key, inner.encode()))
        return web.Response(text=text + "}", content_type="application/json", charset="utf-8")

    def check(self, params: dict[str, str]) -> str | None:
        """Return the sub_code of a request that fails Alipay's checks, or None."""
        if params.get("app_id") != self.keys.alipay_app_id:
            return "isv.invalid-app-id"
        if params.get("sign_type") != "RSA2" or not crypto.verify(
            self.app_public, content(params, ("sign",)), params.get("sign", "")
        ):
            return "isv.invalid-signature"
        return None

    def trade_status(self, t: Trade) -> str:
        """The provider's word for a trade's state."""
        if t.state == "paid":
            return "TRADE_CLOSED" if t.refunded_cents() >= t.amount_cents else "TRADE_SUCCESS"
        return "TRADE_CLOSED" if t.state == "closed" else "WAIT_BUYER_PAY"

    def _signed_form(self, params: dict[str, str]) -> dict[str, str]:
        # Notifications and returns are signed with sign and sign_type left out, as Alipay verifies them.
        params = {**params, "sign_type": "RSA2", "charset": "utf-8", "app_id": self.keys.alipay_app_id}
        params["sign"] = crypto.sign(self.alipay_key, content(params, ("sign", "sign_type")))
        return params

    def payment_notification(self, t: Trade) -> Delivery | None:
        """A ``trade_status_sync`` form for a paid or closed trade."""
        if t.state not in ("paid", "closed") or t.transaction_id is None:
            return None
        amount = yuan(t.amount_cents)
        form = self._signed_form({
            "notify_time": beijing(now_ms()), "notify_type": "trade_status_sync",
            "notify_id": secrets.token_hex(16), "version": "1.0", "trade_no": t.transaction_id,
            "out_trade_no": t.out_trade_no, "buyer_id": "2088" + t.transaction_id[-12:],
            "buyer_logon_id": "159****5620", "seller_id": self.keys.alipay_seller_id,
            "trade_status": self.trade_status(t), "total_amount": amount,
            "receipt_amount": amount if t.state == "paid" else "", "buyer_pay_amount": amount if t.state == "paid" else "",
            "subject": t.description, "gmt_create": beijing(t.created_ms), "gmt_payment": beijing(t.paid_at_ms),
            "gmt_close": beijing(t.closed_ms),
            "fund_bill_list": json.dumps([{"amount": amount, "fundChannel": "ALIPAYACCOUNT"}]) if t.state == "paid" else "",
        })
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
        return Delivery(t.notify_url, headers, urlencode(form).encode(),
                        lambda status, body: status == 200 and body.strip() == b"success")

    def refund_notification(self, trade: Trade, refund: RefundRecord) -> Delivery | None:
        """Alipay refunds answer synchronously; the sandbox sends no refund notification."""
        return None

    def return_url(self, t: Trade) -> str:
        """The merchant's return_url with Alipay's signed return parameters."""
        if t.state != "paid" or t.transaction_id is None:
            return t.return_url
        params = self._signed_form({
            "method": "alipay.trade.wap.pay.return", "version": "1.0", "timestamp": beijing(now_ms()),
            "out_trade_no": t.out_trade_no, "trade_no": t.transaction_id, "total_amount": yuan(t.amount_cents),
            "seller_id": self.keys.alipay_seller_id, "auth_app_id": self.keys.alipay_app_id,
        })
        return t.return_url + ("&" if "?" in t.return_url else "?") + urlencode(params)


def _wire(sb: Sandbox) -> AlipayWire:
    wire = sb.wires["alipay"]
    assert isinstance(wire, AlipayWire)
    return wire


@routes.get("/gateway.do")
async def wap_pay(request: web.Request) -> web.Response:
    """The phone opens the signed wap pay URL: check it, create the trade, show the pay page."""
    sb = request.app[SANDBOX]
    wire = _wire(sb)
    params = dict(request.query)
    problem = wire.check(params) or (None if params.get("method") == "alipay.trade.wap.pay" else "isv.invalid-method")
    try:
        biz = json.loads(params.get("biz_content", ""))
        no, amount, subject = str(biz["out_trade_no"]), fen(str(biz["total_amount"])), str(biz["subject"])
        expire = int(datetime.strptime(biz["time_expire"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=CST).timestamp() * 1000)
    except (ValueError, KeyError, TypeError):
        problem = problem or "isv.missing-parameter"
    if problem is not None:
        return web.Response(status=400, text=f"支付请求错误 {problem}", content_type="text/plain")
    if now_ms() >= expire:
        return web.Response(status=400, text="订单已过期", content_type="text/plain")
    fingerprint = json.dumps([amount, subject, params.get("notify_url", ""), expire])
    trade = sb.book.by_no.get(no)
    if trade is None:
        trade = Trade(provider="alipay", out_trade_no=no, amount_cents=amount, description=subject,
                      notify_url=params.get("notify_url", ""), return_url=params.get("return_url", ""),
                      expires_at_ms=expire, created_ms=now_ms(), token=secrets.token_hex(16),
                      fingerprint=fingerprint, trade_type="QUICK_WAP_WAY",
                      transaction_id=time.strftime("%Y%m%d") + sb.new_id("", 20))
        sb.book.add(trade)
    elif trade.fingerprint != fingerprint or trade.provider != "alipay":
        return web.Response(status=400, text="交易信息被篡改 ACQ.CONTEXT_INCONSISTENT", content_type="text/plain")
    raise web.HTTPFound(f"/pay/alipay/{trade.token}")


@routes.post("/gateway.do")
async def gateway(request: web.Request) -> web.Response:
    """Server-to-server API calls: check the RSA2 signature, then run the method."""
    sb = request.app[SANDBOX]
    wire = _wire(sb)
    params = {**request.query, **{k: str(v) for k, v in (await request.post()).items()}}
    method = params.get("method", "")
    problem = wire.check(params)
    if problem is not None:
        return wire.answer(method, {"code": "40002", "msg": "Invalid Arguments", "sub_code": problem,
                                    "sub_msg": "验签出错" if problem == "isv.invalid-signature" else "参数无效"}, signed=False)
    try:
        biz = json.loads(params.get("biz_content", "{}"))
        handler = METHODS[method]
        return wire.answer(method, handler(sb, wire, biz))
    except KeyError:
        return wire.answer(method, {"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.invalid-method"}, signed=False)
    except (ValueError, TypeError):
        return wire.answer(method, {"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.invalid-parameter"})


def _business(sub_code: str, sub_msg: str) -> dict[str, Any]:
    return {"code": "40004", "msg": "Business Failed", "sub_code": sub_code, "sub_msg": sub_msg}


def _trade(sb: Sandbox, biz: dict[str, Any]) -> Trade | None:
    trade = sb.book.by_no.get(str(biz["out_trade_no"]))
    if trade is None or trade.provider != "alipay":
        return None
    sb.expire(trade)
    return trade


def m_query(sb: Sandbox, wire: AlipayWire, biz: dict[str, Any]) -> dict[str, Any]:
    """alipay.trade.query."""
    t = _trade(sb, biz)
    if t is None:
        return _business("ACQ.TRADE_NOT_EXIST", "交易不存在")
    out = {"code": "10000", "msg": "Success", "trade_no": t.transaction_id, "out_trade_no": t.out_trade_no,
           "buyer_logon_id": "159****5620", "trade_status": wire.trade_status(t), "total_amount": yuan(t.amount_cents)}
    if t.paid_at_ms is not None:
        out.update(send_pay_date=beijing(t.paid_at_ms), buyer_pay_amount=yuan(t.amount_cents),
                   receipt_amount=yuan(t.amount_cents))
    return out


def m_close(sb: Sandbox, wire: AlipayWire, biz: dict[str, Any]) -> dict[str, Any]:
    """alipay.trade.close."""
    t = _trade(sb, biz)
    if t is None:
        return _business("ACQ.TRADE_NOT_EXIST", "交易不存在")
    if t.state == "paid":
        return _business("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
    if t.state == "pending":
        sb.close(t)
    return {"code": "10000", "msg": "Success", "trade_no": t.transaction_id, "out_trade_no": t.out_trade_no}


def m_refund(sb: Sandbox, wire: AlipayWire, biz: dict[str, Any]) -> dict[str, Any]:
    """alipay.trade.refund: synchronous, idempotent on out_request_no."""
    t = _trade(sb, biz)
    if t is None:
        return _business("ACQ.TRADE_NOT_EXIST", "交易不存在")
    amount, no = fen(str(biz["refund_amount"])), str(biz.get("out_request_no") or t.out_trade_no)
    changed = no not in t.refunds
    if changed:
        if t.state != "paid":
            return _business("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
        if amount <= 0 or t.refunded_cents() + amount > t.amount_cents:
            return _business("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限")
        t.refunds[no] = RefundRecord(out_refund_no=no, refund_id=no, amount_cents=amount, state="SUCCESS",
                                     created_ms=now_ms(), reason=str(biz.get("refund_reason", "")),
                                     notify_url=None, success_ms=now_ms())
        sb.book.save()
    return {"code": "10000", "msg": "Success", "trade_no": t.transaction_id, "out_trade_no": t.out_trade_no,
            "buyer_logon_id": "159****5620", "fund_change": "Y" if changed else "N",
            "refund_fee": yuan(t.refunded_cents()), "gmt_refund_pay": beijing(t.refunds[no].success_ms)}


def m_refund_query(sb: Sandbox, wire: AlipayWire, biz: dict[str, Any]) -> dict[str, Any]:
    """alipay.trade.fastpay.refund.query: no data when the refund does not exist."""
    t = _trade(sb, biz)
    r = None if t is None else t.refunds.get(str(biz["out_request_no"]))
    if t is None or r is None:
        return {"code": "10000", "msg": "Success"}
    return {"code": "10000", "msg": "Success", "trade_no": t.transaction_id, "out_trade_no": t.out_trade_no,
            "out_request_no": r.out_refund_no, "total_amount": yuan(t.amount_cents),
            "refund_amount": yuan(r.amount_cents), "refund_status": "REFUND_SUCCESS",
            "gmt_refund_pay": beijing(r.success_ms)}


METHODS = {
    "alipay.trade.query": m_query,
    "alipay.trade.close": m_close,
    "alipay.trade.refund": m_refund,
    "alipay.trade.fastpay.refund.query": m_refund_query,
}
