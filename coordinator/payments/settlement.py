"""Money in: what happens when a provider says a trade is paid, failed or refunded.

One path for every source (a verified notification, the poller's query, the provider's answer to
a force or a cancel): ``pay_capture.lua`` decides completing / surplus / duplicate atomically, then
``deliver`` sends ``order.pay`` to the ERP. A delivery that cannot reach the ERP leaves the outbox
task queued (``outbox:<out_trade_no>``) for the worker of any process to retry with backoff.

Timeline of the outbox race the lease covers: process A captures (the task is leased to A for
``OUTBOX_LEASE_MS``) and sends order.pay; the ERP is slow; the lease lapses; process B's worker
claims the task and sends order.pay again. Both are safe: the ERP takes order.pay once per
payment_ref, and ``pay_confirm.lua`` confirms once (the second sees the record paid already).
"""

from __future__ import annotations

import json

import asyncio
import logging
from typing import Any, Callable

from coordinator.core.errors import ErpUnreachable, TablelockError
from coordinator.payments.ledger import PaymentLedger
from coordinator.payments.providers import PaymentNotification, RefundNotification
from coordinator.payments.records import PaymentRecord
from coordinator.realtime.erp_answers import ErpOrder

#: Whom the audit log names for an order stored from the ERP's answer to an RPC.
ERP_ANSWER = {"role": "system", "source": "erp_rpc"}

log = logging.getLogger(__name__)

#: The capturer's own first order.pay is leased this long before another process may retry it.
OUTBOX_LEASE_MS = 15_000
#: Backoff of order.pay retries while the ERP is unreachable: 1 s doubling to a minute.
OUTBOX_BACKOFF_MS = (1_000, 2_000, 4_000, 8_000, 15_000, 30_000, 60_000)


class Settlement:
    """Capture provider payments and confirm them to the ERP (through the outbox)."""

    def __init__(self, ledger: PaymentLedger, rpc: Callable[[], Any]) -> None:
        self.ledger = ledger
        self.engine = ledger.engine
        self._rpc = rpc  # the process's ERP RPC router (set up after us: looked up when needed)
        self._tasks: set[asyncio.Task[Any]] = set()

    async def paid(self, store_id: str, out_trade_no: str, *, provider: str, transaction_id: str,
                   amount_cents: int, paid_at: int | None, source: str, wait: bool = False) -> dict[str, Any]:
        """Record money received; a completing payment is delivered to the ERP (awaited if ``wait``)."""
        reply = await self.ledger.capture(
            store_id, out_trade_no, provider=provider, transaction_id=transaction_id,
            amount_cents=amount_cents, paid_at=paid_at, source=source, lease_ms=OUTBOX_LEASE_MS,
        )
        log.info("payment %s/%s captured from %s: %s", store_id, out_trade_no, source, reply["outcome"])
        if reply["outcome"] == "completing":
            if wait:
                await self.deliver(store_id, out_trade_no)
            else:
                self._spawn(self.deliver(store_id, out_trade_no))
        return reply

    async def notification(self, store_id: str, note: PaymentNotification | RefundNotification) -> None:
        """Apply one verified notification (idempotent: replays change nothing)."""
        if isinstance(note, RefundNotification):
            await self.refund_state(store_id, note.out_trade_no, note.status, note.succeeded_at)
            return
        if note.status == "paid":
            await self.paid(store_id, note.out_trade_no, provider=note.provider,
                            transaction_id=note.transaction_id, amount_cents=note.amount_cents,
                            paid_at=note.paid_at, source="notify")
        elif note.status in ("failed", "closed"):
            record = await self.ledger.get(store_id, note.out_trade_no)
            if record is not None:
                await self.ledger.end(store_id, record, state=note.status, end_lock=True)

    async def deliver(self, store_id: str, out_trade_no: str) -> str:
        """Send order.pay for a completing payment once; returns the record's state afterwards."""
        record = await self.ledger.get(store_id, out_trade_no)
        if record is None or record.state != "completing":
            return record.state if record else "missing"
        config = await self.engine.config(store_id)
        params = {"order_id": record.order_id, "version": record.version, "amount_cents": record.received_cents,
                  "payment_ref": record.payment_ref, "fence": record.fence}
        if record.share:  # a partial order.pay: the ERP records one share (docs/protocol.md A13)
            params["share"] = json.loads(record.share)
        rpc = self._rpc()
        try:
            if rpc is None:
                raise ErpUnreachable()
            result = await rpc.call(store_id, "order.pay", params, config.erp_rpc_timeout_ms)
            # A share (SPEC §10) leaves the order open until the shares reach its total.
            confirmed = ("paid", "open") if record.share else ("paid",)
            if result.get("status") not in confirmed or result.get("order_id") != record.order_id:
                raise ErpUnreachable(details=[{"reason": "bad_reply", "method": "order.pay"}])
        except ErpUnreachable as exc:
            # Unknown outcome (no master, timeout, an error we cannot read): the money is here,
            # so retry until the ERP answers; order.pay is idempotent on payment_ref at the ERP.
            await self._retry_later(store_id, record, getattr(exc, "erp_code", exc.code))
            return "completing"
        except TablelockError as refused:
            code = getattr(refused, "erp_code", refused.code)
            reply = await self.ledger.confirm(store_id, record, paid=False, code=code)
            if code == "ORDER_CLOSED":
                await self._keep_erps_copy(store_id, record.order_id, config.erp_rpc_timeout_ms)
            return reply["state"]
        reply = await self.ledger.confirm(store_id, record, paid=True)
        if not record.share and result.get("version") != record.version:
            await self._keep_erps_version(store_id, result)
        return reply["state"]

    async def _keep_erps_version(self, store_id: str, result: dict[str, Any]) -> None:
        """Store the ERP's answer to order.pay when it recorded the payment as a new version.

        The rule (docs/protocol.md A7.4): the ERP answers with the order as it stored it; the
        coordinator keeps that version. ``pay_confirm`` marked the version it paid; the ERP's newer
        version follows as ``order.updated``. An older one is the ERP's mistake: logged, not stored.
        """
        try:
            order = ErpOrder.model_validate(result)
            await self.engine.put_order(store_id, order.order_in(), ERP_ANSWER, erp_answer=True)
        except (TablelockError, ValueError) as exc:
            log.warning("order.pay answer for %s/%s not stored: %s", store_id, result.get("order_id"), exc)

    async def _keep_erps_copy(self, store_id: str, order_id: str, timeout_ms: int) -> None:
        """After ``ORDER_CLOSED`` to order.pay, store the ERP's closed order (SPEC §12).

        The coordinator may hold the order open only because a failover lost its "paid": the ERP's
        answer closes it again, so it is never shown payable. The money stays a surplus: the ERP's
        order does not say it was paid with *this* payment_ref (only order.pay's idempotent
        answer does), so it may have been paid another way (cash).
        """
        rpc = self._rpc()
        try:
            if rpc is None:
                raise ErpUnreachable()
            result = await rpc.call(store_id, "order.fetch", {"order_id": order_id}, timeout_ms)
            order = ErpOrder.model_validate(result)
            if order.order_id != order_id:
                raise ErpUnreachable(details=[{"reason": "bad_reply", "method": "order.fetch"}])
            await self.engine.put_order(store_id, order.order_in(), ERP_ANSWER, erp_answer=True)
        except TablelockError as exc:
            # The next push, pull or checkout of the order brings the ERP's copy anyway.
            log.warning("order.fetch of %s/%s after ORDER_CLOSED failed: %s", store_id, order_id, exc.code)

    async def _retry_later(self, store_id: str, record: PaymentRecord, code: str) -> None:
        attempts = record.erp_attempts + 1
        delay = OUTBOX_BACKOFF_MS[min(attempts - 1, len(OUTBOX_BACKOFF_MS) - 1)]
        await self.ledger.update(store_id, record.out_trade_no, erp_attempts=attempts, erp_last_error=code)
        await self.ledger.schedule(store_id, f"outbox:{record.out_trade_no}", await self.engine.now() + delay)
        log.warning("order.pay for %s/%s not confirmed (%s, attempt %d): retry in %d ms",
                    store_id, record.out_trade_no, code, attempts, delay)

    async def refund_state(self, store_id: str, out_trade_no: str, state: str, at: int | None) -> bool:
        """Record a surplus refund's new state; emits payment.refund_updated when it changed."""
        record = await self.ledger.get(store_id, out_trade_no)
        if record is None or record.state != "surplus" or record.refund_state == state:
            return False
        await self.ledger.update(store_id, out_trade_no, refund_state=state,
                                 refunded_at=at if state == "succeeded" else None)
        await self.engine.emit(
            store_id, "payment.refund_updated",
            {"out_trade_no": out_trade_no, "provider": record.provider, "refund_no": record.refund_no,
             "refund_state": state, "refund_cents": record.refund_cents},
            {"role": "system", "source": "payments"},
            table_id=record.table_id or "", order_id=record.order_id or "",
        )
        return True

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # The outbox task stays queued: the worker retries after the lease.
            log.warning("order.pay delivery failed: %r", task.exception())

    async def aclose(self) -> None:
        """Cancel deliveries in progress (their outbox tasks stay queued for the next process)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
