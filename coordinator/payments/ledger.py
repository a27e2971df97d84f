"""PaymentLedger: the payment records in Redis, changed only through the ``pay_*.lua`` scripts.

Each script is one atomic step over the order, its locks, the payment record and the store's task
queue, on the Redis server clock, with its events in cause order (see each script's header).
"""

from __future__ import annotations

from typing import Any

from coordinator.core.errors import BY_CODE, LockLost, TablelockError
from coordinator.payments.records import PaymentRecord
from coordinator.store import keys
from coordinator.store.engine import LockEngine

SYSTEM = {"role": "system", "source": "payments"}
#: The in-flight lock outlives the provider order by this much, so a payment made in the
#: provider's last second still finds its lock (SPEC §9 "plus a margin").
LOCK_MARGIN_MS = 30_000
#: The first provider query of an in-flight payment whose notification has not come.
FIRST_POLL_MS = 20_000


class TradeExists(Exception):
    """The drawn out_trade_no is taken in this store: draw another."""


class PaymentLedger:
    """Payment records of one Redis (single node or cluster), beside the lock engine."""

    def __init__(self, engine: LockEngine, *, first_poll_ms: int = FIRST_POLL_MS) -> None:
        self.engine = engine
        self.first_poll_ms = first_poll_ms
        self.redis = engine.redis

    @staticmethod
    def _raise(reply: dict[str, Any]) -> None:
        code = reply.get("err")
        if code is None:
            return
        if code == "TRADE_EXISTS":
            raise TradeExists()
        if code == "PAYMENT_LOCKED":
            raise LockLost()  # the lock is completing: this session's start is over either way
        cls: type[TablelockError] = BY_CODE[code]
        raise cls(order=reply.get("order"))

    async def start(self, store_id: str, order_id: str, actor: dict[str, Any], *, token: str,
                    out_trade_no: str, provider: str) -> dict[str, Any]:
        """Put the claimed lock in flight and open the record (pay_start.lua)."""
        reply = await self.engine.run(
            "pay_start", store_id,
            [keys.order(store_id, order_id), keys.locks(store_id, order_id), keys.config(store_id),
             keys.payment(store_id, out_trade_no), keys.payments(store_id), keys.payment_tasks(store_id)],
            [order_id, token, out_trade_no, provider, self.engine.defaults_json, LOCK_MARGIN_MS, self.first_poll_ms],
            actor,
        )
        self._raise(reply)
        return reply

    async def capture(self, store_id: str, out_trade_no: str, *, provider: str, transaction_id: str,
                      amount_cents: int, paid_at: int | None, source: str, lease_ms: int,
                      order_id: str = "") -> dict[str, Any]:
        """Record money received for a trade: completing, surplus or duplicate (pay_capture.lua)."""
        record = await self.get(store_id, out_trade_no)
        order_id = (record.order_id if record and record.order_id else order_id) or "_"
        reply = await self.engine.run(
            "pay_capture", store_id,
            [keys.order(store_id, order_id), keys.locks(store_id, order_id), keys.config(store_id),
             keys.payment(store_id, out_trade_no), keys.payment_tx(store_id, provider, transaction_id),
             keys.payment_tasks(store_id), keys.payment_refs(store_id), keys.payments(store_id)],
            [out_trade_no, provider, transaction_id, amount_cents, "" if paid_at is None else paid_at,
             source, self.engine.defaults_json, lease_ms, "" if order_id == "_" else order_id], SYSTEM,
        )
        self._raise(reply)
        return reply

    async def confirm(self, store_id: str, record: PaymentRecord, *, paid: bool, code: str = "") -> dict[str, Any]:
        """End a completing payment as the ERP answered order.pay (pay_confirm.lua)."""
        order_id = record.order_id or "_"
        reply = await self.engine.run(
            "pay_confirm", store_id,
            [keys.order(store_id, order_id), keys.locks(store_id, order_id), keys.open_orders(store_id),
             keys.payment(store_id, record.out_trade_no), keys.payment_tasks(store_id), keys.config(store_id)],
            [record.out_trade_no, "paid" if paid else "refused", code, self.engine.defaults_json], SYSTEM,
        )
        self._raise(reply)
        return reply

    async def end(self, store_id: str, record: PaymentRecord, *, state: str, end_lock: bool,
                  reason: str = "payment_failed", actor: dict[str, Any] = SYSTEM) -> dict[str, Any]:
        """End an in-flight trade that took no money (pay_end.lua)."""
        order_id = record.order_id or "_"
        reply = await self.engine.run(
            "pay_end", store_id,
            [keys.locks(store_id, order_id), keys.payment(store_id, record.out_trade_no),
             keys.payment_tasks(store_id)],
            [record.out_trade_no, state, "end" if end_lock else "keep", reason], actor,
        )
        self._raise(reply)
        return reply

    async def claim(self, store_id: str, *, limit: int, lease_ms: int) -> list[str]:
        """Lease up to ``limit`` due tasks of the store (pay_claim.lua)."""
        reply = await self.engine.run("pay_claim", store_id, [keys.payment_tasks(store_id)], [limit, lease_ms], SYSTEM)
        return list(reply["tasks"])

    async def schedule(self, store_id: str, task: str, due_ms: int) -> None:
        """Set when ``task`` runs next (a retry with backoff)."""
        await self.redis.zadd(keys.payment_tasks(store_id), {task: due_ms})

    async def done(self, store_id: str, task: str) -> None:
        """Drop a finished task."""
        await self.redis.zrem(keys.payment_tasks(store_id), task)

    async def get(self, store_id: str, out_trade_no: str) -> PaymentRecord | None:
        """The record of one trade, or None."""
        raw = await self.redis.hgetall(keys.payment(store_id, out_trade_no))
        return PaymentRecord.from_hash(raw) if raw else None

    async def update(self, store_id: str, out_trade_no: str, **fields: Any) -> None:
        """Set bookkeeping fields no lock depends on (pay_url, refund progress, ERP attempts)."""
        await self.redis.hset(keys.payment(store_id, out_trade_no),
                              mapping={k: ("" if v is None else v) for k, v in fields.items()})

    async def list(self, store_id: str, *, since_ms: int = 0, until_ms: int | None = None) -> list[PaymentRecord]:
        """Every record created in [since, until], oldest first."""
        numbers = await self.redis.zrangebyscore(keys.payments(store_id), since_ms,
                                                 "+inf" if until_ms is None else until_ms)
        if not numbers:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for number in numbers:
            pipe.hgetall(keys.payment(store_id, number.decode()))
        return [PaymentRecord.from_hash(raw) for raw in await pipe.execute() if raw]
