"""Trades, refunds and switches the sandbox keeps (in memory, mirrored to ``trades.json``)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Provider = Literal["wechatpay", "alipay"]
#: The sandbox's own words; each wire module maps them to the provider's (NOTPAY, TRADE_SUCCESS…).
TradeState = Literal["pending", "paid", "failed", "closed"]
NotifyMode = Literal["normal", "duplicate", "late", "lost"]
ApiMode = Literal["normal", "drop", "503", "hang"]
Outcome = Literal["paid", "failed"]


@dataclass
class RefundRecord:
    """One refund of a trade."""

    out_refund_no: str
    refund_id: str
    amount_cents: int
    state: Literal["PROCESSING", "SUCCESS"]
    created_ms: int
    reason: str
    notify_url: str | None
    success_ms: int | None = None


@dataclass
class Trade:
    """One provider order as the provider sees it."""

    provider: Provider
    out_trade_no: str
    amount_cents: int
    description: str
    notify_url: str
    return_url: str
    expires_at_ms: int
    created_ms: int
    token: str
    fingerprint: str
    trade_type: str = ""
    state: TradeState = "pending"
    transaction_id: str | None = None
    paid_at_ms: int | None = None
    closed_ms: int | None = None
    failed_attempts: int = 0
    refunds: dict[str, RefundRecord] = field(default_factory=dict)
    deliveries: list[dict[str, Any]] = field(default_factory=list)

    def refunded_cents(self) -> int:
        """Total of all refunds asked for, processing or done."""
        return sum(r.amount_cents for r in self.refunds.values())

    def public(self) -> dict[str, Any]:
        """The trade as the control API shows it to tests."""
        return dataclasses.asdict(self)


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class Switches(_Body):
    """Process defaults, set over ``POST /sandbox/control``."""

    mode: ApiMode = "normal"
    outcome: Outcome = "paid"
    notify: NotifyMode = "normal"
    delay_ms: Annotated[int, Field(ge=0, le=600_000)] = 2000
    pay_delay_ms: Annotated[int, Field(ge=0, le=600_000)] = 0
    refund_delay_ms: Annotated[int, Field(ge=0, le=600_000)] = 500


class SwitchUpdate(_Body):
    """A partial update of the switches."""

    mode: ApiMode | None = None
    outcome: Outcome | None = None
    notify: NotifyMode | None = None
    delay_ms: Annotated[int, Field(ge=0, le=600_000)] | None = None
    pay_delay_ms: Annotated[int, Field(ge=0, le=600_000)] | None = None
    refund_delay_ms: Annotated[int, Field(ge=0, le=600_000)] | None = None


class PayRequest(_Body):
    """``POST /sandbox/trades/{no}/pay``: act as the diner; omitted fields take the switches."""

    outcome: Outcome | None = None
    notify: NotifyMode | None = None
    #: For ``notify: "late"``: how long after the payment the notification is sent.
    delay_ms: Annotated[int, Field(ge=0, le=600_000)] | None = None
    #: Slow payer: how long the diner takes before the payment happens.
    pay_delay_ms: Annotated[int, Field(ge=0, le=600_000)] | None = None


class TradeBook:
    """Trades by merchant trade number and by page token, saved after every change."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self.by_no: dict[str, Trade] = {}
        self.by_token: dict[str, Trade] = {}
        if path is not None and path.exists():
            for raw in json.loads(path.read_text()):
                raw["refunds"] = {k: RefundRecord(**v) for k, v in raw["refunds"].items()}
                self.add(Trade(**raw), save=False)

    def add(self, trade: Trade, *, save: bool = True) -> None:
        """Register a new trade."""
        self.by_no[trade.out_trade_no] = trade
        self.by_token[trade.token] = trade
        if save:
            self.save()

    def save(self) -> None:
        """Write every trade to the data dir (atomic rename, so a crash leaves the old file)."""
        if self._path is None:
            return
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps([t.public() for t in self.by_no.values()]))
        os.replace(tmp, self._path)
