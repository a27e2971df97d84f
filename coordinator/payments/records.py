"""The payment record of one provider trade, and the shapes the payment service hands around.

States of a record (``state``)::

    in_flight ──paid──▶ completing ──ERP confirmed──▶ paid
        │                    └──ERP refused──▶ surplus
        ├──failed / closed / expired──▶ failed | closed
        └──paid after the lock was gone──▶ surplus      (unknown trade ──▶ surplus too)

A surplus carries ``refund_state``: manual (auto-refund off) | pending → processing → succeeded | failed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

from coordinator.core.models import Lock

PaymentState = Literal["in_flight", "completing", "paid", "failed", "closed", "surplus", "unknown"]
RefundState = Literal["manual", "pending", "processing", "succeeded", "failed"]

_INTS = {"version", "fence", "amount_cents", "created_at", "provider_expires_at", "lock_expires_at",
         "received_cents", "paid_at", "captured_at", "confirmed_at", "ended_at", "refund_cents",
         "erp_attempts", "refunded_at"}


class PaymentRecord(BaseModel):
    """One provider trade as the coordinator keeps it (``tl:{s}:pay:<out_trade_no>``)."""

    model_config = ConfigDict(extra="ignore")

    out_trade_no: str
    provider: str
    store_id: str
    order_id: str | None = None
    table_id: str | None = None
    version: int | None = None
    fence: int | None = None
    amount_cents: int = 0
    state: PaymentState
    created_at: int = 0
    provider_expires_at: int | None = None
    lock_expires_at: int | None = None
    pay_url: str | None = None
    transaction_id: str | None = None
    payment_ref: str | None = None
    received_cents: int | None = None
    paid_at: int | None = None
    captured_at: int | None = None
    capture_source: str | None = None
    confirmed_at: int | None = None
    ended_at: int | None = None
    end_reason: str | None = None
    erp_attempts: int = 0
    erp_last_error: str | None = None
    surplus_reason: str | None = None
    refund_no: str | None = None
    refund_state: RefundState | None = None
    refund_cents: int | None = None
    refunded_at: int | None = None
    #: A split-bill share's trade (SPEC §10): the share as JSON text (docs/protocol.md A13); None: the whole order.
    share: str | None = None

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes]) -> PaymentRecord:
        """Decode the Redis hash (bytes) into a record; secrets (the lock token) stay behind."""
        values: dict[str, Any] = {}
        for key, value in raw.items():
            name, text = key.decode(), value.decode()
            if name in ("lock_token", "holder") or text == "":
                continue
            values[name] = int(text) if name in _INTS and text.lstrip("-").isdigit() else text
        return cls.model_validate(values)


class StartedPayment(BaseModel):
    """201 of ``POST /h5/payments/start``: where the phone pays, and the lock in flight."""

    out_trade_no: str
    provider: str
    pay_url: str | None
    jsapi: dict[str, Any] | None = None
    amount_cents: int
    expires_at: int
    lock: Lock


class CheckoutCancelled(BaseModel):
    """200 of ``POST /h5/checkout/cancel``: ``paid`` (only when true) says the provider had the money
    already, so the payment completes instead of being cancelled."""

    released: bool
    paid: bool = False

    @model_serializer(mode="wrap")
    def _paid_only_when_true(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if not data.get("paid"):
            data.pop("paid", None)
        return data
