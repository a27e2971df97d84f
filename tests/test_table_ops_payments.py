"""Table operations against real provider payments (SPEC §9 + §11): a move is refused outright while
a diner's money is in flight (phase in_flight); forced, the provider is asked first — the provider
order is closed and the move goes through, or, paid meanwhile, the payment completes and the move
is refused."""

from __future__ import annotations

import pytest

from erp_simulator.client import Refused
from tests.support.payments import PayingRestaurant



async def second_table(paying: PayingRestaurant) -> None:
    """Table T2 in the coordinator and the ERP."""
    shop = paying.shop
    url = f"{shop.base_url}/api/v1/admin/stores/{shop.store_id}/tables/T2"
    async with shop.admin.put(url, json={"name": "二号桌"}) as response:
        assert response.status == 200
    shop.db.put_table("T2", "二号桌")


async def test_money_in_flight_refuses_a_move_and_a_forced_move_closes_the_provider_order(paying: PayingRestaurant):
    """In flight: 409 PAYMENT_IN_FLIGHT (force allowed); forced: the provider order is closed, then the party moves."""
    await second_table(paying)
    diner = await paying.shop.diner()
    _, started, _ = await paying.claim_and_start(diner)
    waiter = paying.shop.waiter.client
    with pytest.raises(Refused) as refused:
        await waiter.move(paying.shop.order_id, "T2")
    assert refused.value.code == "PAYMENT_IN_FLIGHT" and refused.value.force_allowed is True
    moved = await waiter.move(paying.shop.order_id, "T2", force=True)
    assert moved["order"]["table_id"] == "T2" and moved["locks"] == []
    assert [r["reason"] for r in moved["refund_tasks"]] == ["payment_in_flight"]
    assert (await paying.sandbox.trade(started["out_trade_no"]))["state"] == "closed"
    assert (await paying.record(started["out_trade_no"]))["state"] == "closed"


async def test_a_forced_move_over_a_payment_made_meanwhile_completes_it_and_is_refused(paying: PayingRestaurant):
    """Paid at the provider but not yet notified: the forced move completes the payment and is refused, nothing moves."""
    await second_table(paying)
    diner = await paying.shop.diner()
    _, started, _ = await paying.claim_and_start(diner)
    await paying.sandbox.pay(started["out_trade_no"], outcome="paid", notify="lost")
    with pytest.raises(Refused) as refused:
        await paying.shop.waiter.client.move(paying.shop.order_id, "T2", force=True)
    assert refused.value.code == "PAYMENT_LOCKED" and refused.value.force_allowed is False
    order = await paying.paid_in_erp()
    assert order["table_id"] == "T1"


async def test_a_forced_move_over_a_share_in_flight_is_refused_and_leaves_the_trade_payable(paying: PayingRestaurant):
    """A diner's share in flight at the provider: the move is PAYMENT_IN_FLIGHT, never forceable; the forced try closes nothing."""
    await second_table(paying)
    diner = await paying.shop.diner()
    grant = await diner.checkout(share={"parts": 2, "part": 1})
    started = await diner.start_payment(grant["lock"]["token"], "wechatpay")
    waiter = paying.shop.waiter.client
    for force in (False, True):
        with pytest.raises(Refused) as refused:
            await waiter.move(paying.shop.order_id, "T2", force=force)
        assert refused.value.code == "PAYMENT_IN_FLIGHT" and refused.value.force_allowed is False
    assert (await paying.sandbox.trade(started["out_trade_no"]))["state"] != "closed"
    assert (await paying.record(started["out_trade_no"]))["state"] == "in_flight"
