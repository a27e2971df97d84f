"""Pure views of payment records for the store admin: reconciliation, a daily summary, CSV.

Days are calendar days at the store's UTC offset (China Standard Time, +480 min, unless asked
otherwise), since a restaurant closes its books by its own midnight.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import datetime, timedelta, timezone

from pydantic import BaseModel

from coordinator.payments.records import PaymentRecord

CSV_COLUMNS = ("out_trade_no", "provider", "state", "order_id", "table_id", "version", "amount_cents",
               "received_cents", "transaction_id", "payment_ref", "created_at", "paid_at", "confirmed_at",
               "erp_attempts", "surplus_reason", "refund_no", "refund_state", "refund_cents", "refunded_at")


class PaymentCase(BaseModel):
    """A payment that needs (or had) a human look, and why."""

    reason: str
    payment: PaymentRecord


class PaymentReconciliation(BaseModel):
    """Surplus payments with their refunds, and payments the ERP has not confirmed yet."""

    surplus: list[PaymentCase]
    unconfirmed: list[PaymentCase]


class DaySummary(BaseModel):
    """One day and provider: orders paid vs money received (and what went back)."""

    day: str
    provider: str
    orders_paid: int
    paid_cents: int
    received_cents: int
    surplus_count: int
    surplus_cents: int
    refunded_cents: int
    unconfirmed_cents: int


class PaymentSummary(BaseModel):
    """GET .../payments/summary."""

    utc_offset_minutes: int
    days: list[DaySummary]


def reconciliation(records: list[PaymentRecord]) -> PaymentReconciliation:
    """Surplus payments (with refund states) and "paid, ERP not yet confirmed"."""
    surplus = [PaymentCase(reason=r.surplus_reason or "surplus", payment=r) for r in records if r.state == "surplus"]
    unconfirmed = [PaymentCase(reason="paid_erp_unconfirmed", payment=r) for r in records if r.state == "completing"]
    return PaymentReconciliation(surplus=surplus, unconfirmed=unconfirmed)


def day_of(ms: int, tz: timezone) -> str:
    """The calendar day of a Unix-ms time in ``tz``."""
    return datetime.fromtimestamp(ms / 1000, tz).date().isoformat()


def summary(records: list[PaymentRecord], utc_offset_minutes: int) -> PaymentSummary:
    """Per day and provider: money received (by when it was paid) against orders it paid."""
    tz = timezone(timedelta(minutes=utc_offset_minutes))
    rows: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in records:
        if r.received_cents is None:
            continue  # no money moved
        row = rows[(day_of(r.paid_at or r.created_at, tz), r.provider)]
        row["received_cents"] += r.received_cents
        if r.state == "paid":
            row["orders_paid"] += 1
            row["paid_cents"] += r.received_cents
        elif r.state == "completing":
            row["unconfirmed_cents"] += r.received_cents
        elif r.state == "surplus":
            row["surplus_count"] += 1
            row["surplus_cents"] += r.received_cents
            if r.refund_state == "succeeded":
                row["refunded_cents"] += r.refund_cents or 0
    days = [DaySummary(day=day, provider=provider, **{k: v.get(k, 0) for k in (
        "orders_paid", "paid_cents", "received_cents", "surplus_count", "surplus_cents", "refunded_cents",
        "unconfirmed_cents")}) for (day, provider), v in sorted(rows.items())]
    return PaymentSummary(utc_offset_minutes=utc_offset_minutes, days=days)


def to_csv(records: list[PaymentRecord]) -> str:
    """Every record as one CSV row (UTF-8 text; times in Unix ms, money in cents)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for r in records:
        values = r.model_dump()
        writer.writerow(["" if values.get(c) is None else values[c] for c in CSV_COLUMNS])
    return out.getvalue()
