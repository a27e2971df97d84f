"""Issue 15 finding 4 (SPEC invariant 11): a new diner's session never reads an earlier party's order
or payment — not by replaying the store's events from ``since=0``, not in its snapshot, not in
``GET /h5/table``, not by replaying the earlier party's payment lock token.

The earlier party pays as diners pay (SPEC §9): claim, start, the sandbox provider's notification.
"""

from __future__ import annotations

import aiohttp
import pytest

from h5_client.client import H5Error
from tests.support.payments import PayingRestaurant
from tests.support.restaurant import Restaurant
from tests.support.ws_socket import open_socket

pytestmark = pytest.mark.security


async def _earlier_party_pays(paying: PayingRestaurant) -> tuple[str, dict]:
    """The first party at T1 checks out and pays at the provider; returns (its payment_ref, its started payment)."""
    first = await paying.shop.diner()
    _, started, seq = await paying.claim_and_start(first)
    status, _ = await paying.sandbox.pay(started["out_trade_no"], outcome="paid")
    assert status == 200
    event = await first.payment_result(started["out_trade_no"], paying.shop.order_id, since=seq)
    assert event["name"] == "order.paid"
    await paying.paid_in_erp()
    return paying.shop.db.payment(paying.shop.order_id)["payment_ref"], started


async def test_a_new_session_does_not_replay_or_show_the_earlier_partys_payment(paying: PayingRestaurant):
    """After party 1 paid, party 2 at the same table connecting with since=0 gets a snapshot without
    party 1's order, and neither the socket nor GET /h5/table carries its order, payment_ref or trade."""
    restaurant = paying.shop
    earlier_ref, started = await _earlier_party_pays(paying)
    second = await restaurant.diner()
    async with aiohttp.ClientSession() as http:
        sock, hello, first_message = await open_socket(http, second.ws_url(since=0), protocols=second.ws_protocols())
        assert first_message["type"] == "snapshot", first_message
        assert first_message["orders"] == [] and first_message["locks"] == []
        assert hello["seq"] == first_message["seq"]
        await sock.quiet(0.3)
        await sock.ws.close()
    seen = sock.raw()
    assert earlier_ref not in seen and restaurant.order_id not in seen and "order.paid" not in seen
    assert started["out_trade_no"] not in seen and "payment.started" not in seen
    table = await second.table()
    assert table["order"] is None and table["locks"] == []


async def test_a_new_session_sees_only_the_tables_new_order(paying: PayingRestaurant):
    """When the ERP opens the next party's order, party 2's snapshot and table show that order only."""
    restaurant = paying.shop
    earlier_ref, started = await _earlier_party_pays(paying)
    second = await restaurant.diner()
    order = await restaurant.master.open_order("T1", [{"sku": "rice", "qty": 1}])
    async with aiohttp.ClientSession() as http:
        sock, _, snapshot = await open_socket(http, second.ws_url(since=0), protocols=second.ws_protocols())
        await sock.ws.close()
    assert snapshot["type"] == "snapshot"
    assert [o["order_id"] for o in snapshot["orders"]] == [order["order_id"]]
    assert earlier_ref not in sock.raw() and started["out_trade_no"] not in sock.raw()
    table = await second.table()
    assert table["order"]["order_id"] == order["order_id"] and table["order"]["status"] == "open"


async def test_a_session_still_resumes_its_own_events(restaurant: Restaurant):
    """A session resuming after a seq it has seen gets the events since, as before (the bound is its start)."""
    diner = await restaurant.diner()
    start = (await diner.table())["seq"]
    checkout = await diner.checkout()
    async with aiohttp.ClientSession() as http:
        sock, _, first_event = await open_socket(http, diner.ws_url(since=start), protocols=diner.ws_protocols())
        await sock.ws.close()
    assert first_event["type"] == "event" and first_event["seq"] > start
    assert checkout["lock"]["token"] not in sock.raw()


async def test_an_earlier_partys_payment_is_not_replayed_to_a_new_session(paying: PayingRestaurant):
    """Party 2 sending party 1's payment lock token (to start a payment, or to cancel) gets neither
    party 1's paid order nor its trade back."""
    restaurant = paying.shop
    earlier_ref, started = await _earlier_party_pays(paying)
    await restaurant.master.open_order("T1", [{"sku": "rice", "qty": 1}])
    second = await restaurant.diner()
    earlier_token = started["lock"]["token"]
    with pytest.raises(H5Error) as refused:
        await second.start_payment(earlier_token, "wechatpay")
    assert refused.value.status == 409 and refused.value.code == "LOCK_LOST"
    for leaked in (restaurant.order_id, earlier_ref, started["out_trade_no"]):
        assert leaked not in str(refused.value.error)
    assert await second.cancel(earlier_token) is False
