"""The last share's payment when the ERP's own copy closes the order first (issue 13, SPEC §10,
invariants 9 and 10): the ERP books the share (reaching the total, so it marks the order paid),
another diner's checkout pulls that paid order (``order.fetch``, put_order ends the completing share
lock: order_closed) and only then does the ERP's answer to ``order.pay`` land (pay_confirm.lua).
The steps are driven one by one: the master books the share and holds its answer until told."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from coordinator.store import keys
from erp_simulator.shares import ShareLedger
from h5_client.client import H5Error
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
