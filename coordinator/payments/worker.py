"""The payment task worker every coordinator process runs: outbox, poller and refunds.

Tasks live in each store's ``tl:{s}:paytasks`` (member ``<kind>:<out_trade_no>``, score = due ms)
and are leased atomically (``pay_claim.lua``), so of several processes exactly one runs a due task;
a process that dies mid-task leaves it to the others when the lease lapses.

- ``outbox``: order.pay of a captured payment the ERP has not confirmed (settlement.deliver).
- ``poll``:   an in-flight trade whose notification may be lost: asked at the provider
  ``FIRST_POLL_MS`` after the start, again near the provider's expiry, then at it (closed there).
- ``refund``: a surplus's refund, asked and then followed to succeeded or failed.
"""

from __future__ import annotations

import asyncio
import logging

from coordinator.payments.ledger import PaymentLedger
from coordinator.payments.providers import ProviderError, ProviderRejected, ProviderUnreachable
from coordinator.payments.records import PaymentRecord
from coordinator.payments.settlement import Settlement
from coordinator.payments.vault import ProviderNotConfigured, ProviderVault
from coordinator.store import keys

log = logging.getLogger(__name__)

LEASE_MS = 30_000
BATCH = 20
#: A query "near expiry" happens this long before the provider order's end.
NEAR_EXPIRY_MS = 15_000
#: Provider unreachable, or a refund still processing: ask again after this long.
RETRY_MS = 5_000
REFUND_FOLLOW_MS = 3_000


class PaymentWorker:
    """Runs due payment tasks of every store, every ``interval`` seconds."""

    def __init__(self, ledger: PaymentLedger, vault: ProviderVault, settlement: Settlement, *,
                 interval: float = 0.25) -> None:
        self.ledger = ledger
        self.engine = ledger.engine
        self.vault = vault
        self.settlement = settlement
        self.interval = interval
        self._stop = asyncio.Event()

    async def run(self) -> None:
        """Work until ``stop``; a failing round is logged and the next one tries again."""
        # A stop flag besides cancellation: a cancel that lands inside a Redis call can be absorbed
        # by the client library, and the loop must end anyway.
        while not self._stop.is_set():
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away, say: the tasks stay queued
                log.warning("payment worker round failed: %r", exc)
            try:
                await asyncio.wait_for(self._stop.wait(), self.interval)
            except TimeoutError:
                pass

    def stop(self) -> None:
        """Ask ``run`` to return after the current round."""
        self._stop.set()

    async def round(self) -> int:
        """Run every task due now in every store; returns how many ran."""
        ran = 0
        for raw in await self.ledger.redis.smembers(keys.STORES):
            store_id = raw.decode()
            tasks = await self.ledger.claim(store_id, limit=BATCH, lease_ms=LEASE_MS)
            for task in tasks:
                await self.run_task(store_id, task)
                ran += 1
        return ran

    async def run_task(self, store_id: str, task: str) -> None:
        """Run one leased task; it re-schedules or removes itself."""
        kind, _, trade_no = task.partition(":")
        record = await self.ledger.get(store_id, trade_no)
        if record is None:
            await self.ledger.done(store_id, task)
            return
        try:
            if kind == "outbox":
                await self.settlement.deliver(store_id, trade_no)  # re-schedules itself while unreachable
            elif kind == "poll":
                await self._poll(store_id, task, record)
            elif kind == "refund":
                await self._refund(store_id, task, record)
            else:
                await self.ledger.done(store_id, task)
        except (ProviderUnreachable, ProviderNotConfigured) as exc:
            log.info("payment task %s/%s: provider not reachable (%r)", store_id, task, exc)
            await self.ledger.schedule(store_id, task, await self.engine.now() + RETRY_MS)

    async def _poll(self, store_id: str, task: str, record: PaymentRecord) -> None:
        if record.state != "in_flight":
            await self.ledger.done(store_id, task)
            return
        adapter = await self.vault.adapter(store_id, record.provider)
        answer = await adapter.query(record.out_trade_no)
        if answer.status == "paid" and answer.transaction_id:
            await self.settlement.paid(store_id, record.out_trade_no, provider=record.provider,
                                       transaction_id=answer.transaction_id, amount_cents=answer.amount_cents,
                                       paid_at=answer.paid_at, source="poll")
            return
        if answer.status in ("closed", "failed"):
            await self.ledger.end(store_id, record, state=answer.status, end_lock=True)
            return
        now = await self.engine.now()
        expires = record.provider_expires_at or now
        if now >= expires:
            try:
                await adapter.close(record.out_trade_no)
            except ProviderRejected:
                # Paid in the last instant (or closed already): the next query says which.
                await self.ledger.schedule(store_id, task, now)
                return
            await self.ledger.end(store_id, record, state="closed", end_lock=True)
            return
        near = expires - NEAR_EXPIRY_MS
        await self.ledger.schedule(store_id, task, near if now < near else expires)

    async def _refund(self, store_id: str, task: str, record: PaymentRecord) -> None:
        if record.state != "surplus" or record.refund_state not in ("pending", "processing"):
            await self.ledger.done(store_id, task)
            return
        adapter = await self.vault.adapter(store_id, record.provider)
        refund_no = record.refund_no or f"R{record.out_trade_no}"
        cents = record.refund_cents or record.received_cents or 0
        try:
            if record.refund_state == "pending":
                # Idempotent on refund_no: asking again after a lost answer refunds once.
                answer = await adapter.refund(record.out_trade_no, refund_no, cents,
                                              record.received_cents or cents, "多付退款 surplus payment")
            else:
                answer = await adapter.query_refund(refund_no, out_trade_no=record.out_trade_no)
        except ProviderRejected as exc:
            log.warning("refund %s/%s refused by %s: %s", store_id, refund_no, record.provider, exc.code)
            await self.settlement.refund_state(store_id, record.out_trade_no, "failed", None)
            await self.ledger.update(store_id, record.out_trade_no, refund_error=exc.code)
            await self.ledger.done(store_id, task)
            return
        except ProviderError:
            raise ProviderUnreachable() from None
        await self.settlement.refund_state(store_id, record.out_trade_no, answer.status, answer.succeeded_at)
        if answer.status == "processing":
            await self.ledger.schedule(store_id, task, await self.engine.now() + REFUND_FOLLOW_MS)
        else:
            await self.ledger.done(store_id, task)
