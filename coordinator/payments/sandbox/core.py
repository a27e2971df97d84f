"""What the sandbox provider does with trades: pay, fail, expire, refund, and notify the merchant."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from .keys import SandboxKeys
from .state import (
    NotifyMode,
    Outcome,
    PayRequest,
    RefundRecord,
    Switches,
    Trade,
    TradeBook,
)

log = logging.getLogger(__name__)

#: Delivery attempts per notification and the first back-off; real providers retry for hours
#: (WeChat: 15 s, 15 s, 30 s, 3 min …), compressed here so tests see retries in a second or two.
MAX_ATTEMPTS = 5
FIRST_BACKOFF_S = 0.2
TICK_S = 0.1


@dataclass(frozen=True)
class Delivery:
    """One notification to post: where, with what, and how to read the merchant's ack."""

    url: str
    headers: dict[str, str]
    body: bytes
    accepted: Callable[[int, bytes], bool]


class Wire(Protocol):
    """A provider's notification formats."""

    def payment_notification(self, trade: Trade) -> Delivery | None:
        """Build the notification for a trade's new state (None when the provider sends none)."""
        ...

    def refund_notification(self, trade: Trade, refund: RefundRecord) -> Delivery | None:
        """Build the notification for a refund that finished (None when the provider sends none)."""
        ...


def now_ms() -> int:
    """Wall clock in Unix milliseconds."""
    return int(time.time() * 1000)


class Sandbox:
    """The sandbox's state and behaviour, owned by the app and handed to every handler."""

    def __init__(self, keys: SandboxKeys, book: TradeBook, control_token: str) -> None:
        self.keys = keys
        self.book = book
        self.control_token = control_token
        self.switches = Switches()
        self.base_url = ""
        self.wires: dict[str, Wire] = {}
        #: Set while the API is reachable; "hang" handlers wait on it (bounded) instead of sleeping.
        self.reachable = asyncio.Event()
        self.reachable.set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._session: aiohttp.ClientSession | None = None

    # -- task ownership ---------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background, keeping a reference until it finishes."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        """Open the notification session and start the expiry/refund ticker."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        self.spawn(self._ticker())

    async def stop(self) -> None:
        """Cancel every background task, then close the session."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        self.book.save()

    def new_id(self, prefix: str, digits: int) -> str:
        """Return a provider-shaped numeric id."""
        return prefix + "".join(secrets.choice("0123456789") for _ in range(digits))

    # -- the diner ----------------------------------------------------------------------------

    def pay(self, trade: Trade, req: PayRequest) -> bool:
        """Act as the diner; return whether the outcome was applied now (False: scheduled)."""
        sw = self.switches
        outcome, notify = req.outcome or sw.outcome, req.notify or sw.notify
        delay = sw.delay_ms if req.delay_ms is None else req.delay_ms
        pay_delay = sw.pay_delay_ms if req.pay_delay_ms is None else req.pay_delay_ms
        if pay_delay > 0:
            self.spawn(self._pay_later(trade, outcome, notify, delay, pay_delay))
            return False
        self.settle(trade, outcome, notify, delay)
        return True

    async def _pay_later(self, trade: Trade, outcome: Outcome, notify: NotifyMode, delay: int, wait: int) -> None:
        await asyncio.sleep(wait / 1000)
        self.settle(trade, outcome, notify, delay)

    def settle(self, trade: Trade, outcome: Outcome, notify: NotifyMode, delay_ms: int) -> None:
        """Apply the payer's outcome to a pending, unexpired trade and send the notification."""
        self.expire(trade)
        if trade.state != "pending":
            log.info("trade %s is %s; the payment is refused", trade.out_trade_no, trade.state)
            return
        if outcome == "failed":
            trade.failed_attempts += 1
            # WeChat ends the trade in PAYERROR; Alipay keeps waiting for the buyer until time_expire.
            if trade.provider == "wechatpay":
                trade.state = "failed"
            self.book.save()
            return
        trade.state = "paid"
        trade.paid_at_ms = now_ms()
        # Alipay numbers the trade when the phone opens it; WeChat when the payment succeeds.
        trade.transaction_id = trade.transaction_id or self.new_id("4200", 24)
        self.book.save()
        delivery = self.wires[trade.provider].payment_notification(trade)
        if delivery is not None:
            self.spawn(self._notify(trade, delivery, notify, delay_ms))

    # -- time ---------------------------------------------------------------------------------

    def expire(self, trade: Trade) -> None:
        """Close a trade still waiting for the buyer once its ``time_expire`` has passed."""
        if trade.state == "pending" and now_ms() >= trade.expires_at_ms:
            self.close(trade)

    def close(self, trade: Trade) -> None:
        """Close an unpaid trade (and, for Alipay, notify TRADE_CLOSED as its default does)."""
        trade.state = "closed"
        trade.closed_ms = now_ms()
        self.book.save()
        if trade.provider == "alipay":
            delivery = self.wires["alipay"].payment_notification(trade)
            if delivery is not None:
                self.spawn(self._notify(trade, delivery, "normal", 0))

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            for trade in list(self.book.by_no.values()):
                self.expire(trade)
                for refund in trade.refunds.values():
                    if refund.state == "PROCESSING" and now_ms() >= refund.created_ms + self.switches.refund_delay_ms:
                        self.finish_refund(trade, refund)

    def finish_refund(self, trade: Trade, refund: RefundRecord) -> None:
        """Mark a refund successful and send its notification where the provider has one."""
        refund.state = "SUCCESS"
        refund.success_ms = now_ms()
        self.book.save()
        delivery = self.wires[trade.provider].refund_notification(trade, refund)
        if delivery is not None:
            self.spawn(self._notify(trade, delivery, "normal", 0))

    # -- notifications ------------------------------------------------------------------------

    async def _notify(self, trade: Trade, delivery: Delivery, mode: NotifyMode, delay_ms: int) -> None:
        if mode == "lost":
            trade.deliveries.append({"at": now_ms(), "lost": True})
            return
        if mode == "late":
            await asyncio.sleep(delay_ms / 1000)
        await self._deliver(trade, delivery)
        if mode == "duplicate":
            await self._deliver(trade, delivery)

    async def _deliver(self, trade: Trade, d: Delivery) -> None:
        """Post one notification until the merchant acknowledges it, at most MAX_ATTEMPTS times."""
        assert self._session is not None
        backoff = FIRST_BACKOFF_S
        for attempt in range(1, MAX_ATTEMPTS + 1):
            status, ok = 0, False
            try:
                async with self._session.post(d.url, data=d.body, headers=d.headers, allow_redirects=False) as r:
                    status = r.status
                    ok = d.accepted(status, await r.content.read(4096))
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                log.info("notify %s attempt %d: %s", trade.out_trade_no, attempt, type(exc).__name__)
            trade.deliveries.append({"at": now_ms(), "attempt": attempt, "status": status, "ok": ok})
            if ok:
                return
            await asyncio.sleep(backoff)
            backoff *= 2


SANDBOX = web.AppKey("sandbox", Sandbox)
