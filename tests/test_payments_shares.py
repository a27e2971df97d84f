"""Split-bill shares paid through the provider flow (SPEC §9 + §10) end to end: phones, the sandbox
provider, verified notifications, the outbox's partial ``order.pay {share}`` to the ERP simulator."""

from __future__ import annotations

import asyncio
import json

from erp_simulator.shares import ShareLedger
from tests.support.payments import PayingRestaurant
from tests.support.restaurant import FIRST_TOTAL, eventually


async def _coordinator_order(paying: PayingRestaurant) -> dict:
    order, _ = await paying.services.engine.get_order(paying.shop.store_id, paying.shop.order_id)
    return order


async def test_two_phones_split_by_dishes_and_both_pay_through_the_provider(paying: PayingRestaurant) -> None:
    """Two diners each take their dishes and pay at the sandbox at once: two shares confirmed to the ERP, the order paid once."""
    lines = [item["line_id"] for item in paying.shop.erp_order()["items"]]
    phones = [await paying.shop.diner(), await paying.shop.diner()]
    grants = [await phone.checkout({"lines": [line]}) for phone, line in zip(phones, lines)]
    started = await asyncio.gather(*(phone.start_payment(g["lock"]["token"]) for phone, g in zip(phones, grants)))
    assert sum(s["amount_cents"] for s in started) == FIRST_TOTAL
    assert [s["amount_cents"] for s in started] == [g["lock"]["share"]["amount_cents"] for g in grants]
    await asyncio.gather(*(paying.sandbox.pay(s["out_trade_no"], outcome="paid", notify="normal") for s in started))
    erp = await paying.paid_in_erp()
    assert ShareLedger(paying.shop.db).paid_cents(erp["order_id"]) == FIRST_TOTAL
    order = await eventually(lambda: _paid(paying), timeout=15, what="order paid in the coordinator")
    assert order["paid_cents"] == FIRST_TOTAL and sorted(s["line_ids"][0] for s in order["shares"]) == sorted(lines)
    for s in started:
        record = await paying.record(s["out_trade_no"])
        assert record["state"] == "paid" and json.loads(record["share"])["kind"] == "lines"


async def _paid(paying: PayingRestaurant) -> dict | None:
    order = await _coordinator_order(paying)
    return order if order["status"] == "paid" else None


async def test_a_share_whose_provider_payment_fails_frees_its_part(paying: PayingRestaurant) -> None:
    """AA 2: one phone's payment fails at the provider; its part is free again and another phone pays it."""
    first, second = await paying.shop.diner(), await paying.shop.diner()
    grant = await first.checkout({"parts": 2, "part": 1})
    started = await first.start_payment(grant["lock"]["token"])
    await paying.sandbox.pay(started["out_trade_no"], outcome="failed")
    await eventually(lambda: _no_share_locks(paying), timeout=10, what="the failed share's lock ended")
    again = await second.checkout({"parts": 2, "part": 1})
    assert again["lock"]["share"]["amount_cents"] == FIRST_TOTAL // 2
    paid = await second.start_payment(again["lock"]["token"])
    await paying.sandbox.pay(paid["out_trade_no"], outcome="paid", notify="normal")
    order = await eventually(lambda: _partly_paid(paying), timeout=15, what="the share paid")
    assert order["status"] == "open" and order["paid_cents"] == FIRST_TOTAL // 2
    assert ShareLedger(paying.shop.db).paid_cents(paying.shop.order_id) == FIRST_TOTAL // 2


async def _no_share_locks(paying: PayingRestaurant) -> bool:
    _, locks = await paying.services.engine.get_order(paying.shop.store_id, paying.shop.order_id)
    return not any(l.get("share") for l in locks)


async def _partly_paid(paying: PayingRestaurant) -> dict | None:
    order = await _coordinator_order(paying)
    return order if order.get("paid_cents") else None
