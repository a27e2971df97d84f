"""WeChat Pay API v3 adapter (H5 and JSAPI orders, query, close, refunds, notifications).

Written on ``cryptography`` + ``aiohttp`` rather than ``wechatpayv3``: that SDK is synchronous
(``requests``), so every call would block the event loop or need a thread, it hard-codes the
``api.mch.weixin.qq.com`` endpoint (the sandbox needs another base URL), and it downloads platform
certificates by itself where we pin the operator's platform public key. The formats below follow
the published v3 documentation: request signature over ``METHOD\\nURL\\nTIMESTAMP\\nNONCE\\nBODY\\n``,
answers and notifications verified over ``TIMESTAMP\\nNONCE\\nBODY\\n`` with the ``Wechatpay-*``
headers, notification resources in AEAD_AES_256_GCM under the APIv3 key.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp

from .base import (
    Ack,
    CreatedOrder,
    CreateOrder,
    InvalidNotification,
    JsapiParams,
    Notification,
    PaymentNotification,
    PaymentStatus,
    ProviderPayment,
    ProviderRejected,
    ProviderUnreachable,
    Refund,
    RefundNotification,
    RefundStatus,
)
from .config import WechatPayConfig
from .signing import (
    aes_gcm_decrypt,
    load_private_key,
    load_public_key,
    rsa_sign,
    rsa_verify,
)
from .transport import Transport

log = logging.getLogger(__name__)

#: WeChat rejects a signature whose timestamp is more than five minutes off; so do we.
MAX_CLOCK_SKEW_S = 300
CST = timezone(timedelta(hours=8))

TRADE_STATES: dict[str, PaymentStatus] = {
    "SUCCESS": "paid",
    "REFUND": "refunded",
    "NOTPAY": "pending",
    "USERPAYING": "pending",
    "CLOSED": "closed",
    "REVOKED": "closed",
    "PAYERROR": "failed",
}
REFUND_STATES: dict[str, RefundStatus] = {
    "SUCCESS": "succeeded",
    "PROCESSING": "processing",
    "CLOSED": "failed",
    "ABNORMAL": "failed",
}


def rfc3339(unix_ms: int) -> str:
    """Format Unix milliseconds as WeChat's RFC3339 time in Beijing time (``+08:00``)."""
    return datetime.fromtimestamp(unix_ms / 1000, tz=CST).isoformat(timespec="seconds")


def parse_rfc3339(text: str | None) -> int | None:
    """Parse a WeChat RFC3339 time into Unix milliseconds (None for absent)."""
    if not text:
        return None
    return int(datetime.fromisoformat(text).timestamp() * 1000)


class WechatPay:
    """The WeChat Pay v3 adapter; one per merchant configuration."""

    name = "wechatpay"

    def __init__(
        self, config: WechatPayConfig, *, http_timeout: float,
        session: aiohttp.ClientSession | None = None, clock: Callable[[], float] = time.time,
    ) -> None:
        self._cfg = config
        self._key = load_private_key(config.merchant_private_key.get_secret_value())
        self._platform_key = load_public_key(config.platform_public_key)
        self._apiv3_key = config.apiv3_key.get_secret_value().encode()
        self._base = config.base_url.rstrip("/")
        self._http = Transport(timeout=http_timeout, session=session)
        self._clock = clock

    def __repr__(self) -> str:
        return f"WechatPay(mchid={self._cfg.mchid!r}, base_url={self._base!r})"

    # -- requests -----------------------------------------------------------------------------

    def authorization(self, method: str, path_qs: str, body: str) -> str:
        """Return the ``Authorization`` header value for one request."""
        timestamp = str(int(self._clock()))
        nonce = secrets.token_hex(16)
        message = f"{method}\n{path_qs}\n{timestamp}\n{nonce}\n{body}\n".encode()
        return (
            f'WECHATPAY2-SHA256-RSA2048 mchid="{self._cfg.mchid}",nonce_str="{nonce}",'
            f'signature="{rsa_sign(self._key, message)}",timestamp="{timestamp}",'
            f'serial_no="{self._cfg.merchant_serial_no}"'
        )

    async def _call(self, method: str, path_qs: str, payload: dict[str, Any] | None, label: str) -> Any:
        body = "" if payload is None else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        headers = {
            "Authorization": self.authorization(method, path_qs, body),
            "Accept": "application/json",
            "User-Agent": "tablelock-wechatpay/1",
        }
        if payload is not None:
            headers["Content-Type"] = "application/json"
        reply = await self._http.send(
            method, self._base + path_qs, headers=headers, body=body.encode() if body else None, label=label
        )
        if reply.status >= 400:
            try:
                err = json.loads(reply.body)
                code, message = str(err["code"]), str(err.get("message", ""))
            except (ValueError, KeyError, TypeError):
                code, message = f"HTTP_{reply.status}", ""
            raise ProviderRejected(code, message, http_status=reply.status)
        # A 2xx answer must carry a valid platform signature; an unsigned "paid" is not believed.
        try:
            self._verify_signed(reply.headers, reply.body)
        except InvalidNotification as exc:
            log.warning("wechatpay %s: answer signature rejected (%s)", label, exc)
            raise ProviderUnreachable(f"{label}: unverifiable answer") from exc
        return json.loads(reply.body) if reply.body else None

    # -- the interface ------------------------------------------------------------------------

    async def create(self, order: CreateOrder) -> CreatedOrder:
        """Open an H5 order (or JSAPI with ``payer_openid``) and return where the diner pays."""
        payload: dict[str, Any] = {
            "appid": self._cfg.appid,
            "mchid": self._cfg.mchid,
            "description": order.description,
            "out_trade_no": order.out_trade_no,
            "time_expire": rfc3339(order.expires_at),
            "notify_url": order.notify_url,
            "amount": {"total": order.amount_cents, "currency": "CNY"},
        }
        if order.payer_openid is not None:
            payload["payer"] = {"openid": order.payer_openid}
            answer = await self._call("POST", "/v3/pay/transactions/jsapi", payload, "jsapi")
            prepay_id = str(answer["prepay_id"])
            return CreatedOrder(
                provider="wechatpay", out_trade_no=order.out_trade_no, pay_url=None,
                prepay_id=prepay_id, jsapi=self._jsapi_params(prepay_id),
            )
        payload["scene_info"] = {"payer_client_ip": order.payer_client_ip, "h5_info": {"type": "Wap"}}
        answer = await self._call("POST", "/v3/pay/transactions/h5", payload, "h5")
        h5_url = str(answer["h5_url"])
        prepay = parse_qs(urlsplit(h5_url).query).get("prepay_id", [None])[0]
        # WeChat sends the phone back to ``redirect_url`` (URL-encoded, appended to h5_url).
        pay_url = f"{h5_url}&redirect_url={quote(order.return_url, safe='')}"
        return CreatedOrder(provider="wechatpay", out_trade_no=order.out_trade_no, pay_url=pay_url, prepay_id=prepay)

    def _jsapi_params(self, prepay_id: str) -> JsapiParams:
        timestamp, nonce, package = str(int(self._clock())), secrets.token_hex(16), f"prepay_id={prepay_id}"
        message = f"{self._cfg.appid}\n{timestamp}\n{nonce}\n{package}\n".encode()
        return JsapiParams(
            appId=self._cfg.appid, timeStamp=timestamp, nonceStr=nonce, package=package,
            paySign=rsa_sign(self._key, message),
        )

    async def query(self, out_trade_no: str) -> ProviderPayment:
        """Query a trade by merchant trade number."""
        path = f"/v3/pay/transactions/out-trade-no/{quote(out_trade_no, safe='')}?mchid={self._cfg.mchid}"
        return self._payment(await self._call("GET", path, None, "query"))

    def _payment(self, tx: dict[str, Any]) -> ProviderPayment:
        state = TRADE_STATES.get(str(tx["trade_state"]))
        if state is None:
            raise ProviderRejected("UNKNOWN_TRADE_STATE", str(tx["trade_state"]))
        amount = tx.get("amount") or {}
        return ProviderPayment(
            provider="wechatpay", out_trade_no=str(tx["out_trade_no"]), status=state,
            transaction_id=tx.get("transaction_id") or None,
            amount_cents=int(amount.get("total", 0)),
            paid_at=parse_rfc3339(tx.get("success_time")),
        )

    async def close(self, out_trade_no: str) -> None:
        """Close an unpaid trade (WeChat answers 204)."""
        path = f"/v3/pay/transactions/out-trade-no/{quote(out_trade_no, safe='')}/close"
        await self._call("POST", path, {"mchid": self._cfg.mchid}, "close")

    async def refund(
        self, out_trade_no: str, out_refund_no: str, refund_cents: int, total_cents: int, reason: str
    ) -> Refund:
        """Request a domestic refund; WeChat treats a repeated ``out_refund_no`` as the same refund."""
        payload = {
            "out_trade_no": out_trade_no,
            "out_refund_no": out_refund_no,
            "reason": reason[:80],
            "amount": {"refund": refund_cents, "total": total_cents, "currency": "CNY"},
        }
        return self._refund(await self._call("POST", "/v3/refund/domestic/refunds", payload, "refund"))

    async def query_refund(self, out_refund_no: str, *, out_trade_no: str = "") -> Refund:
        """Query a refund by merchant refund number (WeChat needs no trade number)."""
        path = f"/v3/refund/domestic/refunds/{quote(out_refund_no, safe='')}"
        return self._refund(await self._call("GET", path, None, "query_refund"))

    def _refund(self, r: dict[str, Any]) -> Refund:
        return Refund(
            provider="wechatpay", out_trade_no=str(r["out_trade_no"]), out_refund_no=str(r["out_refund_no"]),
            refund_id=r.get("refund_id") or None, status=REFUND_STATES.get(str(r["status"]), "processing"),
            refund_cents=int(r["amount"]["refund"]), succeeded_at=parse_rfc3339(r.get("success_time")),
        )

    # -- notifications ------------------------------------------------------------------------

    def _verify_signed(self, headers: Mapping[str, str], body: bytes) -> None:
        h = {k.lower(): v for k, v in headers.items()}
        try:
            timestamp, nonce = h["wechatpay-timestamp"], h["wechatpay-nonce"]
            signature, serial = h["wechatpay-signature"], h["wechatpay-serial"]
        except KeyError as exc:
            raise InvalidNotification(f"missing header {exc.args[0]}") from None
        if serial != self._cfg.platform_serial_no:
            raise InvalidNotification("unknown platform serial")
        if not timestamp.isdigit() or abs(self._clock() - int(timestamp)) > MAX_CLOCK_SKEW_S:
            raise InvalidNotification("timestamp outside the 5 minute window")
        message = timestamp.encode() + b"\n" + nonce.encode() + b"\n" + body + b"\n"
        if not rsa_verify(self._platform_key, message, signature):
            raise InvalidNotification("bad signature")

    def verify_notification(self, headers: Mapping[str, str], body: bytes) -> Notification:
        """Verify the signature, decrypt the resource and decode a payment or refund notification."""
        self._verify_signed(headers, body)
        try:
            event = json.loads(body)
            res = event["resource"]
            if res["algorithm"] != "AEAD_AES_256_GCM":
                raise InvalidNotification("unknown algorithm")
            plain = aes_gcm_decrypt(self._apiv3_key, res["nonce"], res.get("associated_data", ""), res["ciphertext"])
            data = json.loads(plain)
            if data["mchid"] != self._cfg.mchid:
                raise InvalidNotification("notification for another merchant")
            event_type = str(event["event_type"])
            if event_type.startswith("TRANSACTION."):
                if data.get("appid") != self._cfg.appid:
                    raise InvalidNotification("notification for another app")
                p = self._payment(data)
                if p.transaction_id is None:
                    raise InvalidNotification("no transaction id")
                return PaymentNotification(
                    provider="wechatpay", event_id=str(event["id"]), out_trade_no=p.out_trade_no,
                    transaction_id=p.transaction_id, status=p.status, amount_cents=p.amount_cents,
                    paid_at=p.paid_at,
                )
            if event_type.startswith("REFUND."):
                return RefundNotification(
                    provider="wechatpay", event_id=str(event["id"]), out_trade_no=str(data["out_trade_no"]),
                    transaction_id=str(data["transaction_id"]), out_refund_no=str(data["out_refund_no"]),
                    refund_id=str(data["refund_id"]),
                    status=REFUND_STATES.get(str(data["refund_status"]), "processing"),
                    refund_cents=int(data["amount"]["refund"]),
                    succeeded_at=parse_rfc3339(data.get("success_time")),
                )
            raise InvalidNotification("unknown event type")
        except InvalidNotification:
            raise
        except (ValueError, KeyError, TypeError, ProviderRejected) as exc:
            # pydantic's ValidationError is a ValueError: a malformed field is a malformed notification.
            raise InvalidNotification(f"malformed notification: {type(exc).__name__}") from None

    def ack(self, ok: bool) -> Ack:
        """Return 204 for a handled notification, else 500 with WeChat's FAIL body (it retries)."""
        if ok:
            return Ack(204, "application/json", b"")
        return Ack(500, "application/json", b'{"code":"FAIL","message":"failed"}')

    async def aclose(self) -> None:
        """Close the owned HTTP session."""
        await self._http.aclose()
