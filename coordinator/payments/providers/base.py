"""The one interface every payment provider adapter implements, its models and its errors.

    ProviderError
    ├── ProviderUnreachable   network error, timeout or 5xx: the outcome is unknown, ask again
    ├── ProviderRejected      a business error answered by the provider (``code`` is theirs)
    └── InvalidNotification   a notification that fails signature, decryption or format checks

Our vocabulary lives here (``PaymentStatus``, ``RefundStatus``, cents, Unix milliseconds); each
adapter keeps the provider's own words (``trade_state``, ``trade_status``, fen, yuan) inside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal, NamedTuple, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

ProviderName = Literal["wechatpay", "alipay"]
PaymentStatus = Literal["pending", "paid", "closed", "failed", "refunded"]
RefundStatus = Literal["processing", "succeeded", "failed"]

Cents = Annotated[int, Field(ge=0)]
UnixMs = Annotated[int, Field(ge=0)]


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")


class CreateOrder(_Model):
    """A provider order to open for one payment lock."""

    out_trade_no: Annotated[str, Field(min_length=6, max_length=32, pattern=r"^[0-9A-Za-z_\-|*]+$")]
    amount_cents: Annotated[int, Field(gt=0)]
    description: Annotated[str, Field(min_length=1, max_length=127)]
    expires_at: UnixMs
    notify_url: Annotated[str, Field(pattern=r"^https?://", max_length=255)]
    return_url: Annotated[str, Field(pattern=r"^https?://", max_length=255)]
    #: WeChat JSAPI only (in-WeChat browser): with an openid the order is a JSAPI order.
    payer_openid: str | None = None
    #: WeChat H5 only: the diner's IP as seen by the coordinator (``scene_info.payer_client_ip``).
    payer_client_ip: str = "127.0.0.1"


class JsapiParams(_Model):
    """What the page passes to ``WeixinJSBridge.invoke('getBrandWCPayRequest', ...)``."""

    appId: str
    timeStamp: str
    nonceStr: str
    package: str
    signType: Literal["RSA"] = "RSA"
    paySign: str


class CreatedOrder(_Model):
    """The opened provider order: where the diner's phone goes to pay."""

    provider: ProviderName
    out_trade_no: str
    #: The URL the phone opens (H5 / wap); None for a WeChat JSAPI order, which uses ``jsapi``.
    pay_url: str | None
    #: WeChat ``prepay_id`` (None when the provider has no id before the diner opens the page).
    prepay_id: str | None
    jsapi: JsapiParams | None = None


class ProviderPayment(_Model):
    """The provider's answer about one trade, in our words."""

    provider: ProviderName
    out_trade_no: str
    status: PaymentStatus
    transaction_id: str | None
    amount_cents: Cents
    paid_at: UnixMs | None


class Refund(_Model):
    """One refund's state at the provider."""

    provider: ProviderName
    out_trade_no: str
    out_refund_no: str
    refund_id: str | None
    status: RefundStatus
    refund_cents: Cents
    succeeded_at: UnixMs | None


class PaymentNotification(_Model):
    """A verified asynchronous payment notification."""

    kind: Literal["payment"] = "payment"
    provider: ProviderName
    event_id: str
    out_trade_no: str
    transaction_id: str
    status: PaymentStatus
    amount_cents: Cents
    paid_at: UnixMs | None


class RefundNotification(_Model):
    """A verified asynchronous refund notification (WeChat sends these; Alipay does not)."""

    kind: Literal["refund"] = "refund"
    provider: ProviderName
    event_id: str
    out_trade_no: str
    transaction_id: str
    out_refund_no: str
    refund_id: str
    status: RefundStatus
    refund_cents: Cents
    succeeded_at: UnixMs | None


Notification = Annotated[PaymentNotification | RefundNotification, Field(discriminator="kind")]


class Ack(NamedTuple):
    """The HTTP answer the provider expects to a notification: ``(status, content_type, body)``."""

    status: int
    content_type: str
    body: bytes


class ProviderError(Exception):
    """Base of every adapter error."""


class ProviderUnreachable(ProviderError):
    """Network error, timeout or 5xx: the call's outcome is unknown."""


class ProviderRejected(ProviderError):
    """The provider answered with a business error (its own ``code``)."""

    def __init__(self, code: str, message: str = "", *, http_status: int | None = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.http_status = http_status


class InvalidNotification(ProviderError):
    """A notification that failed verification; it must change nothing."""


@runtime_checkable
class PaymentProvider(Protocol):
    """One payment provider, spoken to in our vocabulary."""

    name: ProviderName

    async def create(self, order: CreateOrder) -> CreatedOrder:
        """Open a provider order and return where the diner pays."""
        ...

    async def query(self, out_trade_no: str) -> ProviderPayment:
        """Ask the provider for the state of one trade."""
        ...

    async def close(self, out_trade_no: str) -> None:
        """Close an unpaid trade so it can no longer be paid."""
        ...

    async def refund(
        self, out_trade_no: str, out_refund_no: str, refund_cents: int, total_cents: int, reason: str
    ) -> Refund:
        """Ask for a refund; idempotent on ``out_refund_no``."""
        ...

    async def query_refund(self, out_refund_no: str, *, out_trade_no: str) -> Refund:
        """Ask the provider for the state of one refund."""
        ...

    def verify_notification(self, headers: Mapping[str, str], body: bytes) -> Notification:
        """Verify and decode an asynchronous notification, or raise ``InvalidNotification``."""
        ...

    def ack(self, ok: bool) -> Ack:
        """Return the HTTP answer the provider expects for a handled (or refused) notification."""
        ...

    async def aclose(self) -> None:
        """Release the HTTP session the adapter owns."""
        ...
