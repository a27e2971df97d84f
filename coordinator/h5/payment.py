"""A diner's payment (SPEC §5 ``POST /h5/payments``, §2 "Completing").

``complete.lua`` checks the token, version and amount and marks the lock ``completing`` in one
step; the ERP then confirms ``order.pay`` within ``erp_rpc_timeout_ms``; ``finish.lua`` marks the
order paid, or releases the lock and records ``payment.rejected`` with the ERP's own code.
Idempotent on ``payment_ref``: ``complete.lua`` replays a paid ref, and ``tl:{s}:h5pay:...``
remembers which order a ref paid, and for which session, for a replay after the ERP's own push
closed the order; another session sending the same ref is not shown that order (invariant 11).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from typing import Any

from coordinator.core.errors import LockLost, OrderClosed, TablelockError
from coordinator.core.models import Order, PaymentRequest, StoreConfig
from coordinator.h5.erp_link import ErpLink
from coordinator.h5.table import Diner, open_order_ids, order_paying_with
from coordinator.realtime.erp_answers import unreachable
from coordinator.store import keys
from coordinator.store.engine import LockEngine, compact

log = logging.getLogger(__name__)

#: How long a paid payment_ref is replayed.
REPLAY_SECONDS = 86_400
#: The completing window of an H5 payment beyond the RPC deadline (SPEC §2 "completing").
COMPLETING_MARGIN_MS = 2_000


class Payments:
    """Completes diners' payments with the ERP's confirmation."""

    def __init__(self, redis: Any, engine: LockEngine, erp: ErpLink) -> None:
        self.redis = redis
        self.engine = engine
        self.erp = erp

    async def pay(self, diner: Diner, payment: PaymentRequest) -> Order:
        """Check the lock, have the ERP confirm order.pay, mark the order paid; replay a known payment_ref."""
        engine = self.engine
        record_key = keys.h5_payment(diner.store_id, diner.table_id, payment.payment_ref)
        raw = await self.redis.get(record_key)
        record = json.loads(raw) if raw is not None else None
        if record is not None and record.get("session_id") == diner.session_id:
            # this session's payment_ref already paid an order of this table: replay it
            paid, _ = await engine.get_order(diner.store_id, record["order_id"])
            return Order.model_validate(paid)

        order_id = await order_paying_with(engine, diner, payment.token)
        if order_id is None:
            # No live lock has this token (expired, forced away, legacy mode): let complete.lua say
            # so — and record it — against the order the diner is looking at.
            open_ids = await open_order_ids(engine, diner)
            if not open_ids:
                raise LockLost()
            order_id = open_ids[0]
        config = await engine.config(diner.store_id)
        begun = await engine.complete(
            diner.store_id, order_id, diner.holder(), token=payment.token, amount_cents=payment.amount_cents,
            version=payment.version, payment_ref=payment.payment_ref, mode="begin",
            window_ms=config.erp_rpc_timeout_ms + COMPLETING_MARGIN_MS,
        )
        if begun.get("paid"):
            order = begun["order"]  # a replay complete.lua recognised
        else:
            order = await self._confirm_with_erp(diner, config, order_id, payment, begun.get("lock"))
        await self.redis.set(record_key, compact({"order_id": order_id, "session_id": diner.session_id}),
                             ex=REPLAY_SECONDS)
        return Order.model_validate(order)

    async def _confirm_with_erp(
        self, diner: Diner, config: StoreConfig, order_id: str, payment: PaymentRequest,
        lock: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """Ask the ERP to take the payment, then end the completion as it answered."""
        engine = self.engine
        finish = functools.partial(
            engine.finish, diner.store_id, order_id, diner.holder(), token=payment.token,
            payment_ref=payment.payment_ref, amount_cents=payment.amount_cents,
        )
        params = {"order_id": order_id, "version": payment.version, "amount_cents": payment.amount_cents,
                  "payment_ref": payment.payment_ref, "fence": lock["fence"] if lock else None}
        try:
            result = await self.erp.ask(diner, config, "order.pay", params)
            confirmed = self.erp.order_answer(diner, "order.pay", result, order_id)
            if confirmed.status != "paid":
                raise unreachable("bad_reply", "order.pay", erp_status=confirmed.status)
        except TablelockError as refused:
            await asyncio.shield(finish(paid=False, code=refused.erp_code or refused.code))
            if refused.erp_code == "ORDER_CLOSED":
                closed = await self._closed_by_erp(diner, config, order_id)
                if closed is not None:
                    raise OrderClosed(order=closed, erp_code="ORDER_CLOSED") from refused
            raise
        except BaseException:  # Redis trouble, or the request cancelled: the payment did not complete here
            await asyncio.shield(finish(paid=False, code="ERP_UNREACHABLE"))
            raise
        try:
            return (await finish(paid=True))["order"]
        except OrderClosed:
            # The ERP's own push of the paid order may land first and close it: that is success.
            current, _ = await engine.get_order(diner.store_id, order_id)
            if current is None or current["status"] != "paid":
                raise
            return current

    async def _closed_by_erp(self, diner: Diner, config: StoreConfig, order_id: str) -> dict[str, Any] | None:
        """The ERP says the order is closed while we hold it open: fetch and store the ERP's copy.

        This is how a "paid" a failover lost comes back (SPEC §12): the ERP confirmed the payment, the
        coordinator's write of it was lost with the old primary, and the order looked open again.
        None when the ERP cannot be asked now or still has it open (the refusal stands as it was).
        """
        try:
            result = await self.erp.ask(diner, config, "order.fetch", {"order_id": order_id})
            fetched = self.erp.order_answer(diner, "order.fetch", result, order_id)
            if fetched.status == "open":
                return None
            return await self.erp.keep(diner, fetched)
        except TablelockError as exc:
            log.warning("order %s: the ERP says closed, and fetching it failed: %s", order_id, exc.code)
            return None
