"""SPEC §12 "completions the ERP confirmed survive" (issue 16, leftover): after a failover lost the
coordinator's writes of a provider payment (the captured money, the ERP's confirmation, the paid
order), the order looks open and the trade in flight again in Redis while the ERP has it paid.
The coordinator must take the ERP's word and store the order closed again, never pay it twice:
the provider's notification arriving again goes through settlement, whose ``order.pay`` the ERP
answers idempotently on ``payment_ref`` (the paid order), or with ``ORDER_CLOSED`` (then the
coordinator fetches and stores the ERP's closed copy); a checkout pulls the ERP's paid copy.

The lost writes are simulated on purpose: the order's and the payment's keys are saved (DUMP)
right after the payment started and put back (RESTORE) after it completed, which is what a
promoted replica that never received them holds (tests/test_failover.py forces a real loss).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from coordinator.store import keys
from erp_simulator.errors import OrderClosed
from h5_client.client import H5Error
from tests.support.payments import PayingRestaurant, wechat_notification
from tests.support.restaurant import FIRST_TOTAL, eventually


async def _save(redis: Any, names: list[str]) -> dict[str, bytes | None]:
    return {name: await redis.dump(name) for name in names}


async def _lose_writes_since(redis: Any, saved: dict[str, bytes | None]) -> None:
    """Put the keys back as they were when saved: the writes since then are "lost with the old primary"."""
    for name, value in saved.items():
        await redis.delete(name)
        if value is not None:
            await redis.restore(name, 0, value, replace=True)


def _payment_keys(paying: PayingRestaurant, out_trade_no: str) -> list[str]:
    s, o = paying.shop.store_id, paying.shop.order_id
    return [keys.order(s, o), keys.locks(s, o), keys.open_orders(s), keys.active(s), keys.payment(s, out_trade_no),
            keys.payments(s), keys.payment_tasks(s), keys.payment_refs(s)]


async def _status(paying: PayingRestaurant, redis: Any) -> bytes | None:
    return await redis.hget(keys.order(paying.shop.store_id, paying.shop.order_id), "status")


async def _paid_then_forgotten(paying: PayingRestaurant, redis: Any) -> tuple[Any, dict, dict]:
    """A diner pays at the provider (the ERP records it); then the coordinator's writes since the start are lost."""
    diner = await paying.shop.diner()
    _, started, seq = await paying.claim_and_start(diner)
    no = started["out_trade_no"]
    saved = await _save(redis, _payment_keys(paying, no))
    await paying.sandbox.pay(no, outcome="paid")
    assert (await diner.payment_result(no, paying.shop.order_id, since=seq))["name"] == "order.paid"
    await paying.paid_in_erp()
    assert (await paying.record(no))["state"] == "paid"
    trade = await paying.sandbox.trade(no)
    saved[keys.payment_tx(paying.shop.store_id, "wechatpay", trade["transaction_id"])] = None
    await _lose_writes_since(redis, saved)
    assert await _status(paying, redis) == b"open"  # the coordinator forgot the payment the ERP confirmed
    assert (await paying.record(no))["state"] == "in_flight"
    return diner, started, trade


async def _notified_again(paying: PayingRestaurant, started: dict, trade: dict) -> None:
    """The provider's notification of the trade arrives again (a redelivery, or the poller's answer)."""
    headers, body = wechat_notification(paying.sandbox, out_trade_no=started["out_trade_no"],
                                        amount_cents=FIRST_TOTAL, transaction_id=trade["transaction_id"])
    url = f"{paying.shop.base_url}/api/v1/payments/notify/wechatpay/{paying.shop.store_id}"
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
        assert r.status in (200, 204)


async def test_the_erps_idempotent_order_pay_restores_the_paid_order(paying: PayingRestaurant, redis_client):
    """The trade captured again sends order.pay with the same payment_ref; the ERP answers with the paid
    order (idempotent), so the coordinator stores it paid: no surplus, one payment in the ERP."""
    diner, started, trade = await _paid_then_forgotten(paying, redis_client)
    ref = paying.shop.db.payment(paying.shop.order_id)["payment_ref"]
    await _notified_again(paying, started, trade)
    await eventually(lambda: _state_is(paying, started["out_trade_no"], "paid"), what="record paid again")
    assert await _status(paying, redis_client) == b"paid"
    assert (await diner.table())["order"] is None
    assert [p["payment_ref"] for p in paying.shop.master.rpc.calls_of("order.pay")] == [ref, ref]
    assert paying.shop.db.payment(paying.shop.order_id)["payment_ref"] == ref  # paid once
    _, rec = await paying.admin("GET", "/payments/reconciliation")
    assert rec["surplus"] == []


async def test_erp_order_closed_on_pay_restores_the_paid_order(paying: PayingRestaurant, redis_client):
    """An ERP answering ORDER_CLOSED to the replayed order.pay: the coordinator fetches the order and
    stores the ERP's paid copy (never open, payable, again); the money that ORDER_CLOSED does not
    show to be this payment stays a surplus (SPEC §9), and the ERP keeps its one payment."""
    diner, started, trade = await _paid_then_forgotten(paying, redis_client)
    ref = paying.shop.db.payment(paying.shop.order_id)["payment_ref"]
    paying.shop.master.rpc.behaviour.refuse = {"order.pay": OrderClosed("paid already")}
    await _notified_again(paying, started, trade)
    await eventually(lambda: _state_is(paying, started["out_trade_no"], "surplus"), what="record surplus")
    await eventually(lambda: _paid_in_redis(paying, redis_client), what="the ERP's paid copy stored")
    assert (await diner.table())["order"] is None
    assert (await paying.record(started["out_trade_no"]))["surplus_reason"] == "erp_refused:ORDER_CLOSED"
    assert paying.shop.db.payment(paying.shop.order_id)["payment_ref"] == ref  # paid once


async def test_checkout_of_the_forgotten_order_stores_the_erps_paid_copy(paying: PayingRestaurant, redis_client):
    """The diner checks out again (its restored lock is its own): the pull from the ERP, which has the
    order paid at the same version, is stored closed (put_order accepts a close from the ERP's own
    answer) and the checkout answers ORDER_CLOSED."""
    diner, _, _ = await _paid_then_forgotten(paying, redis_client)
    with pytest.raises(H5Error) as refused:
        await diner.checkout()
    assert refused.value.code == "ORDER_CLOSED" and refused.value.order["status"] == "paid"
    assert await _status(paying, redis_client) == b"paid"
    assert (await diner.table())["order"] is None


async def _state_is(paying: PayingRestaurant, out_trade_no: str, state: str) -> bool:
    return (await paying.record(out_trade_no))["state"] == state


async def _paid_in_redis(paying: PayingRestaurant, redis: Any) -> bool:
    return await _status(paying, redis) == b"paid"
