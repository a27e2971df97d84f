"""Alipay open platform adapter (wap pay, query, close, refund, refund query, notifications).

Written on ``cryptography`` + ``aiohttp`` rather than ``python-alipay-sdk``: that SDK is
synchronous (``urllib``), so each call would block the event loop, and its gateway choice is a
debug flag between the two Alipay hosts (the sandbox needs a third). The formats below follow the
published documentation: common parameters plus ``biz_content`` (JSON), RSA2 (SHA256withRSA) over
the ``k=v`` pairs sorted by key, empty values and ``sign`` left out; answers
``{"<method_with_underscores>_response": {...}, "sign": "..."}`` signed over the exact text of
that object; notifications form-encoded, verified with ``sign`` and ``sign_type`` left out.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp

from .base import (
    Ack,
    CreatedOrder,
    CreateOrder,
    InvalidNotification,
    Notification,
    PaymentNotification,
    PaymentStatus,
    ProviderPayment,
    ProviderRejected,
    ProviderUnreachable,
    Refund,
)
from .config import AlipayConfig
from .signing import load_private_key, load_public_key, rsa_sign, rsa_verify
from .transport import Transport

log = logging.getLogger(__name__)

CST = timezone(timedelta(hours=8))
_YUAN = re.compile(r"^(0|[1-9][0-9]{0,11})(\.[0-9]{1,2})?$")

TRADE_STATUSES: dict[str, PaymentStatus] = {
    "WAIT_BUYER_PAY": "pending",
    "TRADE_SUCCESS": "paid",
    "TRADE_FINISHED": "paid",
    "TRADE_CLOSED": "closed",
}
#: Codes Alipay documents as "try again" rather than as an answer.
RETRY_CODES = {"20000"}


def yuan_to_fen(text: str) -> int:
    """Convert Alipay's yuan decimal string (``"123.45"``) to fen exactly, never through float."""
    if not _YUAN.match(text):
        raise ValueError("not a yuan amount")
    return int(Decimal(text) * 100)


def fen_to_yuan(fen: int) -> str:
    """Format fen as Alipay's two-decimal yuan string."""
    return f"{Decimal(fen) / 100:.2f}"


def beijing_time(unix_ms: float) -> str:
    """Format a Unix time as Alipay's ``yyyy-MM-dd HH:mm:ss`` in Beijing time."""
    return datetime.fromtimestamp(unix_ms / 1000, tz=CST).strftime("%Y-%m-%d %H:%M:%S")


def parse_beijing_time(text: str | None) -> int | None:
    """Parse Alipay's Beijing ``yyyy-MM-dd HH:mm:ss`` into Unix milliseconds (None when absent)."""
    if not text:
        return None
    return int(datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=CST).timestamp() * 1000)


def sign_content(params: Mapping[str, str], *, exclude: tuple[str, ...]) -> bytes:
    """Return the ``k=v&...`` string Alipay signs: sorted keys, raw values, empty values skipped."""
    pairs = sorted((k, v) for k, v in params.items() if k not in exclude and v != "")
    return "&".join(f"{k}={v}" for k, v in pairs).encode()


def signed_response(text: str, key: str) -> tuple[str, str | None]:
    """Return the exact JSON text of ``key``'s object in an answer (what Alipay signed) and ``sign``."""
    doc = json.loads(text)
    marker = re.search(r'"' + re.escape(key) + r'"\s*:\s*', text)
    if marker is None:
        raise ValueError("answer lacks " + key)
    _, end = json.JSONDecoder().raw_decode(text, marker.end())
    return text[marker.end() : end], doc.get("sign")


class Alipay:
    """The Alipay adapter; one per application configuration."""

    name = "alipay"

    def __init__(
        self, config: AlipayConfig, *, http_timeout: float,
        session: aiohttp.ClientSession | None = None, clock: Callable[[], float] = time.time,
    ) -> None:
        self._cfg = config
        self._key = load_private_key(config.app_private_key.get_secret_value())
        self._alipay_key = load_public_key(config.alipay_public_key)
        self._http = Transport(timeout=http_timeout, session=session)
        self._clock = clock

    def __repr__(self) -> str:
        return f"Alipay(app_id={self._cfg.app_id!r}, gateway_url={self._cfg.gateway_url!r})"

    def _signed_params(self, method: str, biz: dict[str, Any], **extra: str) -> dict[str, str]:
        params = {
            "app_id": self._cfg.app_id, "method": method, "format": "JSON", "charset": "utf-8",
            "sign_type": "RSA2", "timestamp": beijing_time(self._clock() * 1000), "version": "1.0",
            "biz_content": json.dumps(biz, ensure_ascii=False, separators=(",", ":")), **extra,
        }
        params["sign"] = rsa_sign(self._key, sign_content(params, exclude=("sign",)))
        return params

    async def _call(self, method: str, biz: dict[str, Any]) -> dict[str, Any]:
        body = urlencode(self._signed_params(method, biz)).encode()
        reply = await self._http.send(
            "POST", self._cfg.gateway_url,
            headers={"Content-Type": "application/x-www-form-urlencoded;charset=utf-8"},
            body=body, label=method,
        )
        key = method.replace(".", "_") + "_response"
        try:
            text = reply.body.decode()
            if '"error_response"' in text and f'"{key}"' not in text:
                key = "error_response"
            content, sign = signed_response(text, key)
            answer = json.loads(content)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProviderUnreachable(f"{method}: unreadable answer (HTTP {reply.status})") from exc
        code = str(answer.get("code", ""))
        if code in RETRY_CODES:
            raise ProviderUnreachable(f"{method}: {code} {answer.get('sub_code', '')}")
        # Alipay leaves signature errors unsigned (it cannot sign for an app it did not verify);
        # an unsigned answer can only ever be a rejection, never a success.
        if code == "10000":
            if not sign or not rsa_verify(self._alipay_key, content.encode(), sign):
                log.warning("alipay %s: answer signature rejected", method)
                raise ProviderUnreachable(f"{method}: unverifiable answer")
            return answer
        raise ProviderRejected(
            str(answer.get("sub_code") or code), str(answer.get("sub_msg") or answer.get("msg", "")),
            http_status=reply.status,
        )

    async def create(self, order: CreateOrder) -> CreatedOrder:
        """Build the signed ``alipay.trade.wap.pay`` gateway URL the phone opens (no server call)."""
        biz = {
            "out_trade_no": order.out_trade_no,
            "total_amount": fen_to_yuan(order.amount_cents),
            "subject": order.description,
            "product_code": "QUICK_WAP_WAY",
            "time_expire": beijing_time(order.expires_at),
            "quit_url": order.return_url,
        }
        params = self._signed_params(
            "alipay.trade.wap.pay", biz, notify_url=order.notify_url, return_url=order.return_url
        )
        sep = "&" if "?" in self._cfg.gateway_url else "?"
        return CreatedOrder(
            provider="alipay", out_trade_no=order.out_trade_no,
            pay_url=self._cfg.gateway_url + sep + urlencode(params), prepay_id=None,
        )

    async def query(self, out_trade_no: str) -> ProviderPayment:
        """Query a trade; a trade the diner never opened does not exist yet and reads as pending."""
        try:
            a = await self._call("alipay.trade.query", {"out_trade_no": out_trade_no})
        except ProviderRejected as exc:
            # Alipay creates the trade when the phone opens the pay URL, not when we build it.
            if exc.code == "ACQ.TRADE_NOT_EXIST":
                return ProviderPayment(
                    provider="alipay", out_trade_no=out_trade_no, status="pending",
                    transaction_id=None, amount_cents=0, paid_at=None,
                )
            raise
        status = TRADE_STATUSES.get(str(a.get("trade_status")))
        if status is None:
            raise ProviderRejected("UNKNOWN_TRADE_STATUS", str(a.get("trade_status")))
        paid_at = parse_beijing_time(a.get("send_pay_date"))
        if status == "closed" and paid_at is not None:
            # A paid trade closes when it is fully refunded.
            status = "refunded"
        return ProviderPayment(
            provider="alipay", out_trade_no=str(a["out_trade_no"]), status=status,
            transaction_id=a.get("trade_no") or None, amount_cents=yuan_to_fen(str(a["total_amount"])),
            paid_at=paid_at,
        )

    async def close(self, out_trade_no: str) -> None:
        """Close an unpaid trade; one the diner never opened has nothing to close."""
        try:
            await self._call("alipay.trade.close", {"out_trade_no": out_trade_no})
        except ProviderRejected as exc:
            # The signed URL still carries time_expire, after which Alipay refuses to open it.
            if exc.code != "ACQ.TRADE_NOT_EXIST":
                raise

    async def refund(
        self, out_trade_no: str, out_refund_no: str, refund_cents: int, total_cents: int, reason: str
    ) -> Refund:
        """Refund synchronously (``out_request_no`` = our refund number, so a retry is the same refund)."""
        biz = {
            "out_trade_no": out_trade_no, "refund_amount": fen_to_yuan(refund_cents),
            "out_request_no": out_refund_no, "refund_reason": reason[:256],
        }
        a = await self._call("alipay.trade.refund", biz)
        if a.get("fund_change") != "Y":
            # "N" answers a repeated out_request_no as well as a refund that moved no money: ask.
            return await self.query_refund(out_refund_no, out_trade_no=out_trade_no)
        return Refund(
            provider="alipay", out_trade_no=out_trade_no, out_refund_no=out_refund_no,
            refund_id=a.get("trade_no") or None, status="succeeded", refund_cents=refund_cents,
            succeeded_at=parse_beijing_time(a.get("gmt_refund_pay")),
        )

    async def query_refund(self, out_refund_no: str, *, out_trade_no: str) -> Refund:
        """Query a refund; Alipay needs the trade number beside the refund number."""
        biz = {"out_trade_no": out_trade_no, "out_request_no": out_refund_no, "query_options": ["gmt_refund_pay"]}
        a = await self._call("alipay.trade.fastpay.refund.query", biz)
        found = bool(a.get("refund_amount"))
        # Alipay documents: data returned and refund_status empty or REFUND_SUCCESS = refunded;
        # no data = the refund was not taken (retrying with the same number is safe).
        ok = found and a.get("refund_status", "REFUND_SUCCESS") in ("REFUND_SUCCESS", "")
        return Refund(
            provider="alipay", out_trade_no=out_trade_no, out_refund_no=out_refund_no,
            refund_id=a.get("trade_no") or None, status="succeeded" if ok else "failed",
            refund_cents=yuan_to_fen(str(a["refund_amount"])) if found else 0,
            succeeded_at=parse_beijing_time(a.get("gmt_refund_pay")) if ok else None,
        )

    def verify_notification(self, headers: Mapping[str, str], body: bytes) -> Notification:
        """Verify an RSA2-signed form notification and decode it."""
        try:
            charset = dict(parse_qsl(body.decode("ascii"))).get("charset", "utf-8")
            form = dict(parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=True, encoding=charset))
        except (ValueError, UnicodeDecodeError, LookupError):
            raise InvalidNotification("not a form body") from None
        sign = form.get("sign", "")
        if form.get("sign_type") != "RSA2" or not sign:
            raise InvalidNotification("not RSA2-signed")
        if not rsa_verify(self._alipay_key, sign_content(form, exclude=("sign", "sign_type")), sign):
            raise InvalidNotification("bad signature")
        if form.get("app_id") != self._cfg.app_id:
            raise InvalidNotification("notification for another app")
        if self._cfg.seller_id and form.get("seller_id") != self._cfg.seller_id:
            raise InvalidNotification("notification for another seller")
        status = TRADE_STATUSES.get(form.get("trade_status", ""))
        if status == "closed" and form.get("gmt_payment"):
            # A paid trade closes when it is fully refunded.
            status = "refunded"
        try:
            if status is None or not form["trade_no"]:
                raise ValueError("no trade status or trade number")
            return PaymentNotification(
                provider="alipay", event_id=form["notify_id"], out_trade_no=form["out_trade_no"],
                transaction_id=form["trade_no"], status=status,
                amount_cents=yuan_to_fen(form["total_amount"]),
                paid_at=parse_beijing_time(form.get("gmt_payment")),
            )
        except (KeyError, ValueError):
            raise InvalidNotification("malformed notification") from None

    def ack(self, ok: bool) -> Ack:
        """Return ``success`` for a handled notification; anything else makes Alipay retry."""
        return Ack(200, "text/plain; charset=utf-8", b"success" if ok else b"failure")

    async def aclose(self) -> None:
        """Close the owned HTTP session."""
        await self._http.aclose()
