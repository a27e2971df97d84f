"""The last share's payment when the ERP's own copy closes the order first (issue 13, SPEC §10,
invariants 9 and 10): the ERP books the share (reaching the total, so it marks the order paid),
another diner's checkout pulls that paid order (``order.fetch``, put_order ends the completing share
lock: order_closed) and only then does the ERP's answer to ``order.pay`` land (pay_confirm.lua).
The steps are driven one by one: the master books the share and holds its answer until told.
A share that no longer fits the order the ERP's copy closed becomes a surplus instead (script level)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from coordinator.core.models import OrderIn
from coordinator.core.shares import ShareKind, ShareSpec
from coordinator.payments.ledger import PaymentLedger
from coordinator.store import keys
from coordinator.store.redis_conn import AnyRedis
from coordinator.store.share_book import ShareBook
from erp_simulator.shares import ShareLedger
from h5_client.client import H5Error
from tests.support.app import make_engine, order_body
from tests.support.payments import PayingRestaurant
from tests.support.restaurant import FIRST_TOTAL, eventually

HALF = FIRST_TOTAL // 2


async def _order(paying: PayingRestaurant) -> dict[str, Any]:
    order, _ = await paying.services.engine.get_order(paying.shop.store_id, paying.shop.order_id)
    return order


async def _events(paying: PayingRestaurant) -> list[dict[str, Any]]:
    redis = paying.services.engine.redis
    return [json.loads(f[b"e"]) for _, f in await redis.xrange(keys.events(paying.shop.store_id))]


def _hold_share_answers(paying: PayingRestaurant) -> tuple[asyncio.Event, asyncio.Event]:
    """The master books each share's ``order.pay`` at once but answers only after ``release`` is set."""
    rpc = paying.shop.master.rpc
    booked, release = asyncio.Event(), asyncio.Event()
    answer = rpc.answer

    async def held(message: dict[str, Any]) -> dict[str, Any] | None:
        reply = await answer(message)
        if message.get("method") == "order.pay" and (message.get("params") or {}).get("share") is not None:
            booked.set()
            await release.wait()
        return reply

    rpc.answer = held  # type: ignore[method-assign]
    return booked, release


async def _pay_share(paying: PayingRestaurant, part: int) -> dict[str, Any]:
    """A new phone takes part ``part`` of 2 and pays it at the sandbox; the started payment."""
    phone = await paying.shop.diner()
    grant = await phone.checkout({"parts": 2, "part": part})
    started = await phone.start_payment(grant["lock"]["token"])
    await paying.sandbox.pay(started["out_trade_no"], outcome="paid", notify="normal")
    return started


async def test_last_share_confirmed_after_a_fetch_closed_the_order_joins_the_paid_shares(
        paying: PayingRestaurant) -> None:
    """The last share's payment confirmed after an order.fetch stored the ERP's paid order joins the paid shares: paid_cents = total, share.paid emitted, record paid."""
    await _pay_share(paying, 1)
    await eventually(lambda: _paid_cents(paying, HALF), timeout=15, what="the first share paid")
    booked, release = _hold_share_answers(paying)
    last = await _pay_share(paying, 2)
    await asyncio.wait_for(booked.wait(), 15)
    assert paying.shop.erp_order()["status"] == "paid"
    # Another diner's checkout pulls the ERP's paid order: the completing share lock ends (order_closed).
    try:
        await (await paying.shop.diner()).checkout({"rest": True})
        raise AssertionError("a checkout of an order the ERP has paid must be refused")
    except H5Error as refused:
        assert refused.status == 409, refused
    closed = await _order(paying)
    assert closed["status"] == "paid" and closed["paid_cents"] == HALF
    release.set()
    record = await eventually(lambda: _record_state(paying, last["out_trade_no"], "paid"), timeout=15,
                              what="the last share's payment confirmed")
    order = await _order(paying)
    assert order["status"] == "paid" and order["paid_cents"] == FIRST_TOTAL == ShareLedger(
        paying.shop.db).paid_cents(paying.shop.order_id)
    assert sorted(s["amount_cents"] for s in order["shares"]) == [HALF, FIRST_TOTAL - HALF]
    assert json.loads(record["share"]) in [{k: v for k, v in s.items() if k not in ("fence", "paid_at")}
                                           for s in order["shares"]]
    names = [e["name"] for e in await _events(paying)]
    assert names.count("share.paid") == 2 and names.count("order.paid") == 0
    assert "payment.surplus" not in names


async def _paid_cents(paying: PayingRestaurant, cents: int) -> bool:
    return (await _order(paying)).get("paid_cents") == cents


async def _record_state(paying: PayingRestaurant, out_trade_no: str, state: str) -> dict[str, Any] | None:
    record = await paying.record(out_trade_no)
    return record if record["state"] == state else None


CASHIER = {"role": "erp", "terminal_id": "TA", "name": "收银台"}
DINER = {"role": "h5", "session_id": "d1"}


async def _completing_share(redis_client: AnyRedis, uid: str) -> tuple[PaymentLedger, dict[str, Any]]:
    """Order o1 (3,800) with diner d1's share of line l1 (1,800) captured (completing), as pay_capture.lua leaves it."""
    engine = make_engine(redis_client)
    await engine.put_order(uid, OrderIn.model_validate(order_body()), CASHIER)
    book = ShareBook(engine)
    lock, _ = await book.claim(uid, "o1", DINER, ShareSpec(ShareKind.LINES, line_ids=("l1",)))
    await book.pay(uid, "o1", DINER, token=lock["token"], amount_cents=1800, version=1,
                   payment_ref="wechatpay:tx-1", mode="begin", window_ms=60_000)
    await redis_client.hset(keys.payment(uid, "TL1"), mapping={
        "out_trade_no": "TL1", "provider": "wechatpay", "store_id": uid, "order_id": "o1", "table_id": "T1",
        "version": 1, "fence": lock["fence"], "amount_cents": 1800, "received_cents": 1800, "state": "completing",
        "lock_token": lock["token"], "payment_ref": "wechatpay:tx-1", "transaction_id": "tx-1",
        "share": json.dumps(lock["share"])})
    return PaymentLedger(engine), lock


@pytest.mark.parametrize("status,total", [("paid", 1000), ("cancelled", 3800)])
async def test_a_late_share_that_no_longer_fits_the_closed_order_becomes_a_surplus(redis_client, uid, status, total):
    """The ERP's copy closed the order cancelled, or paid at a total below the share: the confirmed share is a surplus with a refund task, never a paid share."""
    ledger, _ = await _completing_share(redis_client, uid)
    items = [{"line_id": "l9", "sku": "x", "name": "x", "qty": 1, "unit_price_cents": total, "source": "erp"}]
    closed = order_body(version=2, status=status, items=items)
    await ledger.engine.put_order(uid, OrderIn.model_validate(closed), CASHIER, erp_answer=True)
    record = await ledger.get(uid, "TL1")
    assert record is not None
    assert (await ledger.confirm(uid, record, paid=True))["state"] == "surplus"
    after = await ledger.get(uid, "TL1")
    assert after is not None and (after.state, after.surplus_reason, after.refund_cents) == ("surplus", "order_closed", 1800)
    order, locks = await ledger.engine.get_order(uid, "o1")
    assert order["status"] == status and not order.get("paid_cents") and locks == []


async def test_a_share_confirmed_on_an_order_still_open_without_its_lock_joins_and_pays(redis_client, uid):
    """A confirmed share whose lock is gone while the order is open joins the paid shares from its record, never pays the whole order at the share's amount (the record, not the lock, carries the share)."""
    ledger, lock = await _completing_share(redis_client, uid)
    await redis_client.hdel(keys.locks(uid, "o1"), f"share:{lock['fence']}")
    record = await ledger.get(uid, "TL1")
    assert record is not None and (await ledger.confirm(uid, record, paid=True))["state"] == "paid"
    order, _ = await ledger.engine.get_order(uid, "o1")
    assert order["status"] == "open" and order["paid_cents"] == 1800
    assert [(s["line_ids"], s["fence"]) for s in order["shares"]] == [(["l1"], lock["fence"])]
