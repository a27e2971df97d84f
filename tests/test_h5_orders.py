"""The RPC-backed H5 endpoints end to end: real app, real Redis, the ERP simulator's master on a real websocket.

The ``erp`` fixture (``tests/support/erp_master.py``) is the simulator's ERP database with its master
terminal: it answers every ``rpc`` from that database, journals what it was asked, and can be
made slow or hung (``erp.behaviour``).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from coordinator.core.models import StoreConfigPatch
from coordinator.core.rules import Kind
from coordinator.store import keys
from erp_simulator.errors import AmountMismatch
from tests.support.app import (
    ADMIN_TOKEN,
    SYSTEM,
    bearer,
    h5,
    order_body,
    post,
    services,
)
from tests.support.erp_master import MENU, erp_database, start_master, until
from tests.support.payments import wechat_notification

H5_PAYMENT_LOCKED = "订单正在其他机器/顾客端进行支付,请稍后再试"


async def set_config(client, shop, **changes: Any) -> None:
    """Change the shop's store configuration."""
    await services(client).directory.patch_config(shop.store_id, StoreConfigPatch(**changes), SYSTEM)


async def events(client, shop, name: str) -> list[dict[str, Any]]:
    """The shop's events called ``name``, oldest first."""
    raw = await services(client).redis.xrange(f"tl:{{{shop.store_id}}}:events")
    out = [json.loads(fields[b"e"]) for _, fields in raw]
    return [e for e in out if e["name"] == name]


# --- checkout -----------------------------------------------------------------------------


async def test_checkout_pulls_the_order_and_binds_its_version(client, shop, erp):
    """Checkout asks the ERP for the order, stores the newer version it pulled and binds the lock to it."""
    erp.db.add_items("o1", [{"sku": "soup", "qty": 1}])  # a waiter's change the coordinator has not heard of
    assert erp.db.order("o1")["version"] == 2 and erp.db.order("o1")["total_cents"] == 5300
    status, body = await post(client, "/h5/checkout", await h5(client, shop))
    assert status == 201, body
    assert erp.methods("order.fetch") == [{"order_id": "o1"}]
    assert body["order"]["version"] == 2 and body["order"]["total_cents"] == 5300
    assert body["lock"]["kind"] == "payment" and body["lock"]["version"] == 2 and body["lock"]["token"]
    assert body["enforced"] is True
    stored, _ = await services(client).engine.get_order(shop.store_id, "o1")
    assert stored["version"] == 2


async def test_checkout_while_a_waiter_edits_is_refused_before_asking_the_erp(client, shop, erp):
    """A checkout during a terminal's order lock is 409 ORDER_LOCKED with the payer text, and the ERP is not asked."""
    taken = await client.post(f"/api/v1/stores/{shop.store_id}/orders/o1/locks", headers=bearer(shop.b), json={"kind": "order"})
    assert taken.status == 201
    status, body = await post(client, "/h5/checkout", await h5(client, shop))
    assert status == 409 and body["error"]["code"] == "ORDER_LOCKED"
    assert body["error"]["message"] == "订单正在其他机器修改,暂不能支付" and body["error"]["force_allowed"] is False
    assert body["error"]["lock"]["holder"] == {"role": "erp", "is_me": False}
    assert erp.methods("order.fetch") == []


async def test_checkout_without_a_master_is_erp_unreachable_at_once(client, shop):
    """With no master terminal connected, checkout answers 503 ERP_UNREACHABLE well within erp_rpc_timeout_ms."""
    await set_config(client, shop, erp_rpc_timeout_ms=500)
    headers = await h5(client, shop)
    started = time.monotonic()
    status, body = await post(client, "/h5/checkout", headers)
    assert time.monotonic() - started < 0.5
    assert status == 503 and body["error"]["code"] == "ERP_UNREACHABLE"
    assert body["error"]["message"] == "获取订单失败,请到前台结账"
    assert await services(client).engine.locks(shop.store_id) == []


async def test_checkout_with_a_silent_master_is_erp_unreachable_at_the_timeout(client, shop, erp):
    """A master that never answers order.fetch gives 503 ERP_UNREACHABLE after erp_rpc_timeout_ms, no lock taken."""
    await set_config(client, shop, erp_rpc_timeout_ms=500)
    erp.behaviour.silent = True
    headers = await h5(client, shop)
    started = time.monotonic()
    status, body = await post(client, "/h5/checkout", headers)
    elapsed = time.monotonic() - started
    assert status == 503 and body["error"]["code"] == "ERP_UNREACHABLE"
    assert 0.45 <= elapsed < 1.5
    assert await services(client).engine.locks(shop.store_id) == []


async def test_checkout_with_no_open_order_is_not_found(client, shop, erp):
    """A table without an open order has nothing to pay: 404 NOT_FOUND and no RPC."""
    await services(client).directory.put_table(shop.store_id, "T9", "九号桌", SYSTEM)
    table = await services(client).directory.table(shop.store_id, "T9")
    resp = await client.post("/api/v1/h5/sessions", json={"qr_token": table.qr_url.split("qr=", 1)[1]})
    headers = bearer((await resp.json())["session_token"])
    status, body = await post(client, "/h5/checkout", headers)
    assert status == 404 and body["error"]["code"] == "NOT_FOUND"
    assert erp.calls == []


async def test_checkout_in_legacy_mode_uses_the_last_known_order(client, shop):
    """With strong_link_enabled false, checkout pulls nothing (no master needed) and grants with enforced false."""
    await set_config(client, shop, strong_link_enabled=False)
    status, body = await post(client, "/h5/checkout", await h5(client, shop))
    assert status == 201, body
    assert body["enforced"] is False and body["order"]["version"] == 1
    assert await services(client).engine.locks(shop.store_id) == []


async def test_checkout_refused_while_an_erp_terminal_edits_hides_its_identity(client, shop, erp):
    """Checkout under another terminal's order lock is 409 ORDER_LOCKED showing the lock in the H5 viewer form."""
    svc = services(client)
    erp_b = {"role": "erp", "terminal_id": shop.b_id, "name": "服务员B"}
    await svc.engine.acquire(shop.store_id, "o1", erp_b, Kind.ORDER)
    status, body = await post(client, "/h5/checkout", await h5(client, shop))
    assert status == 409 and body["error"]["code"] == "ORDER_LOCKED"
    assert body["error"]["force_allowed"] is False
    assert body["error"]["lock"]["holder"] == {"role": "erp", "is_me": False}
    assert shop.b_id not in json.dumps(body)


async def test_checkout_cancel_releases_the_lock(client, shop, erp):
    """Cancelling a checkout with its token releases the payment lock; a second cancel releases nothing."""
    headers = await h5(client, shop)
    _, grant = await post(client, "/h5/checkout", headers)
    token = grant["lock"]["token"]
    assert await post(client, "/h5/checkout/cancel", headers, {"token": token}) == (200, {"released": True})
    assert await post(client, "/h5/checkout/cancel", headers, {"token": token}) == (200, {"released": False})
    assert await services(client).engine.locks(shop.store_id) == []


# --- menu ---------------------------------------------------------------------------------


async def test_menu_comes_from_the_erp_and_is_cached(client, shop, erp):
    """GET /h5/menu returns the ERP's menu and a second request within a minute asks the ERP nothing."""
    headers = await h5(client, shop)
    for _ in range(2):
        resp = await client.get("/api/v1/h5/menu", headers=headers)
        assert resp.status == 200
        assert await resp.json() == {"items": MENU}
    assert len(erp.methods("menu.list")) == 1


async def test_menu_without_erp_is_unreachable(client, shop):
    """With no master connected and nothing cached, GET /h5/menu is 503 ERP_UNREACHABLE."""
    resp = await client.get("/api/v1/h5/menu", headers=await h5(client, shop))
    assert resp.status == 503 and (await resp.json())["error"]["code"] == "ERP_UNREACHABLE"


# --- adding dishes ------------------------------------------------------------------------


async def test_items_are_added_through_the_erp_and_stored(client, shop, erp):
    """POST /h5/items returns the ERP's order with the dishes, and the coordinator knows it at once."""
    status, body = await post(client, "/h5/items", await h5(client, shop),
                              {"items": [{"sku": "soup", "qty": 2}], "request_id": "r-1"})
    assert status == 200, body
    assert body["order"]["version"] == 2 and body["order"]["total_cents"] == 3800 + 3000
    [params] = erp.methods("order.add_items")
    assert params == {"order_id": "o1", "table_id": "T1", "items": [{"sku": "soup", "qty": 2}], "request_id": "r-1"}
    stored, _ = await services(client).engine.get_order(shop.store_id, "o1")
    assert stored["version"] == 2


async def test_items_are_idempotent_on_request_id(client, shop, erp):
    """Repeating a request_id, in sequence or concurrently, returns the same order and asks the ERP once."""
    headers = await h5(client, shop)
    erp.behaviour.delay = 0.2
    body = {"items": [{"sku": "tea", "qty": 1}], "request_id": "dup-1"}
    results = await asyncio.gather(*(post(client, "/h5/items", headers, body) for _ in range(4)))
    results.append(await post(client, "/h5/items", headers, body))
    assert {status for status, _ in results} == {200}
    assert len({json.dumps(b["order"], sort_keys=True) for _, b in results}) == 1
    assert len(erp.methods("order.add_items")) == 1


async def test_items_request_id_reused_with_other_items_is_rejected(client, shop, erp):
    """A request_id already used for other dishes is 400 VALIDATION_ERROR, not a silent replay."""
    headers = await h5(client, shop)
    assert (await post(client, "/h5/items", headers, {"items": [{"sku": "tea", "qty": 1}], "request_id": "x"}))[0] == 200
    status, body = await post(client, "/h5/items", headers, {"items": [{"sku": "rice", "qty": 1}], "request_id": "x"})
    assert status == 400 and body["error"]["code"] == "VALIDATION_ERROR"
    assert len(erp.methods("order.add_items")) == 1


async def test_items_after_a_failure_can_be_retried(client, shop, erp):
    """A request that failed at the ERP gives its request_id back, so the same request_id can succeed later."""
    await set_config(client, shop, erp_rpc_timeout_ms=300)
    headers = await h5(client, shop)
    body = {"items": [{"sku": "tea", "qty": 1}], "request_id": "retry-1"}
    erp.behaviour.silent = True
    assert (await post(client, "/h5/items", headers, body))[0] == 503
    erp.behaviour.silent = False
    status, answer = await post(client, "/h5/items", headers, body)
    assert status == 200 and answer["order"]["version"] == 2


async def test_items_during_a_payment_lock_are_refused_by_the_coordinator(client, shop, erp):
    """Dishes added during a payment lock are 409 PAYMENT_LOCKED in H5 words from the coordinator itself (SPEC §9), never sent to the ERP."""
    payer = await h5(client, shop)
    assert (await post(client, "/h5/checkout", payer))[0] == 201
    status, body = await post(client, "/h5/items", await h5(client, shop),
                              {"items": [{"sku": "tea", "qty": 1}], "request_id": "r-locked"})
    assert status == 409 and body["error"]["code"] == "PAYMENT_LOCKED"
    assert body["error"]["message"] == H5_PAYMENT_LOCKED and body["error"]["force_allowed"] is False
    assert len(erp.methods("order.add_items")) == 0


async def test_items_refused_by_the_erp_carry_the_h5_message(client, shop, erp):
    """An ERP that refuses the dishes with PRESETTLED makes the request 409 PRESETTLED."""
    # The bill is printed (a waiter's presettle lock): the ERP's accept_items check refuses the dishes.
    await services(client).engine.acquire(shop.store_id, "o1", {"role": "erp", "terminal_id": shop.b_id,
                                                                "name": "服务员B"}, Kind.PRESETTLE)
    status, body = await post(client, "/h5/items", await h5(client, shop),
                              {"items": [{"sku": "tea", "qty": 1}], "request_id": "r-pre"})
    assert status == 409 and body["error"]["code"] == "PRESETTLED"
    assert body["error"]["message"] == "订单已预结,如需修改请联系服务员"


async def test_items_on_a_table_without_order_ask_the_erp_to_open_one(client, shop, erp):
    """With no open order on the table, add_items goes with order_id null and the new order is the table's."""
    await services(client).directory.put_table(shop.store_id, "T5", "五号桌", SYSTEM)
    table = await services(client).directory.table(shop.store_id, "T5")
    resp = await client.post("/api/v1/h5/sessions", json={"qr_token": table.qr_url.split("qr=", 1)[1]})
    headers = bearer((await resp.json())["session_token"])
    status, body = await post(client, "/h5/items", headers, {"items": [{"sku": "rice", "qty": 1}], "request_id": "new"})
    assert status == 200, body
    assert erp.methods("order.add_items")[0]["order_id"] is None
    assert body["order"]["table_id"] == "T5" and body["order"]["total_cents"] == 2000
    assert (await services(client).engine.table_order(shop.store_id, "T5"))["order_id"] == body["order"]["order_id"]


# --- paying (SPEC §9: provider-confirmed; the diner's own completion is gone) ----------------
#
# The H5 payment tests below pinned the completion path; they now pay through the sandbox
# provider: the diner starts the payment, and a notification signed as the provider signs it
# (tests/support/payments.py) is posted to the notify endpoint.


async def pay(client, headers, grant: dict[str, Any], sandbox, shop, *, amount: int | None = None,
              tx: str = "4200000000001") -> tuple[int, str]:
    """Start a provider payment for a checkout grant and notify it paid; returns (notify status, out_trade_no)."""
    resp = await client.put(f"/api/v1/admin/stores/{shop.store_id}/payments/providers/wechatpay",
                            json=sandbox.credentials["wechatpay"], headers=bearer(ADMIN_TOKEN))
    assert resp.status == 200, await resp.text()
    status, started = await post(client, "/h5/payments/start", headers,
                                 {"token": grant["lock"]["token"], "provider": "wechatpay"})
    assert status == 201, started
    no = started["out_trade_no"]
    note_headers, body = wechat_notification(
        sandbox, out_trade_no=no, amount_cents=grant["order"]["total_cents"] if amount is None else amount,
        transaction_id=tx)
    resp = await client.post(f"/api/v1/payments/notify/wechatpay/{shop.store_id}", data=body, headers=note_headers)
    return resp.status, no


async def record(client, shop, no: str) -> dict[str, Any]:
    """The payment record of ``no``."""
    return (await services(client).payments.ledger.get(shop.store_id, no)).model_dump()


async def _paid(client, shop) -> bool:
    order, _ = await services(client).engine.get_order(shop.store_id, "o1")
    return order["status"] == "paid"


async def _state(client, shop, no: str, state: str) -> bool:
    return (await record(client, shop, no))["state"] == state


async def test_h5_payment_is_confirmed_by_the_erp_with_the_fence(client, shop, erp, sandbox):
    """The provider-confirmed H5 flow marks the order paid once the ERP confirmed order.pay carrying the lock's fence."""
    headers = await h5(client, shop)
    _, grant = await post(client, "/h5/checkout", headers)
    status, no = await pay(client, headers, grant, sandbox, shop)
    assert status in (200, 204)
    await until(lambda: _paid(client, shop))
    [params] = erp.methods("order.pay")
    assert params == {"order_id": "o1", "version": 1, "amount_cents": 3800, "payment_ref": "wechatpay:4200000000001",
                      "fence": grant["lock"]["fence"]}
    assert await services(client).engine.locks(shop.store_id) == []
    assert [e["data"]["payment_ref"] for e in await events(client, shop, "order.paid")] == ["wechatpay:4200000000001"]
    # A replay of the same notification is the same success, with no second order.pay.
    headers2, body = wechat_notification(sandbox, out_trade_no=no, amount_cents=3800, transaction_id="4200000000001")
    resp = await client.post(f"/api/v1/payments/notify/wechatpay/{shop.store_id}", data=body, headers=headers2)
    assert resp.status in (200, 204)
    assert len(erp.methods("order.pay")) == 1


async def test_h5_payment_succeeds_when_the_erp_pushes_the_paid_order_before_answering(client, shop, erp, sandbox):
    """If the ERP's own push of the paid order closes it before order.pay is answered, the payment is still paid."""
    svc = services(client)
    erp.behaviour.push_paid_before_answering = True  # the ERP closes the order as version 2, paid
    headers = await h5(client, shop)
    _, grant = await post(client, "/h5/checkout", headers)
    _, no = await pay(client, headers, grant, sandbox, shop)
    await until(lambda: _state(client, shop, no, "paid"))
    order, _ = await svc.engine.get_order(shop.store_id, "o1")
    assert order["status"] == "paid" and order["version"] == 2
    assert await svc.engine.locks(shop.store_id) == []
    assert await events(client, shop, "payment.rejected") == []


async def test_h5_payment_refused_by_the_erp_is_recorded_and_releases_the_lock(client, shop, erp, sandbox):
    """An ERP refusing order.pay ends in payment.rejected, the lock released, the money a surplus to refund."""
    erp.behaviour.refuse["order.pay"] = AmountMismatch("the ERP's own total differs")
    headers = await h5(client, shop)
    _, grant = await post(client, "/h5/checkout", headers)
    _, no = await pay(client, headers, grant, sandbox, shop)
    await until(lambda: _state(client, shop, no, "surplus"))
    [rejected] = await events(client, shop, "payment.rejected")
    assert rejected["data"]["code"] == "AMOUNT_MISMATCH" and rejected["data"]["payment_ref"] == "wechatpay:4200000000001"
    assert await services(client).engine.locks(shop.store_id) == []
    order, _ = await services(client).engine.get_order(shop.store_id, "o1")
    assert order["status"] == "open"
    assert (await record(client, shop, no))["surplus_reason"] == "erp_refused:AMOUNT_MISMATCH"


async def test_h5_payment_with_a_silent_erp_stays_completing_and_is_retried(client, shop, erp, sandbox):
    """An ERP that does not answer order.pay: the money is kept (SPEC §9) — the lock stays completing, nothing rejected, order.pay retried."""
    await set_config(client, shop, erp_rpc_timeout_ms=400)
    headers = await h5(client, shop)
    _, grant = await post(client, "/h5/checkout", headers)
    erp.behaviour.silent = True
    _, no = await pay(client, headers, grant, sandbox, shop)

    async def retried() -> bool:
        return len(erp.methods("order.pay")) >= 2

    await until(retried, timeout=8)
    assert await events(client, shop, "payment.rejected") == []
    [lock] = await services(client).engine.locks(shop.store_id)
    assert lock["completing"] is True
    assert (await record(client, shop, no))["state"] == "completing"


async def test_h5_payment_with_a_wrong_amount_never_reaches_the_erp(client, shop, erp, sandbox):
    """Money of the wrong amount is a surplus at the coordinator, before any order.pay."""
    headers = await h5(client, shop)
    _, grant = await post(client, "/h5/checkout", headers)
    _, no = await pay(client, headers, grant, sandbox, shop, amount=1)
    assert (await record(client, shop, no))["surplus_reason"] == "amount_mismatch"
    await asyncio.sleep(0.3)
    assert erp.methods("order.pay") == []


async def test_h5_payment_with_an_unknown_token_is_lock_lost(client, shop, erp):
    """Starting a payment with a token that holds no lock is 409 LOCK_LOST with the SPEC message."""
    headers = await h5(client, shop)
    status, body = await post(client, "/h5/payments/start", headers, {"token": "nope", "provider": "wechatpay"})
    assert status == 409 and body["error"]["code"] == "LOCK_LOST"
    assert body["error"]["message"] == "支付已超时或已被其他终端接管,请重新获取订单后再支付"


async def test_h5_payment_in_legacy_mode_sends_the_diner_to_the_front_desk(client, shop, erp, sandbox):
    """In legacy mode the coordinator holds no lock to bind a provider payment to: start is 503 PAYMENT_UNAVAILABLE, nothing paid."""
    await set_config(client, shop, strong_link_enabled=False)
    headers = await h5(client, shop)
    _, grant = await post(client, "/h5/checkout", headers)
    status, body = await post(client, "/h5/payments/start", headers,
                              {"token": grant["lock"]["token"], "provider": "wechatpay"})
    assert status == 503 and body["error"]["code"] == "PAYMENT_UNAVAILABLE"
    assert erp.methods("order.pay") == []


# --- across coordinator processes ---------------------------------------------------------


async def test_rpc_crosses_processes_when_erp_and_h5_are_on_different_coordinators(coordinators, redis_client, uid,
                                                                                   tmp_path, sandbox):
    """The master's socket on process A answers the checkout, dishes and payment a diner sends to process B."""
    a, b = coordinators(2)
    store = f"s-{uid}"
    admin = bearer(ADMIN_TOKEN)
    async with aiohttp.ClientSession() as http:
        async def call(method: str, url: str, headers: dict[str, str], body: Any = None) -> tuple[int, dict]:
            async with http.request(method, url, json=body, headers=headers) as r:
                return r.status, await r.json()

        api_a, api_b = f"{a.url}/api/v1", f"{b.url}/api/v1"
        assert (await call("PUT", f"{api_a}/admin/stores/{store}", admin, {"name": "多进程店"}))[0] == 200
        status, master_terminal = await call("POST", f"{api_a}/admin/stores/{store}/terminals", admin,
                                             {"name": "收银台", "master": True})
        assert status == 201
        status, table = await call("PUT", f"{api_a}/admin/stores/{store}/tables/T1", admin, {"name": "一号桌"})
        assert status == 200
        master_auth = bearer(master_terminal["token"])
        assert (await call("PUT", f"{api_a}/stores/{store}/orders/o1", master_auth, order_body()))[0] == 200

        db = erp_database(tmp_path / "erp.sqlite")
        master = await start_master(a.url, store, master_terminal["token"], db)
        try:
            async def registered() -> bool:
                return await redis_client.zcard(keys.erp_masters(store)) > 0

            await until(registered)
            status, session = await call("POST", f"{api_b}/h5/sessions", {},
                                         {"qr_token": table["qr_url"].split("qr=", 1)[1]})
            assert status == 201
            diner = bearer(session["session_token"])
            status, added = await call("POST", f"{api_b}/h5/items", diner,
                                       {"items": [{"sku": "tea", "qty": 1}], "request_id": "mp-1"})
            assert status == 200, added
            assert added["order"]["version"] == 2
            status, grant = await call("POST", f"{api_b}/h5/checkout", diner)
            assert status == 201, grant
            assert grant["order"]["version"] == 2 and grant["lock"]["version"] == 2
            status, _ = await call("PUT", f"{api_a}/admin/stores/{store}/payments/providers/wechatpay", admin,
                                   sandbox.credentials["wechatpay"])
            assert status == 200
            status, started = await call("POST", f"{api_b}/h5/payments/start", diner,
                                         {"token": grant["lock"]["token"], "provider": "wechatpay"})
            assert status == 201, started
            note_headers, body = wechat_notification(sandbox, out_trade_no=started["out_trade_no"],
                                                     amount_cents=grant["order"]["total_cents"], transaction_id="42mp")
            async with http.post(f"{api_b}/payments/notify/wechatpay/{store}", data=body, headers=note_headers) as r:
                assert r.status in (200, 204)

            async def paid() -> bool:
                return await redis_client.hget(keys.order(store, "o1"), "status") == b"paid"

            await until(paid)
        finally:
            await asyncio.wait_for(master.stop(), 10)
            db.close()
        assert [m for m, _ in master.rpc.received] == ["order.add_items", "order.fetch", "order.pay"]
        assert master.rpc.calls_of("order.pay")[0]["fence"] == grant["lock"]["fence"]
