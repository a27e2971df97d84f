"""SPEC §12 "completions the ERP confirmed survive" (issue 16, leftover): after a failover lost the
coordinator's write of a paid order, the order looks open again in Redis while the ERP has it paid.
The coordinator must take the ERP's word — its ``ORDER_CLOSED`` to ``order.pay``, or its
``order.fetch`` answer at checkout — and store the order closed again, not leave it open.

The lost write is simulated on purpose: the order's keys are saved (DUMP) right before the payment
and put back (RESTORE) after it, which is what a promoted replica that never received the
completion holds (tests/test_failover.py forces the same loss with a real primary and replica).
"""

from __future__ import annotations

from typing import Any

import pytest

from coordinator.store import keys
from h5_client.client import H5Error
from tests.support.restaurant import FIRST_TOTAL, Restaurant


async def _save(redis: Any, names: list[str]) -> dict[str, bytes | None]:
    return {name: await redis.dump(name) for name in names}


async def _lose_writes_since(redis: Any, saved: dict[str, bytes | None]) -> None:
    """Put the keys back as they were when saved: the writes since then are "lost with the old primary"."""
    for name, value in saved.items():
        await redis.delete(name)
        if value is not None:
            await redis.restore(name, 0, value, replace=True)


async def _order_keys(restaurant: Restaurant) -> list[str]:
    s, o = restaurant.store_id, restaurant.order_id
    return [keys.order(s, o), keys.locks(s, o), keys.open_orders(s), keys.active(s)]


async def _paid_then_forgotten(restaurant: Restaurant, redis: Any) -> tuple[Any, dict]:
    """A diner checks out and pays (the ERP records it); then the coordinator's "paid" is lost."""
    diner = await restaurant.diner()
    checkout = await diner.checkout()
    saved = await _save(redis, await _order_keys(restaurant))
    paid = await diner.pay(checkout["lock"]["token"], FIRST_TOTAL, checkout["order"]["version"], "ref-before-failover")
    assert paid["status"] == "paid" and restaurant.erp_order()["status"] == "paid"
    await _lose_writes_since(redis, saved)
    status = await redis.hget(keys.order(restaurant.store_id, restaurant.order_id), "status")
    assert status == b"open"  # the lost write: the coordinator forgot the payment the ERP confirmed
    return diner, checkout


async def test_erp_order_closed_on_pay_restores_the_paid_order(restaurant: Restaurant, redis_client):
    """A second payment of the forgotten order is refused by the ERP (ORDER_CLOSED); the coordinator
    then fetches the order and stores it paid, so it never shows open (payable) again."""
    diner, checkout = await _paid_then_forgotten(restaurant, redis_client)
    with pytest.raises(H5Error) as refused:
        await diner.pay(checkout["lock"]["token"], FIRST_TOTAL, checkout["order"]["version"], "ref-after-failover")
    assert refused.value.status == 409 and refused.value.code == "ORDER_CLOSED"
    assert refused.value.order["status"] == "paid"
    assert await redis_client.hget(keys.order(restaurant.store_id, restaurant.order_id), "status") == b"paid"
    assert (await diner.table())["order"] is None
    assert restaurant.db.payment(restaurant.order_id)["payment_ref"] == "ref-before-failover"  # paid once


async def test_checkout_of_the_forgotten_order_stores_the_erps_paid_copy(restaurant: Restaurant, redis_client):
    """The diner checks out again (its restored lock is its own): the pull from the ERP, which has the
    order paid at the same version, is stored closed (put_order accepts a close from the ERP's own
    answer) and the checkout answers ORDER_CLOSED."""
    other, _ = await _paid_then_forgotten(restaurant, redis_client)
    with pytest.raises(H5Error) as refused:
        await other.checkout()
    assert refused.value.code == "ORDER_CLOSED" and refused.value.order["status"] == "paid"
    assert await redis_client.hget(keys.order(restaurant.store_id, restaurant.order_id), "status") == b"paid"
    assert (await other.table())["order"] is None
