"""Provider payments end to end over real HTTP (SPEC §9): the coordinator, the ERP simulator's
terminals, diners' H5 clients and the sandbox provider process, on single Redis and Cluster."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from erp_simulator.client import Refused
from erp_simulator.terminal import Terminal
from h5_client.client import H5Error
from tests.support.payments import PayingRestaurant, wechat_notification
from tests.support.restaurant import FIRST_TOTAL, eventually


@pytest.mark.parametrize("provider", ["wechatpay", "alipay"])
async def test_happy_path_marks_the_order_paid_once_the_provider_notifies(paying: PayingRestaurant, provider: str) -> None:
    """Claim, start, pay at the provider: the verified notification completes the order in the ERP and the coordinator."""
    diner = await paying.shop.diner()
    grant, started, seq = await paying.claim_and_start(diner, provider)
    assert started["amount_cents"] == FIRST_TOTAL and started["lock"]["phase"] == "in_flight"
    assert started["pay_url"].startswith(paying.sandbox.url)
    status, _ = await paying.sandbox.pay(started["out_trade_no"], outcome="paid", notify="normal")
    assert status == 200
    event = await diner.payment_result(started["out_trade_no"], paying.shop.order_id, since=seq)
    assert event["name"] == "order.paid"
    await paying.paid_in_erp()
    assert paying.shop.db.payment(paying.shop.order_id)["payment_ref"].startswith(f"{provider}:")
    record = await paying.record(started["out_trade_no"])
    assert record["state"] == "paid" and record["received_cents"] == FIRST_TOTAL


async def _notify(paying: PayingRestaurant, headers: dict, body: bytes, provider: str = "wechatpay") -> int:
    url = f"{paying.shop.base_url}/api/v1/payments/notify/{provider}/{paying.shop.store_id}"
    async with aiohttp.ClientSession() as http, http.post(url, data=body, headers=headers) as r:
        return r.status


async def _in_flight(paying: PayingRestaurant) -> dict:
    _, locks = await paying.services.engine.get_order(paying.shop.store_id, paying.shop.order_id)
    return next(l for l in locks if l["kind"] == "payment")


async def test_forged_tampered_and_replayed_notifications_are_401_and_change_nothing(
        paying: PayingRestaurant, tmp_path) -> None:
    """Only a notification signed by the provider's key, unaltered and fresh, is believed; a genuine one then completes."""
    diner = await paying.shop.diner()
    _, started, seq = await paying.claim_and_start(diner)
    no = started["out_trade_no"]
    note = dict(out_trade_no=no, amount_cents=FIRST_TOTAL, transaction_id="4200000000" + no[-10:])
    other_keys = tmp_path / "other-provider"
    other_keys.mkdir()
    forged = wechat_notification(paying.sandbox, keys_dir=other_keys, **note)
    headers, body = wechat_notification(paying.sandbox, **note)
    tampered = (headers, body.replace(b'"summary": "', b'"summary": "x', 1))
    replayed = wechat_notification(paying.sandbox, signed_at=time.time() - 600, **note)
    for h, b in (forged, tampered, replayed):
        assert await _notify(paying, h, b) == 401
    assert (await paying.record(no))["state"] == "in_flight"
    assert (await _in_flight(paying))["phase"] == "in_flight"
    assert paying.shop.erp_order()["status"] == "open"
    assert await _notify(paying, headers, body) in (200, 204)
    await paying.paid_in_erp()
    assert (await paying.record(no))["state"] == "paid"


async def test_duplicate_notifications_pay_once(paying: PayingRestaurant) -> None:
    """The provider's duplicate delivery and a replay of the same notification record one payment."""
    diner = await paying.shop.diner()
    _, started, seq = await paying.claim_and_start(diner)
    no = started["out_trade_no"]
    await paying.sandbox.pay(no, outcome="paid", notify="duplicate")
    await paying.paid_in_erp()
    trade = await eventually(lambda: _delivered(paying, no, 2), what="two deliveries")
    headers, body = wechat_notification(paying.sandbox, out_trade_no=no, amount_cents=FIRST_TOTAL,
                                        transaction_id=trade["transaction_id"])
    assert await _notify(paying, headers, body) in (200, 204)
    status, board = await paying.admin("GET", "/payments")
    assert [p["state"] for p in board["payments"] if p["out_trade_no"] == no] == ["paid"]
    status, rec = await paying.admin("GET", "/payments/reconciliation")
    assert rec["surplus"] == [] and rec["unconfirmed"] == []
    audit = await paying.admin("GET", f"/audit?order_id={paying.shop.order_id}&limit=500")
    assert sum(1 for e in audit[1]["entries"] if e["name"] == "order.paid") == 1


async def _delivered(paying: PayingRestaurant, no: str, count: int) -> dict | None:
    trade = await paying.sandbox.trade(no)
    return trade if len([d for d in trade["deliveries"] if d.get("ok")]) >= count else None


async def test_payment_after_the_claim_lapsed_but_inside_the_provider_window_completes(paying: PayingRestaurant) -> None:
    """The 1 s claim lapses while the diner is on the provider's page: in flight, the payment still completes."""
    await paying.shop.patch_config(h5_payment_lock_seconds=1)
    diner = await paying.shop.diner()
    _, started, _ = await paying.claim_and_start(diner)
    await asyncio.sleep(1.5)
    await paying.sandbox.pay(started["out_trade_no"], outcome="paid")
    await paying.paid_in_erp()
    late = await paying.shop.diner()
    grant = await late.checkout() if paying.shop.erp_order()["status"] == "open" else None
    assert grant is None


async def test_start_after_the_claim_lapsed_is_lock_lost(paying: PayingRestaurant) -> None:
    """Starting a payment once the 15 s-style claim has lapsed is refused LOCK_LOST (fetch the order again)."""
    await paying.shop.patch_config(h5_payment_lock_seconds=1)
    diner = await paying.shop.diner()
    grant = await diner.checkout()
    await asyncio.sleep(1.3)
    with pytest.raises(H5Error) as refused:
        await diner.start_payment(grant["lock"]["token"], "wechatpay")
    assert refused.value.status == 409 and refused.value.code == "LOCK_LOST"


async def test_lost_notification_is_found_by_the_poller(paying: PayingRestaurant) -> None:
    """A payment whose notification never comes is found by querying the provider, and completes."""
    diner = await paying.shop.diner()
    _, started, seq = await paying.claim_and_start(diner)
    await paying.sandbox.pay(started["out_trade_no"], outcome="paid", notify="lost")
    event = await diner.payment_result(started["out_trade_no"], paying.shop.order_id, since=seq, timeout=20)
    assert event["name"] == "order.paid"
    assert (await paying.record(started["out_trade_no"]))["capture_source"] == "poll"


async def test_failed_payment_ends_the_lock_and_tells_the_diner(paying: PayingRestaurant) -> None:
    """A failed payment at the provider ends the in-flight lock (payment_failed); the diner gets payment.failed."""
    diner = await paying.shop.diner()
    _, started, seq = await paying.claim_and_start(diner)
    await paying.sandbox.pay(started["out_trade_no"], outcome="failed")
    event = await diner.payment_result(started["out_trade_no"], paying.shop.order_id, since=seq, timeout=20)
    assert event["name"] == "payment.failed"
    _, locks = await paying.services.engine.get_order(paying.shop.store_id, paying.shop.order_id)
    assert locks == [] and paying.shop.erp_order()["status"] == "open"


async def test_cancel_closes_the_provider_order_then_releases(paying: PayingRestaurant) -> None:
    """Cancel from the page closes the provider order first (it can no longer be paid), then ends the lock."""
    diner = await paying.shop.diner()
    grant, started, _ = await paying.claim_and_start(diner)
    assert await diner.cancel(grant["lock"]["token"]) is True
    trade = await paying.sandbox.trade(started["out_trade_no"])
    assert trade["state"] == "closed"
    assert (await paying.record(started["out_trade_no"]))["state"] == "closed"
    status, _ = await paying.sandbox.pay(started["out_trade_no"], outcome="paid")
    assert (await paying.sandbox.trade(started["out_trade_no"]))["state"] == "closed"
    _, locks = await paying.services.engine.get_order(paying.shop.store_id, paying.shop.order_id)
    assert locks == []


async def test_cancel_after_the_diner_paid_completes_instead(paying: PayingRestaurant) -> None:
    """A cancel that finds the provider paid (notification not yet in) completes the payment and says so."""
    diner = await paying.shop.diner()
    grant, started, _ = await paying.claim_and_start(diner)
    await paying.sandbox.pay(started["out_trade_no"], outcome="paid", notify="lost")
    answer = await diner._request("POST", "/h5/checkout/cancel", {"token": grant["lock"]["token"]})
    assert answer == {"released": False, "paid": True}
    await paying.paid_in_erp()


async def test_force_while_the_payer_has_paid_completes_and_refuses_the_force(paying: PayingRestaurant) -> None:
    """A cashier's force during an in-flight payment the provider says is paid: the order completes, the force is refused."""
    diner = await paying.shop.diner()
    _, started, _ = await paying.claim_and_start(diner)
    await paying.sandbox.pay(started["out_trade_no"], outcome="paid", notify="lost")
    master = paying.shop.master
    with pytest.raises(Refused) as refused:
        await master.client.take_lock(paying.shop.order_id, "payment", force=True)
    assert refused.value.code == "PAYMENT_LOCKED"
    assert refused.value.message == "顾客刚刚已完成支付,无需重复结账"
    assert refused.value.force_allowed is False
    await paying.paid_in_erp()
    assert (await paying.record(started["out_trade_no"]))["capture_source"] == "force"


async def test_force_while_the_payer_has_not_paid_closes_the_provider_order(paying: PayingRestaurant) -> None:
    """A cashier's force on an unpaid in-flight payment closes the provider order, then breaks the lock."""
    diner = await paying.shop.diner()
    _, started, _ = await paying.claim_and_start(diner)
    lock = await paying.shop.master.client.take_lock(paying.shop.order_id, "payment", force=True)
    assert lock["holder"]["role"] == "erp"
    assert (await paying.sandbox.trade(started["out_trade_no"]))["state"] == "closed"
    assert (await paying.record(started["out_trade_no"]))["state"] == "closed"


async def test_force_with_the_provider_unreachable_warns_then_a_late_payment_is_a_refunded_surplus(
        paying: PayingRestaurant) -> None:
    """Provider unreachable: the force needs force_unverified; the diner's later payment is a surplus, refunded once, the order not reopened."""
    shop, sandbox = paying.shop, paying.sandbox
    diner = await shop.diner()
    _, started, seq = await paying.claim_and_start(diner)
    no = started["out_trade_no"]
    await sandbox.control(mode="503")
    with pytest.raises(Refused) as refused:
        await shop.master.client.take_lock(shop.order_id, "payment", force=True)
    assert refused.value.code == "PAYMENT_UNVERIFIED" and refused.value.force_allowed is True
    lock = await shop.master.client.take_lock(shop.order_id, "payment", force=True, force_unverified=True)
    shop.db.observe_fence(shop.order_id, int(lock["fence"]))
    shop.master.held[(shop.order_id, "payment")] = lock  # the cashier's own payment page, as Terminal.checkout keeps it
    await sandbox.control(mode="normal")
    await shop.master.complete_payment(shop.order_id, payment_ref="cash-1")
    await sandbox.pay(no, outcome="paid", notify="late", delay_ms=300)
    event = await diner.payment_result(no, shop.order_id, since=seq, timeout=20)
    assert event["name"] in ("order.paid", "payment.surplus")
    record = await eventually(lambda: _refunded(paying, no), timeout=20, what="surplus refunded")
    assert record["surplus_reason"] in ("order_closed", "lock_gone")
    trade = await sandbox.trade(no)
    assert len(trade["refunds"]) == 1
    assert shop.erp_order()["status"] == "paid"
    assert shop.db.payment(shop.order_id)["payment_ref"] == "cash-1"
    status, rec = await paying.admin("GET", "/payments/reconciliation")
    assert [c["payment"]["out_trade_no"] for c in rec["surplus"]] == [no]


async def _refunded(paying: PayingRestaurant, no: str) -> dict | None:
    record = await paying.record(no)
    return record if record.get("refund_state") == "succeeded" else None



async def test_erp_down_when_money_arrives_completes_when_it_returns(paying: PayingRestaurant) -> None:
    """Money arrives while the ERP master is offline: the lock stays completing, reconciliation shows it, and the outbox completes it when the ERP is back."""
    shop = paying.shop
    diner = await shop.diner()
    _, started, seq = await paying.claim_and_start(diner)
    no = started["out_trade_no"]
    token = shop.master.client._session.headers["Authorization"].split(" ", 1)[1]  # to bring the same till back
    await shop.master.stop()
    await paying.sandbox.pay(no, outcome="paid")
    record = await eventually(lambda: _erp_attempted(paying, no), timeout=10, what="order.pay tried")
    assert record["state"] == "completing"
    lock = await _in_flight(paying)
    assert lock["completing"] is True and lock["phase"] == "completing"
    _, rec = await paying.admin("GET", "/payments/reconciliation")
    assert [c["payment"]["out_trade_no"] for c in rec["unconfirmed"]] == [no]
    with pytest.raises(H5Error) as refused:
        await (await shop.diner()).checkout()
    assert refused.value.code == "PAYMENT_LOCKED"
    back = Terminal(shop.base_url, shop.store_id, token, shop.db, name="收银台", master=True)
    await back.start()
    try:
        await back.wait_connected(10)
        await paying.paid_in_erp()
        await eventually(lambda: _state(paying, no, "paid"), timeout=15, what="record paid")
        event = await diner.payment_result(no, shop.order_id, since=seq, timeout=10)
        assert event["name"] == "order.paid"
    finally:
        await back.stop()


async def _erp_attempted(paying: PayingRestaurant, no: str) -> dict | None:
    record = await paying.record(no)
    return record if record.get("erp_attempts", 0) >= 1 else None


async def _state(paying: PayingRestaurant, no: str, state: str) -> bool:
    return (await paying.record(no))["state"] == state


async def test_h5_addon_during_a_payment_is_refused_and_the_terminals_get_the_toast(paying: PayingRestaurant) -> None:
    """Diner A pays (lock in flight); diner B's add-on is PAYMENT_LOCKED by the coordinator itself, and the terminals get order.addon_refused with the seed's toast."""
    shop = paying.shop
    payer, other = await shop.diner(), await shop.diner()
    _, started, seq = await paying.claim_and_start(payer)
    version = shop.erp_order()["version"]
    with pytest.raises(H5Error) as refused:
        await other.add_items([("rice", 1)])
    assert refused.value.status == 409 and refused.value.code == "PAYMENT_LOCKED"
    assert refused.value.message == "订单正在其他机器/顾客端进行支付,请稍后再试"
    assert shop.erp_order()["version"] == version
    # The event went out on the store's stream (the audit log holds every event of it).
    assert await _audit_toast(paying)
    await paying.sandbox.pay(started["out_trade_no"], outcome="paid")
    await paying.paid_in_erp()
    assert shop.db.order(shop.order_id)["version"] == version


async def _audit_toast(paying: PayingRestaurant) -> dict | None:
    _, audit = await paying.admin("GET", f"/audit?order_id={paying.shop.order_id}&limit=500")
    for entry in audit["entries"]:
        if entry["name"] == "order.addon_refused":
            assert entry["data"]["message"] == "订单正在其他机器/顾客端进行支付,暂不能接单,如需接单请先取消支付"
            return entry
    return None


async def test_a_wrong_amount_is_a_refunded_surplus_and_the_order_stays_open(paying: PayingRestaurant) -> None:
    """Money that differs from the bound total never pays the order: a surplus, refunded, the ERP's order open (was the H5 wrong-amount test)."""
    diner = await paying.shop.diner()
    _, started, seq = await paying.claim_and_start(diner)
    no = started["out_trade_no"]
    headers, body = wechat_notification(paying.sandbox, out_trade_no=no, amount_cents=FIRST_TOTAL - 1,
                                        transaction_id="4200000001" + no[-10:])
    assert await _notify(paying, headers, body) in (200, 204)
    event = await diner.payment_result(no, paying.shop.order_id, since=seq)
    assert event["name"] == "payment.surplus" and event["data"]["reason"] == "amount_mismatch"
    assert paying.shop.erp_order()["status"] == "open"
    _, locks = await paying.services.engine.get_order(paying.shop.store_id, paying.shop.order_id)
    assert locks == []  # the in-flight lock ended (payment_failed): the diner checks out again


async def test_no_request_of_an_h5_session_marks_an_order_paid(paying: PayingRestaurant) -> None:
    """Every H5 endpoint, given the live lock's token, amount, version and a payment_ref, leaves the order open."""
    from coordinator.app import ROUTERS

    diner = await paying.shop.diner()
    grant = await diner.checkout()
    body = {"token": grant["lock"]["token"], "amount_cents": grant["order"]["total_cents"],
            "version": grant["order"]["version"], "payment_ref": "diner-says-paid", "provider": "wechatpay",
            "items": [{"sku": "tea", "qty": 1}], "request_id": "r-1", "qr_token": paying.shop.qr}
    h5_endpoints = [e for r in ROUTERS for e in r.endpoints if "h5" in e.auth]
    assert any(e.path == "/h5/checkout" for e in h5_endpoints)
    for endpoint in h5_endpoints:
        try:
            await diner._request(endpoint.method, endpoint.path, body if endpoint.method != "GET" else None)
        except H5Error:
            pass
    for path in ("/h5/payments", "/h5/pay", "/h5/orders/paid"):
        with pytest.raises(H5Error):
            await diner._request("POST", path, body)
    await asyncio.sleep(0.5)
    assert paying.shop.erp_order()["status"] == "open"
    order, _ = await paying.services.engine.get_order(paying.shop.store_id, paying.shop.order_id)
    assert order["status"] == "open"


async def test_a_payment_ref_that_paid_one_order_is_refused_on_another(paying: PayingRestaurant) -> None:
    """An ERP completion reusing a payment_ref that already paid another order of the store is 409 PAYMENT_REF_REUSED and recorded."""
    shop = paying.shop
    await shop.master.checkout(shop.order_id)
    await shop.master.complete_payment(shop.order_id, payment_ref="card-77")
    second = await shop.master.open_order("T1", [{"sku": "rice", "qty": 1}])
    await shop.master.checkout(second["order_id"])
    with pytest.raises(Refused) as refused:
        await shop.master.complete_payment(second["order_id"], payment_ref="card-77")
    assert refused.value.code == "PAYMENT_REF_REUSED"
    order, _ = await paying.services.engine.get_order(shop.store_id, second["order_id"])
    assert order["status"] == "open"
    _, audit = await paying.admin("GET", f"/audit?order_id={second['order_id']}&limit=100")
    assert any(e["name"] == "payment.rejected" and e["data"]["code"] == "PAYMENT_REF_REUSED" for e in audit["entries"])
