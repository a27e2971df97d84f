"""Payments of one coordinator process: built once, in order, typed; the worker task kept and stopped."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable

from coordinator.payments.ledger import PaymentLedger
from coordinator.payments.service import PaymentService
from coordinator.payments.settlement import Settlement
from coordinator.payments.vault import ProviderVault
from coordinator.payments.worker import PaymentWorker
from coordinator.store.engine import LockEngine


@dataclass
class Payments:
    """The payment objects a process shares between its handlers."""

    ledger: PaymentLedger
    vault: ProviderVault
    settlement: Settlement
    service: PaymentService
    worker: PaymentWorker
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    @classmethod
    def build(cls, engine: LockEngine, *, secret_key: str, public_url: str, rpc: Callable[[], Any],
              first_poll_ms: int, provider_timeout: float) -> Payments:
        """Wire ledger → vault → settlement → service and worker."""
        ledger = PaymentLedger(engine, first_poll_ms=first_poll_ms)
        vault = ProviderVault(engine.redis, secret_key, http_timeout=provider_timeout)
        settlement = Settlement(ledger, rpc)
        service = PaymentService(ledger, vault, settlement, public_url=public_url)
        return cls(ledger, vault, settlement, service, PaymentWorker(ledger, vault, settlement))

    def start(self) -> None:
        """Start the task worker (outbox, poller, refunds)."""
        self._task = asyncio.get_running_loop().create_task(self.worker.run(), name="payment-worker")

    async def aclose(self) -> None:
        """Stop the worker and deliveries, close the provider sessions."""
        if self._task is not None:
            self.worker.stop()
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.settlement.aclose()
        await self.vault.aclose()
