"""The Python H5 client against the real coordinator, real Redis and the ERP simulator's master."""

from __future__ import annotations

import asyncio
import json

import pytest

from h5_client.client import H5Client, H5Error
from tests.support.restaurant import FIRST_TOTAL, Restaurant, eventually

ORDER_LOCKED_H5 = "订单正在其他机器修改,暂不能支付"
PAYMENT_LOCKED_H5 = "订单正在其他机器/顾客端进行支付,请稍后再试"


async def test_open_and_table_show_the_order_without_secrets(restaurant: Restaurant):
    """A QR token opens a session whose table view has the ERP's order and no token or id of anyone."""
    diner = await restaurant.diner()
    assert (diner.store_id, diner.table_id) == (restaurant.store_id, "T1")
    await restaurant.waiter.open_editor(restaurant.order_id)
    table = await diner.table()
    assert table["table"] == {"table_id": "T1", "name": "一号桌"}
    assert table["order"]["order_id"] == restaurant.order_id
    assert table["order"]["total_cents"] == FIRST_TOTAL
    assert [l["kind"] for l in table["locks"]] == ["order"]
    assert table["locks"][0]["holder"] == {"role": "erp", "is_me": False}
    text = json.dumps(table)
    assert "token" not in text and restaurant.waiter.terminal_id not in text


async def test_forged_qr_token_is_a_typed_401(restaurant: Restaurant):
    """A QR token with a bad signature raises H5Error carrying the SPEC UNAUTHENTICATED body."""
    forged = restaurant.qr[:-3] + ("AAA" if not restaurant.qr.endswith("AAA") else "BBB")
    with pytest.raises(H5Error) as refused:
        await H5Client.open(restaurant.base_url, forged)
    assert refused.value.status == 401
    assert refused.value.code == "UNAUTHENTICATED"
    assert refused.value.message and refused.value.message_en


async def test_menu_comes_from_the_erp(restaurant: Restaurant):
    """menu() lists the ERP's dishes with their prices."""
    diner = await restaurant.diner()
    menu = await diner.menu()
    assert {(d["sku"], d["unit_price_cents"]) for d in menu} >= {("tea", 1800), ("rice", 300)}


async def test_add_items_is_idempotent_on_request_id(restaurant: Restaurant):
    """Adding dishes twice with one request_id adds them once; the ERP has them as H5 lines."""
    diner = await restaurant.diner()
    first = await diner.add_items([("rice", 2)], request_id="req-rice-1")
    again = await diner.add_items([{"sku": "rice", "qty": 2}], request_id="req-rice-1")
    assert first["version"] == again["version"] == 2
    assert first["total_cents"] == FIRST_TOTAL + 600
    erp = restaurant.erp_order()
    assert [(l["sku"], l["qty"], l["source"]) for l in erp["items"] if l["source"] == "h5"] == [("rice", 2, "h5")]


async def test_waiter_editing_refuses_checkout_but_allows_adding(restaurant: Restaurant):
    """While a waiter holds the order lock, checkout is 409 ORDER_LOCKED (SPEC text) and dishes still go in."""
    diner = await restaurant.diner()
    await restaurant.waiter.open_editor(restaurant.order_id)
    with pytest.raises(H5Error) as refused:
        await diner.checkout()
    assert refused.value.status == 409
    assert refused.value.code == "ORDER_LOCKED"
    assert refused.value.message == ORDER_LOCKED_H5
    assert refused.value.force_allowed is False
    order = await diner.add_items([("greens", 1)])
    assert any(l["sku"] == "greens" and l["source"] == "h5" for l in order["items"])


async def test_checkout_gives_the_diner_a_15_second_claim_and_no_way_to_pay_by_itself(restaurant: Restaurant):
    """checkout gives the 15 s payment claim bound to the order's version; the client has no completion (SPEC §9:
    the checkout → pay → paid path, replay and wrong-amount cases moved to tests/test_payments.py, through the sandbox)."""
    diner = await restaurant.diner()
    grant = await diner.checkout()
    lock, order = grant["lock"], grant["order"]
    assert lock["kind"] == "payment" and lock["token"] and lock["version"] == order["version"]
    assert lock["expires_at"] - lock["acquired_at"] == 15_000
    assert not hasattr(diner, "pay")
    with pytest.raises(H5Error) as refused:
        await diner._request("POST", "/h5/payments", {"token": lock["token"], "amount_cents": order["total_cents"],
                                                       "version": order["version"], "payment_ref": "ref-pay-1"})
    assert refused.value.status == 404
    assert restaurant.erp_order()["status"] == "open"


async def test_cancel_releases_the_payment_lock(restaurant: Restaurant):
    """cancel(token) gives the payment lock back; the table shows no lock afterwards."""
    diner = await restaurant.diner()
    grant = await diner.checkout()
    assert await diner.cancel(grant["lock"]["token"]) is True
    assert (await diner.table())["locks"] == []
    assert await diner.cancel(grant["lock"]["token"]) is False


async def test_second_diner_cannot_pay_or_add_while_first_pays(restaurant: Restaurant):
    """While diner A holds the payment lock, diner B sees it as someone else's and is refused."""
    a, b = await restaurant.diner(), await restaurant.diner()
    await a.checkout()
    with pytest.raises(H5Error) as refused:
        await b.checkout()
    assert refused.value.code == "PAYMENT_LOCKED"
    assert refused.value.message == PAYMENT_LOCKED_H5
    with pytest.raises(H5Error) as refused_items:
        await b.add_items([("rice", 1)])
    assert refused_items.value.code == "PAYMENT_LOCKED"
    assert [l["holder"] for l in (await a.table())["locks"]] == [{"role": "h5", "is_me": True}]
    assert [l["holder"] for l in (await b.table())["locks"]] == [{"role": "h5", "is_me": False}]


async def test_erp_master_offline_is_erp_unreachable(restaurant: Restaurant):
    """With the master terminal gone, checkout is 503 ERP_UNREACHABLE with the front-desk message."""
    await restaurant.patch_config(erp_rpc_timeout_ms=500)
    diner = await restaurant.diner()
    await restaurant.master.stop()
    with pytest.raises(H5Error) as refused:
        await asyncio.wait_for(diner.checkout(), 5)
    assert refused.value.status == 503
    assert refused.value.code == "ERP_UNREACHABLE"
    assert refused.value.message == "获取订单失败,请到前台结账"


async def test_events_follow_locks_in_viewer_form(restaurant: Restaurant):
    """events() yields lock.acquired / lock.released for the table with holders as {role, is_me} only."""
    diner = await restaurant.diner()
    events = diner.events()
    seen: list[dict] = []

    async def collect() -> None:
        async for event in events:
            seen.append(event)

    task = asyncio.create_task(collect())
    try:
        await asyncio.sleep(0.3)  # the socket is up before the change
        await restaurant.waiter.open_editor(restaurant.order_id)
        await restaurant.waiter.submit(restaurant.order_id)
        await eventually(lambda: [e["name"] for e in seen if e["name"].startswith("lock.")][-2:]
                         == ["lock.acquired", "lock.released"], timeout=3, what="lock events")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await events.aclose()
    acquired = next(e for e in seen if e["name"] == "lock.acquired")
    assert acquired["data"]["lock"]["holder"] == {"role": "erp", "is_me": False}
    assert "token" not in json.dumps(seen)
    seqs = [e["seq"] for e in seen]
    assert seqs == sorted(set(seqs))


async def test_events_resume_after_a_drop_without_losing_any(restaurant: Restaurant):
    """After the socket drops, events() reconnects with since and replays what happened meanwhile."""
    diner = await restaurant.diner()
    events = diner.events(backoff=(1.0, 1.0))  # the changes below land while it is away
    seen: list[dict] = []

    async def collect() -> None:
        async for event in events:
            seen.append(event)

    task = asyncio.create_task(collect())
    try:
        await asyncio.sleep(0.3)
        await restaurant.waiter.open_editor(restaurant.order_id)
        await eventually(lambda: any(e["name"] == "lock.acquired" for e in seen), timeout=3, what="first event")
        await diner.drop()
        await restaurant.waiter.submit(restaurant.order_id)
        await restaurant.waiter.presettle(restaurant.order_id)
        assert [e["name"] for e in seen][-1] == "lock.acquired"  # nothing live while away
        await eventually(lambda: [e["name"] for e in seen][-2:] == ["lock.released", "lock.acquired"],
                         timeout=5, what="replayed events")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await events.aclose()
    assert diner.reconnects == 1
    assert seen[-1]["data"]["lock"]["kind"] == "presettle"
    seqs = [e["seq"] for e in seen]
    assert seqs == sorted(set(seqs))


async def test_events_since_replays_missed_events(restaurant: Restaurant):
    """A new events(since=seq) iterator starts with every event after seq, in order."""
    diner = await restaurant.diner()
    since = (await diner.table())["seq"]
    await restaurant.waiter.open_editor(restaurant.order_id)
    await restaurant.waiter.submit(restaurant.order_id)
    events = diner.events(since=since)
    names: list[str] = []
    try:
        while len([n for n in names if n.startswith("lock.")]) < 2:
            names.append((await asyncio.wait_for(events.__anext__(), 3))["name"])
    finally:
        await events.aclose()
    assert [n for n in names if n.startswith("lock.")] == ["lock.acquired", "lock.released"]
