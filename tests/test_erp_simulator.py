"""The ERP simulator: its pure store view, then terminals on a real coordinator (websocket, RPC, force)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from erp_simulator.client import Refused
from erp_simulator.db import ErpDatabase
from erp_simulator.errors import AcceptRefused, FenceRejected
from erp_simulator.scenario import run_scenario
from erp_simulator.seed import seed
from erp_simulator.simulator import Simulator
from erp_simulator.view import LockEnded, Resynced, StoreView
from h5_client.client import H5Client, H5Error
from tests.support.app import ADMIN_TOKEN, bearer
from tests.support.payments import wechat_notification

# --- the pure view ---------------------------------------------------------------------------


def _lock(kind: str = "order", fence: int = 1, order_id: str = "o1", terminal_id: str = "Ta",
          expires_at: int = 10_000, name: str = "收银台") -> dict[str, Any]:
    return {"kind": kind, "order_id": order_id, "table_id": "T1", "fence": fence, "version": None,
            "acquired_at": 0, "expires_at": expires_at, "completing": False,
            "holder": {"role": "erp", "terminal_id": terminal_id, "name": name, "online": True}}


def _event(seq: int, name: str, ts: int = 1_000, **data: Any) -> dict[str, Any]:
    return {"type": "event", "seq": seq, "ts": ts, "name": name, "store_id": "s", "table_id": "T1",
            "order_id": "o1", "data": data}


def test_view_follows_acquire_and_release():
    """A lock appears on lock.acquired and goes on the lock.released that names its fence."""
    view = StoreView()
    view.apply(_event(1, "lock.acquired", lock=_lock(fence=3)))
    assert [l["fence"] for l in view.live_locks("o1", now=5_000)] == [3]
    happened = view.apply(_event(2, "lock.released", lock=_lock(fence=3), reason="released"))
    assert view.live_locks("o1", now=5_000) == []
    assert isinstance(happened[0], LockEnded) and happened[0].how == "lock.released"


def test_an_old_end_event_never_removes_a_newer_lock():
    """lock.forced for fence 3 leaves fence 4 (the forcer's lock) in place; the happening names the forcer."""
    view = StoreView()
    view.apply(_event(1, "lock.acquired", lock=_lock(fence=3)))
    forcer = {"role": "erp", "terminal_id": "Tb", "name": "服务员B", "online": True}
    happened = view.apply(_event(2, "lock.forced", lock=_lock(fence=3), by=forcer))
    view.apply(_event(3, "lock.acquired", lock=_lock("payment", fence=4, terminal_id="Tb")))
    view.apply(_event(4, "lock.released", lock=_lock(fence=3), reason="released"))
    assert [(l["kind"], l["fence"]) for l in view.live_locks("o1", now=0)] == [("payment", 4)]
    assert happened[0].by == forcer and view.fences["o1"] == 4


def test_repeated_events_are_ignored_and_seq_advances():
    """An event whose seq was already applied (resume overlap) changes nothing."""
    view = StoreView()
    view.apply(_event(5, "lock.acquired", lock=_lock(fence=1)))
    view.apply(_event(6, "lock.released", lock=_lock(fence=1), reason="released"))
    view.apply(_event(5, "lock.acquired", lock=_lock(fence=1)))
    assert view.seq == 6 and view.live_locks("o1", now=0) == []


def test_expired_locks_never_show_even_before_their_event():
    """A lock past expires_at is not live, whether or not lock.expired has arrived."""
    view = StoreView()
    view.apply(_event(1, "lock.acquired", lock=_lock(expires_at=2_000)))
    assert view.live_locks("o1", now=1_999) and not view.live_locks("o1", now=2_000)


def test_snapshot_replaces_the_view_and_reports_vanished_locks():
    """A snapshot replaces orders and locks; locks it no longer has come back as Resynced."""
    view = StoreView()
    view.apply(_event(1, "lock.acquired", lock=_lock(fence=1)))
    order = {"order_id": "o2", "table_id": "T2", "version": 3, "status": "open", "items": [], "total_cents": 0}
    happened = view.apply({"type": "snapshot", "seq": 40, "orders": [order],
                           "locks": [_lock("presettle", fence=9, order_id="o2")]})
    assert view.seq == 40 and set(view.orders) == {"o2"}
    assert [l["kind"] for l in view.live_locks("o2", now=0)] == ["presettle"]
    assert isinstance(happened[0], Resynced) and happened[0].locks[0]["fence"] == 1


def test_terminal_status_updates_holders_online_flag():
    """terminal.status turns a holder's online flag off in the view's locks."""
    view = StoreView()
    view.apply(_event(1, "lock.acquired", lock=_lock(terminal_id="Tb")))
    view.apply(_event(2, "terminal.status", terminal_id="Tb", online=False))
    assert view.live_locks("o1", now=0)[0]["holder"]["online"] is False


def test_closing_an_order_drops_its_locks_and_clock_offset_is_estimated():
    """order.paid stores the paid order and drops its locks; event ts sets the clock offset."""
    view = StoreView()
    view.apply(_event(1, "lock.acquired", lock=_lock("payment", fence=2)), local_ms=900)
    paid = {"order_id": "o1", "table_id": "T1", "version": 1, "status": "paid", "items": [], "total_cents": 0}
    view.apply(_event(2, "order.paid", ts=1_200, order=paid, payment_ref="p"), local_ms=1_000)
    assert view.orders["o1"]["status"] == "paid" and view.live_locks("o1", now=0) == []
    assert view.clock_offset_ms == 200


# --- terminals on a real coordinator (in-process app, real sockets, real Redis) ----------------

ORDER_LOCKED_CONFIRM = "此订单正在其他机器修改,是否强制解锁并继续?"
ACCEPT_REFUSED = "订单正在其他机器/顾客端进行支付,暂不能接单,如需接单请先取消支付"


@pytest.fixture
def redis_url(redis_single_url: str) -> str:
    """These tests exercise the ERP side: one Redis node is enough (the coordinator tests cover the cluster)."""
    return redis_single_url



@pytest.fixture
async def sim(store, tmp_path):
    """The store's ERP (seeded: menu, tables, an open order on T1) with its three terminals connected."""
    db = ErpDatabase(tmp_path / "erp.sqlite")
    seed(db)
    simulator = Simulator(store.base_url, store.store_id, store.terminals, db, min_backoff=0.05, max_backoff=0.5)
    await simulator.start(wait=10)
    order_id = db.table_order("T1")["order_id"]
    await eventually(lambda: all(order_id in t.view.orders for t in simulator.terminals), what="T1's order pushed")
    yield simulator
    await simulator.stop()
    db.close()


async def eventually(check: Callable[[], Any], timeout: float = 3.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.02)


def t1(sim: Simulator) -> str:
    """The id of the open order on T1."""
    return sim.db.table_order("T1")["order_id"]


async def test_master_pushes_the_erp_orders_and_every_terminal_sees_them(sim, client, store):
    """On connect the master pushes the ERP's open order; every terminal's view then holds that version."""
    order = sim.db.table_order("T1")
    for terminal in sim.terminals:
        await eventually(lambda t=terminal: t.view.orders.get(order["order_id"], {}).get("version") == order["version"],
                         what=f"{terminal.name} sees {order['order_id']}")
    got = await client.get(f"/api/v1/stores/{store.store_id}/orders/{order['order_id']}",
                           headers=bearer(store.terminals[1].token))
    assert (await got.json())["order"]["items"] == order["items"]


async def test_editor_lock_is_seen_by_others_and_force_tells_the_loser_who(sim):
    """A's editor shows as A's lock on B within 1 s; B's checkout asks to force; forcing tells A it was B."""
    a, b = sim.terminal("secondary1"), sim.terminal("secondary2")
    order_id = t1(sim)
    grant = await a.open_editor(order_id)
    seen = await eventually(lambda: b.view.lock_of(order_id, "order", b.now()), timeout=1.0, what="B sees A's lock")
    assert seen["holder"]["name"] == "服务员A" and seen["holder"]["online"] is True
    with pytest.raises(Refused) as refused:
        await b.checkout(order_id)
    assert (refused.value.code, refused.value.force_allowed) == ("ORDER_LOCKED", True)
    assert refused.value.message == ORDER_LOCKED_CONFIRM
    paying = await b.checkout(order_id, force=True)
    notice = await eventually(lambda: next((n for n in a.notices if n["kind"] == "forced"), None), what="A told")
    assert notice["by"]["name"] == "服务员B" and "服务员B" in notice["message"]
    assert (order_id, "order") not in a.held
    # A's editor, had it stayed open, writes with its old fence: the ERP refuses it.
    await eventually(lambda: sim.db.highest_fence(order_id) >= paying["fence"], what="fence observed")
    with pytest.raises(FenceRejected):
        sim.db.remove_line(order_id, "l1", fence=grant["fence"])
    with pytest.raises(Refused) as not_editing:
        await a.remove_line(order_id, "l1")
    assert not_editing.value.code == "NOT_EDITING"


async def test_editing_pushes_each_version_and_submit_clears_the_lock(sim):
    """Adding and removing dishes in the editor pushes versions; 落单 releases the lock everywhere."""
    a, master = sim.terminal("secondary1"), sim.master
    order_id = t1(sim)
    before = sim.db.order(order_id)["version"]
    await a.open_editor(order_id)
    added = await a.add_dishes(order_id, [{"sku": "soup", "qty": 1}])
    removed = await a.remove_line(order_id, added["items"][-1]["line_id"])
    assert (added["version"], removed["version"]) == (before + 1, before + 2)
    await eventually(lambda: master.view.orders[order_id]["version"] == before + 2, what="master sees v+2")
    assert await a.submit(order_id) is True
    await eventually(lambda: not master.view.live_locks(order_id, master.now()), what="lock gone on master")


async def test_presettle_freezes_the_order_until_undone(sim):
    """预结 converts the editor; adding dishes is then PRESETTLED; 反预结 lets them in again."""
    a = sim.terminal("secondary1")
    order_id = t1(sim)
    await a.open_editor(order_id)
    await a.presettle(order_id)
    assert (order_id, "order") not in a.held and (order_id, "presettle") in a.held
    with pytest.raises(Refused) as refused:
        await a.add_dishes(order_id, [{"sku": "tea", "qty": 1}])
    assert refused.value.code == "PRESETTLED"
    assert await a.unpresettle(order_id) is True
    assert (await a.add_dishes(order_id, [{"sku": "tea", "qty": 1}]))["items"][-1]["sku"] == "tea"


async def test_erp_terminal_checkout_and_complete_marks_paid_everywhere(sim, client, store):
    """结账 then 完成支付 marks the order paid at the coordinator and in the ERP database."""
    b = sim.terminal("secondary2")
    order_id = t1(sim)
    await b.checkout(order_id)
    paid = await b.complete_payment(order_id, payment_ref="cash-1")
    assert paid["status"] == "paid" and sim.db.payment(order_id)["payment_ref"] == "cash-1"
    got = await client.get(f"/api/v1/stores/{store.store_id}/orders/{order_id}", headers=bearer(store.terminals[0].token))
    assert (await got.json())["order"]["status"] == "paid"


async def test_lock_traffic_goes_over_the_socket_as_commands(sim):
    """A terminal's check, editor lock, renewal, force, release and completion all travel as websocket commands, none over HTTP."""
    a, b = sim.terminal("secondary1"), sim.terminal("secondary2")
    order_id = t1(sim)
    await a.open_editor(order_id)
    assert (await a.locks.renew(order_id, "order", a.held[(order_id, "order")]["token"]))["kind"] == "order"
    await a.add_dishes(order_id, [{"sku": "tea", "qty": 1}])
    assert await a.submit(order_id) is True
    await a.open_editor(order_id)
    with pytest.raises(Refused) as refused:  # a refusal arrives as the SPEC error, over the socket too
        await b.checkout(order_id)
    assert (refused.value.code, refused.value.status, refused.value.force_allowed) == ("ORDER_LOCKED", 409, True)
    await b.checkout(order_id, force=True)
    await b.complete_payment(order_id, payment_ref="ws-cash-1")
    assert a.locks.sent == {"websocket": 4, "http": 0}
    assert b.locks.sent == {"websocket": 3, "http": 0}
    assert sim.db.payment(order_id)["payment_ref"] == "ws-cash-1"


async def test_without_a_socket_lock_requests_fall_back_to_http(sim):
    """While a terminal has no socket its lock requests go over HTTP with the same answers."""
    a = sim.terminal("secondary1")
    order_id = t1(sim)
    a.locks.detach()  # as when the socket has just dropped, before the terminal reconnects
    await a.open_editor(order_id)
    assert await a.submit(order_id) is True
    assert a.locks.sent == {"websocket": 0, "http": 2}


async def test_legacy_mode_refuses_nothing_and_the_erp_closes_the_order_itself(sim, client, store):
    """With strong_link_enabled off nothing is refused; 完成支付 records the payment and pushes the paid order."""
    off = await client.patch(f"/api/v1/admin/stores/{store.store_id}/config", json={"strong_link_enabled": False},
                             headers=bearer(ADMIN_TOKEN))
    assert off.status == 200
    a, b = sim.terminal("secondary1"), sim.terminal("secondary2")
    order_id = t1(sim)
    version = sim.db.order(order_id)["version"]
    assert (await a.open_editor(order_id))["enforced"] is False
    assert (await b.checkout(order_id))["enforced"] is False  # no ORDER_LOCKED in legacy mode
    paid = await b.complete_payment(order_id, payment_ref="legacy-1")
    assert (paid["status"], paid["version"]) == ("paid", version + 1)
    got = await client.get(f"/api/v1/stores/{store.store_id}/orders/{order_id}", headers=bearer(store.terminals[0].token))
    assert (await got.json())["order"]["status"] == "paid"
    assert await a.submit(order_id) is True  # nothing was stored, nothing to give back


async def test_h5_add_on_is_auto_accepted_by_the_master(sim, store):
    """A diner's dishes go through the master's RPC into the ERP database (h5 lines) and back to the diner."""
    async with await H5Client.open(store.base_url, store.qr) as diner:
        order = await diner.add_items([("beer", 2)], request_id="r-1")
    assert order["items"][-1]["sku"] == "beer" and order["items"][-1]["source"] == "h5"
    assert sim.db.order(order["order_id"]) == {k: v for k, v in order.items() if k != "updated_at"}
    assert any(n["kind"] == "accepted" for n in sim.master.notices)


async def test_master_refuses_to_accept_under_a_payment_lock_with_the_spec_toast(sim, store):
    """Under a payment lock the diner gets PAYMENT_LOCKED, and the master's own accept check refuses with the toast."""
    b = sim.terminal("secondary2")
    order_id = t1(sim)
    before = sim.db.order(order_id)
    await b.checkout(order_id)
    async with await H5Client.open(store.base_url, store.qr) as diner:
        with pytest.raises(H5Error) as refused:
            await diner.add_items([("beer", 1)], request_id="r-2")
    assert refused.value.code == "PAYMENT_LOCKED"
    with pytest.raises(AcceptRefused) as accept:
        await sim.master.rpc.add_items({"order_id": order_id, "table_id": "T1", "items": [{"sku": "beer", "qty": 1}],
                                        "request_id": "r-3"})
    assert (accept.value.code, accept.value.message) == ("PAYMENT_LOCKED", ACCEPT_REFUSED)
    assert sim.master.notices[-1]["message"] == ACCEPT_REFUSED
    assert sim.db.order(order_id) == before


async def test_h5_payment_is_confirmed_by_the_master_with_its_fence(sim, store, client, sandbox):
    """A diner pays through the provider: the master checks the fence and marks the ERP order paid; a lower fence is refused."""
    order_id = t1(sim)
    async with await H5Client.open(store.base_url, store.qr) as diner:
        grant = await diner.checkout()
        # The master learns the grant's fence from its lock.acquired event, which may trail the HTTP answer.
        await eventually(lambda: sim.db.highest_fence(order_id) >= grant["lock"]["fence"], what="master saw the fence")
        with pytest.raises(FenceRejected):
            await sim.master.rpc.pay({"order_id": order_id, "version": grant["order"]["version"],
                                      "amount_cents": grant["order"]["total_cents"], "payment_ref": "x",
                                      "fence": grant["lock"]["fence"] - 1})
        admin = bearer(ADMIN_TOKEN)
        resp = await client.put(f"/api/v1/admin/stores/{store.store_id}/payments/providers/wechatpay",
                                json=sandbox.credentials["wechatpay"], headers=admin)
        assert resp.status == 200, await resp.text()
        started = await diner.start_payment(grant["lock"]["token"], "wechatpay")
        headers, body = wechat_notification(sandbox, out_trade_no=started["out_trade_no"],
                                            amount_cents=grant["order"]["total_cents"], transaction_id="wx-1")
        resp = await client.post(f"/api/v1/payments/notify/wechatpay/{store.store_id}", data=body, headers=headers)
        assert resp.status in (200, 204)
        await eventually(lambda: sim.db.order(order_id)["status"] == "paid", what="ERP order paid")
    assert sim.db.payment(order_id)["payment_ref"] == "wechatpay:wx-1"


async def test_terminal_resumes_after_a_drop_without_losing_events(sim):
    """After its socket drops, a terminal reconnects with since and learns what happened meanwhile."""
    a, b = sim.terminal("secondary1"), sim.terminal("secondary2")
    order_id = t1(sim)
    await a._ws.close()  # the network drops
    await b.open_editor(order_id)
    await eventually(lambda: a.connections >= 2 and a.connected, what="A reconnected")
    await eventually(lambda: a.view.lock_of(order_id, "order", a.now()), what="A learns of B's lock")
    assert a.view.lock_of(order_id, "order", a.now())["holder"]["terminal_id"] == b.terminal_id


async def test_revoked_terminal_stops_reconnecting(sim, client, store):
    """DELETE of a terminal closes its socket with 4401; the terminal marks itself revoked and stays down."""
    a = sim.terminal("secondary1")
    gone = await client.delete(f"/api/v1/admin/stores/{store.store_id}/terminals/{a.terminal_id}",
                               headers=bearer(ADMIN_TOKEN))
    assert gone.status == 204
    await eventually(lambda: a.revoked, what="A revoked")
    await asyncio.sleep(0.3)
    assert not a.connected and any(n["kind"] == "revoked" for n in a.notices)


async def test_scenario_plays_steps_and_checks_expectations(sim):
    """A scenario's steps run in order; a step meeting its expected refusal passes, force succeeds."""
    scenario = {"step": [
        {"terminal": "secondary1", "action": "open_editor", "table": "T1"},
        {"terminal": "secondary2", "action": "checkout", "table": "T1", "expect": "ORDER_LOCKED"},
        {"terminal": "secondary2", "action": "checkout", "table": "T1", "force": True},
        {"terminal": "secondary2", "action": "complete_payment", "table": "T1"},
        {"terminal": "master", "action": "open_order", "table": "T2", "items": [{"sku": "tea", "qty": 1}]},
    ]}
    results = await run_scenario(sim, scenario, say=lambda line: None)
    assert [r.outcome for r in results] == ["ok", "ORDER_LOCKED", "ok", "ok", "ok"]
    assert sim.db.table_order("T1") is None and sim.db.table_order("T2")["version"] == 1


async def test_erp_command_runs_a_scenario_headless(store, tmp_path):
    """`tablelock erp --scenario` connects the store's terminals, plays the file and exits 0."""
    tokens = tmp_path / "terminals.toml"
    tokens.write_text("".join(
        f'[[terminals]]\ntoken = "{s.token}"\nname = "{s.name}"\nmaster = {str(s.master).lower()}\n\n'
        for s in store.terminals))
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(
        '[[step]]\nterminal = "secondary1"\naction = "open_editor"\ntable = "T1"\n\n'
        '[[step]]\nterminal = "master"\naction = "checkout"\ntable = "T1"\nexpect = "ORDER_LOCKED"\n\n'
        '[[step]]\nterminal = "secondary1"\naction = "submit"\ntable = "T1"\n'
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "coordinator.cli", "erp", "--coordinator", store.base_url, "--store", store.store_id,
        "--token-file", str(tokens), "--db", str(tmp_path / "cli.sqlite"), "--seed", "--scenario", str(scenario),
        "--pages-port", "0", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "ORDER_LOCKED" in text and "scenario done" in text and "waiter page 收银台" in text
