"""The sandbox's WeChat Pay API v3: orders, query, close, refunds, signed answers and notifications."""

from __future__ import annotations

import json
import re
import secrets
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp import web

from . import crypto
from .core import SANDBOX, Delivery, Sandbox, now_ms
from .keys import SandboxKeys
from .state import RefundRecord, Trade

CST = timezone(timedelta(hours=8))
MAX_SKEW_S = 300
_AUTH = re.compile(r'(\w+)="([^"]*)"')
routes = web.RouteTableDef()


def rfc3339(ms: int | None) -> str | None:
    """Unix ms as WeChat's RFC3339 Beijing time."""
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=CST).isoformat(timespec="seconds")


class WechatWire:
    """WeChat's signing and notification formats, with the platform key."""

    def __init__(self, keys: SandboxKeys) -> None:
        self.keys = keys
        self.platform_key = crypto.load_private(keys.platform_private_pem)
        self.merchant_public = keys.merchant_public()

    def signed_headers(self, body: bytes) -> dict[str, str]:
        """``Wechatpay-*`` headers signing ``body`` with the platform key."""
        ts, nonce = str(int(time.time())), secrets.token_hex(16)
        return {
            "Wechatpay-Timestamp": ts,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": crypto.sign(self.platform_key, ts.encode() + b"\n" + nonce.encode() + b"\n" + body + b"\n"),
            "Wechatpay-Serial": self.keys.platform_serial_no,
            "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
            "Request-ID": secrets.token_hex(16),
        }

    def answer(self, status: int, payload: dict[str, Any] | None) -> web.Response:
        """A signed JSON answer (204 without a body)."""
        body = b"" if payload is None else json.dumps(payload, ensure_ascii=False).encode()
        return web.Response(status=status, body=body, headers=self.signed_headers(body),
                            content_type="application/json" if body else None)

    def error(self, status: int, code: str, message: str) -> web.Response:
        """A WeChat error answer ``{"code", "message"}``."""
        return self.answer(status, {"code": code, "message": message})

    def check_signature(self, request: web.Request, body: bytes) -> bool:
        """Check the merchant's ``Authorization`` header as WeChat does."""
        scheme, _, rest = request.headers.get("Authorization", "").partition(" ")
        fields = dict(_AUTH.findall(rest))
        if scheme != "WECHATPAY2-SHA256-RSA2048" or fields.get("mchid") != self.keys.mchid:
            return False
        if fields.get("serial_no") != self.keys.merchant_serial_no:
            return False
        ts = fields.get("timestamp", "")
        if not ts.isdigit() or abs(time.time() - int(ts)) > MAX_SKEW_S:
            return False
        message = f"{request.method}\n{request.raw_path}\n{ts}\n{fields.get('nonce_str', '')}\n".encode() + body + b"\n"
        return crypto.verify(self.merchant_public, message, fields.get("signature", ""))

    def transaction(self, t: Trade) -> dict[str, Any]:
        """The transaction object of a query answer and of the payment notification."""
        state = {"pending": "NOTPAY", "failed": "PAYERROR", "closed": "CLOSED"}.get(t.state)
        if state is None:
            state = "REFUND" if t.refunds else "SUCCESS"
        tx: dict[str, Any] = {
            "appid": self.keys.appid, "mchid": self.keys.mchid, "out_trade_no": t.out_trade_no,
            "trade_type": t.trade_type, "trade_state": state, "trade_state_desc": state, "attach": "",
            "amount": {"total": t.amount_cents, "currency": "CNY", "payer_currency": "CNY"},
        }
        if t.transaction_id:
            tx.update(transaction_id=t.transaction_id, bank_type="OTHERS", success_time=rfc3339(t.paid_at_ms),
                      payer={"openid": "o" + t.transaction_id[-12:]})
            tx["amount"]["payer_total"] = t.amount_cents
        return tx

    def refund_body(self, t: Trade, r: RefundRecord) -> dict[str, Any]:
        """The refund object of refund answers."""
        body: dict[str, Any] = {
            "refund_id": r.refund_id, "out_refund_no": r.out_refund_no, "transaction_id": t.transaction_id,
            "out_trade_no": t.out_trade_no, "channel": "ORIGINAL", "user_received_account": "支付用户零钱",
            "create_time": rfc3339(r.created_ms), "status": r.state, "funds_account": "AVAILABLE",
            "amount": {"total": t.amount_cents, "refund": r.amount_cents, "payer_total": t.amount_cents,
                       "payer_refund": r.amount_cents, "settlement_refund": r.amount_cents,
                       "settlement_total": t.amount_cents, "discount_refund": 0, "currency": "CNY"},
        }
        if r.success_ms is not None:
            body["success_time"] = rfc3339(r.success_ms)
        return body

    def _event(self, url: str, event_type: str, summary: str, kind: str, resource: dict[str, Any]) -> Delivery:
        plain = json.dumps(resource, ensure_ascii=False).encode()
        event = {
            "id": "EV-" + secrets.token_hex(12), "create_time": rfc3339(now_ms()),
            "resource_type": "encrypt-resource", "event_type": event_type, "summary": summary,
            "resource": {"original_type": kind, **crypto.encrypt_resource(self.keys.apiv3_key.encode(), plain, kind)},
        }
        body = json.dumps(event, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "Mozilla/4.0", **self.signed_headers(body)}
        return Delivery(url, headers, body, lambda status, _: status in (200, 204))

    def payment_notification(self, trade: Trade) -> Delivery | None:
        """TRANSACTION.SUCCESS for a paid trade; WeChat sends nothing for failed or closed ones."""
        if trade.state != "paid":
            return None
        return self._event(trade.notify_url, "TRANSACTION.SUCCESS", "支付成功", "transaction", self.transaction(trade))

    def refund_notification(self, trade: Trade, refund: RefundRecord) -> Delivery | None:
        """REFUND.SUCCESS to the refund's notify_url (or the trade's)."""
        resource = {
            "mchid": self.keys.mchid, "out_trade_no": trade.out_trade_no, "transaction_id": trade.transaction_id,
            "out_refund_no": refund.out_refund_no, "refund_id": refund.refund_id, "refund_status": refund.state,
            "success_time": rfc3339(refund.success_ms), "user_received_account": "支付用户零钱",
            "amount": {"total": trade.amount_cents, "refund": refund.amount_cents,
                       "payer_total": trade.amount_cents, "payer_refund": refund.amount_cents},
        }
        return self._event(refund.notify_url or trade.notify_url, "REFUND.SUCCESS", "退款成功", "refund", resource)


async def _authenticated(request: web.Request) -> tuple[Sandbox, WechatWire, bytes, web.Response | None]:
    sb = request.app[SANDBOX]
    wire = sb.wires["wechatpay"]
    assert isinstance(wire, WechatWire)
    body = await request.read()
    if not wire.check_signature(request, body):
        return sb, wire, body, wire.error(401, "SIGN_ERROR", "签名错误")
    return sb, wire, body, None


async def _create(request: web.Request, trade_type: str) -> web.Response:
    sb, wire, body, err = await _authenticated(request)
    if err is not None:
        return err
    try:
        req = json.loads(body)
        no, total = str(req["out_trade_no"]), req["amount"]["total"]
        expire = int(datetime.fromisoformat(req["time_expire"]).timestamp() * 1000) if "time_expire" in req else now_ms() + 7200_000
        if not isinstance(total, int) or total <= 0 or req["mchid"] != sb.keys.mchid or req["appid"] != sb.keys.appid:
            raise ValueError
        if trade_type == "JSAPI" and not req["payer"]["openid"]:
            raise ValueError
        notify_url, description = str(req["notify_url"]), str(req["description"])
    except (ValueError, KeyError, TypeError):
        return wire.error(400, "PARAM_ERROR", "参数错误")
    fingerprint = json.dumps([trade_type, total, description, notify_url, expire])
    old = sb.book.by_no.get(no)
    if old is not None:
        # WeChat answers a repeated identical order with the same prepay_id.
        if old.fingerprint != fingerprint or old.provider != "wechatpay":
            return wire.error(400, "OUT_TRADE_NO_USED", "商户订单号重复")
        trade = old
    else:
        trade = Trade(provider="wechatpay", out_trade_no=no, amount_cents=total, description=description,
                      notify_url=notify_url, return_url="", expires_at_ms=expire, created_ms=now_ms(),
                      token="wx" + secrets.token_hex(16), fingerprint=fingerprint, trade_type=trade_type)
        sb.book.add(trade)
    if trade_type == "JSAPI":
        return wire.answer(200, {"prepay_id": trade.token})
    return wire.answer(200, {"h5_url": f"{sb.base_url}/pay/wechat/{trade.token}?prepay_id={trade.token}&package=2150917749"})


@routes.post("/v3/pay/transactions/h5")
async def create_h5(request: web.Request) -> web.Response:
    """Open an H5 (MWEB) order."""
    return await _create(request, "MWEB")


@routes.post("/v3/pay/transactions/jsapi")
async def create_jsapi(request: web.Request) -> web.Response:
    """Open a JSAPI order."""
    return await _create(request, "JSAPI")


@routes.get("/v3/pay/transactions/out-trade-no/{no}")
async def query(request: web.Request) -> web.Response:
    """Query a trade by merchant trade number."""
    sb, wire, _, err = await _authenticated(request)
    if err is not None:
        return err
    trade = sb.book.by_no.get(request.match_info["no"])
    if trade is None or trade.provider != "wechatpay" or request.query.get("mchid") != sb.keys.mchid:
        return wire.error(404, "ORDER_NOT_EXIST", "订单不存在")
    sb.expire(trade)
    return wire.answer(200, wire.transaction(trade))


@routes.post("/v3/pay/transactions/out-trade-no/{no}/close")
async def close(request: web.Request) -> web.Response:
    """Close an unpaid trade (204)."""
    sb, wire, _, err = await _authenticated(request)
    if err is not None:
        return err
    trade = sb.book.by_no.get(request.match_info["no"])
    if trade is None or trade.provider != "wechatpay":
        return wire.error(404, "ORDER_NOT_EXIST", "订单不存在")
    if trade.state == "paid":
        return wire.error(400, "ORDERPAID", "订单已支付")
    if trade.state == "pending":
        sb.close(trade)
    return wire.answer(204, None)


@routes.post("/v3/refund/domestic/refunds")
async def refund(request: web.Request) -> web.Response:
    """Accept a refund (PROCESSING; it succeeds after ``refund_delay_ms``)."""
    sb, wire, body, err = await _authenticated(request)
    if err is not None:
        return err
    try:
        req = json.loads(body)
        no, amount = str(req["out_refund_no"]), req["amount"]
        trade = sb.book.by_no.get(str(req.get("out_trade_no", "")))
        refund_cents, total = amount["refund"], amount["total"]
        if not isinstance(refund_cents, int) or not isinstance(total, int) or refund_cents <= 0:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        return wire.error(400, "PARAM_ERROR", "参数错误")
    if trade is None or trade.provider != "wechatpay":
        return wire.error(404, "RESOURCE_NOT_EXISTS", "订单不存在")
    if no in trade.refunds:
        return wire.answer(200, wire.refund_body(trade, trade.refunds[no]))
    if trade.state != "paid":
        return wire.error(403, "TRADE_ERROR", "订单未支付")
    if total != trade.amount_cents or trade.refunded_cents() + refund_cents > total:
        return wire.error(400, "INVALID_REQUEST", "退款金额超过订单可退金额")
    record = RefundRecord(out_refund_no=no, refund_id=sb.new_id("50000", 24), amount_cents=refund_cents,
                          state="PROCESSING", created_ms=now_ms(), reason=str(req.get("reason", "")),
                          notify_url=req.get("notify_url"))
    trade.refunds[no] = record
    sb.book.save()
    return wire.answer(200, wire.refund_body(trade, record))


@routes.get("/v3/refund/domestic/refunds/{no}")
async def query_refund(request: web.Request) -> web.Response:
    """Query a refund by merchant refund number."""
    sb, wire, _, err = await _authenticated(request)
    if err is not None:
        return err
    no = request.match_info["no"]
    for trade in sb.book.by_no.values():
        if trade.provider == "wechatpay" and no in trade.refunds:
            return wire.answer(200, wire.refund_body(trade, trade.refunds[no]))
    return wire.error(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
