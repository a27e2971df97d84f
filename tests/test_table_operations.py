"""Move (换桌) and merge (并桌) through the API with the ERP simulator's master (SPEC §11): each lock
state with and without force, locks following their order, the old table told, diners following
their order, and races with a checkout and an add-on that lose nothing."""

from __future__ import annotations

import asyncio
import json

import pytest

from coordinator.core.errors import TablelockError
from coordinator.core.models import OrderIn
from coordinator.core.rules import Kind
from coordinator.store import keys
from erp_simulator.errors import OrderClosed
from tests.support.app import ADMIN_TOKEN, Shop, bearer, post, services
from tests.support.ws_socket import open_socket

SOUP = [{"sku": "soup", "qty": 1}]


def holder(shop: Shop, which: str) -> dict:
    """The holder dict of terminal A or B."""
    return {"role": "erp", "terminal_id": getattr(shop, f"{which}_id"), "name": "收银台" if which == "a" else "服务员B"}


async def second_table(client, shop: Shop, erp, *, order: bool = True) -> None:
    """Table T2 in both the coordinator and the ERP, with order o2 (汤, 1,500 cents) on it when ``order``."""
    svc = services(client)
    await svc.directory.put_table(shop.store_id, "T2", "二号桌", {"role": "admin"})
    erp.db.put_table("T2", "二号桌")
    if order:
        o2 = erp.db.open_order("T2", SOUP, order_id="o2")
        await svc.engine.put_order(shop.store_id, OrderIn.model_validate(o2), holder(shop, "a"))


async def move(client, shop: Shop, token: str, to: str = "T2", force: bool = False) -> tuple[int, dict]:
    """POST .../orders/o1/move."""
    return await post(client, f"/stores/{shop.store_id}/orders/o1/move", bearer(token), {"to_table_id": to, "force": force})


async def merge(client, shop: Shop, token: str, force: bool = False) -> tuple[int, dict]:
    """POST .../orders/o1/merge {from: [o2]}."""
    return await post(client, f"/stores/{shop.store_id}/orders/o1/merge", bearer(token),
                      {"from_order_ids": ["o2"], "force": force})


async def set_lock_field(client, shop: Shop, order_id: str, slot: str, **fields) -> None:
    """Change a stored lock as another branch's code would (payments: phase in_flight)."""
    redis = services(client).redis
    lock = json.loads(await redis.hget(keys.locks(shop.store_id, order_id), slot))
    lock.update(fields)
    await redis.hset(keys.locks(shop.store_id, order_id), slot, json.dumps(lock))


async def share_paid(client, shop: Shop, order_id: str, cents: int) -> None:
    """Mark a share of the order paid as split bill would (``paid_cents`` on the stored order)."""
    redis = services(client).redis
    key = keys.order(shop.store_id, order_id)
    order = json.loads(await redis.hget(key, "json"))
    order["paid_cents"] = cents
    await redis.hset(key, "json", json.dumps(order))


async def events(client, shop: Shop) -> list[dict]:
    """Every event of the shop, oldest first."""
    return [json.loads(f[b"e"]) for _, f in await services(client).redis.xrange(keys.events(shop.store_id))]


async def locks_on_right_tables(client, shop: Shop) -> None:
    """Invariant: every live lock names the table its order is at."""
    svc = services(client)
    for lock in await svc.engine.locks(shop.store_id):
        order, _ = await svc.engine.get_order(shop.store_id, lock["order_id"])
        assert lock["table_id"] == order["table_id"], lock


async def test_a_free_order_moves_and_everyone_is_told(client, shop, erp):
    """A move of a free order: the ERP moves it (new version), the coordinator stores it, the old table gets order.moved."""
    await second_table(client, shop, erp, order=False)
    status, body = await move(client, shop, shop.b)
    assert status == 200, body
    assert body["order"]["table_id"] == "T2" and body["order"]["version"] == 2 and body["locks"] == []
    assert erp.db.order("o1")["table_id"] == "T2"
    assert erp.methods("order.move")[0]["to_table_id"] == "T2"
    moved = [e for e in await events(client, shop) if e["name"] == "order.moved"]
    assert len(moved) == 1 and moved[0]["table_id"] == "T1"
    assert moved[0]["data"]["from_table_id"] == "T1" and moved[0]["data"]["to_table_id"] == "T2"
    assert (await services(client).engine.table_order(shop.store_id, "T2"))["order_id"] == "o1"
    assert await services(client).engine.table_order(shop.store_id, "T1") is None


async def test_moving_to_an_unknown_or_the_same_table_changes_nothing(client, shop, erp):
    """An unknown target table is 404, the order's own table 400, before any lock is taken or the ERP is asked."""
    status, _ = await move(client, shop, shop.b, to="T9")
    assert status == 404 and erp.methods("order.move") == []
    status, body = await move(client, shop, shop.b, to="T1")
    assert status == 400 and body["error"]["code"] == "VALIDATION_ERROR" and erp.methods("order.move") == []
    assert await services(client).engine.locks(shop.store_id) == []


async def lock_state(client, shop: Shop, state: str) -> None:
    """Put order o1 in ``state``."""
    engine = services(client).engine
    diner = {"role": "h5", "session_id": "d1"}
    if state == "order_by_other":
        await engine.acquire(shop.store_id, "o1", holder(shop, "a"), Kind.ORDER)
    elif state == "presettle":
        await engine.acquire(shop.store_id, "o1", holder(shop, "a"), Kind.PRESETTLE)
    elif state == "payment_claimed":
        await engine.acquire(shop.store_id, "o1", diner, Kind.PAYMENT)
    elif state == "in_flight":
        await engine.acquire(shop.store_id, "o1", diner, Kind.PAYMENT)
        await set_lock_field(client, shop, "o1", "pay", phase="in_flight", out_trade_no="TLnotrade")
    elif state == "share_paid":
        await share_paid(client, shop, "o1", 900)


#: state → (code without force, whether force is allowed, refund reason opened by force)
STATES = {
    "order_by_other": ("ORDER_LOCKED", True, None),
    "presettle": ("PRESETTLED", True, None),
    "payment_claimed": ("PAYMENT_LOCKED", True, None),
    "in_flight": ("PAYMENT_IN_FLIGHT", True, "payment_in_flight"),
    "share_paid": ("SHARE_PAID", True, "share_paid"),
}


@pytest.mark.parametrize("operation", ["move", "merge"])
@pytest.mark.parametrize("state", sorted(STATES))
async def test_each_lock_state_refuses_then_force_goes_through(client, shop, erp, state, operation):
    """Under each lock state the operation is 409 with force_allowed and the ERP untouched; forced, it breaks the locks, opens the refund and applies."""
    await second_table(client, shop, erp)
    await lock_state(client, shop, state)
    code, forceable, refund = STATES[state]
    run = move if operation == "move" else merge
    status, body = await run(client, shop, shop.b)
    assert status == 409 and body["error"]["code"] == code, body
    assert body["error"]["force_allowed"] is forceable
    assert erp.methods(f"order.{operation}") == []
    status, body = await run(client, shop, shop.b, force=True)
    assert status == 200, body
    assert [r["reason"] for r in body["refund_tasks"]] == ([refund] if refund else [])
    assert body["locks"] == [] and await services(client).engine.locks(shop.store_id) == []
    names = [e["name"] for e in await events(client, shop)]
    if state != "share_paid":
        assert "lock.forced" in names
    if refund:
        assert "refund.needed" in names
    await locks_on_right_tables(client, shop)


@pytest.mark.parametrize("operation", ["move", "merge"])
async def test_a_completing_payment_cannot_be_forced(client, shop, erp, operation):
    """While the ERP confirms a diner's money (completing) the operation is refused even forced, force_allowed false."""
    await second_table(client, shop, erp)
    engine = services(client).engine
    diner = {"role": "h5", "session_id": "d1"}
    await engine.acquire(shop.store_id, "o1", diner, Kind.PAYMENT)
    # As pay_capture.lua marks it when the provider's money arrives (the ERP is being asked).
    await set_lock_field(client, shop, "o1", "pay", completing=True, phase="completing",
                         expires_at=await engine.now() + 86_400_000)
    run = move if operation == "move" else merge
    for force in (False, True):
        status, body = await run(client, shop, shop.b, force=force)
        assert status == 409 and body["error"]["code"] == "PAYMENT_IN_FLIGHT"
        assert body["error"]["force_allowed"] is False
    assert erp.methods(f"order.{operation}") == []


async def test_the_movers_own_order_lock_follows_the_order(client, shop, erp):
    """A waiter editing the order moves it: its order lock is kept and now names the new table."""
    await second_table(client, shop, erp, order=False)
    mine, _ = await services(client).engine.acquire(shop.store_id, "o1", holder(shop, "b"), Kind.ORDER)
    status, body = await move(client, shop, shop.b)
    assert status == 200, body
    assert [(l["kind"], l["table_id"], l["fence"]) for l in body["locks"]] == [("order", "T2", mine["fence"])]
    await locks_on_right_tables(client, shop)


async def test_a_merge_folds_the_lines_and_closes_the_source(client, shop, erp):
    """o2 merged into o1: o1 has every line and the new total, o2 is closed, T2 gets order.merged naming o1."""
    await second_table(client, shop, erp)
    status, body = await merge(client, shop, shop.b)
    assert status == 200, body
    order = body["order"]
    assert order["total_cents"] == 3800 + 1500 and len(order["items"]) == 3 and order["version"] == 2
    o2, _ = await services(client).engine.get_order(shop.store_id, "o2")
    assert o2["status"] == "cancelled"
    merged = [e for e in await events(client, shop) if e["name"] == "order.merged"]
    assert len(merged) == 1 and merged[0]["table_id"] == "T2" and merged[0]["order_id"] == "o2"
    assert merged[0]["data"]["into"] == "o1" and merged[0]["data"]["from"] == ["o2"]
    assert merged[0]["data"]["order"]["total_cents"] == 5300


async def test_merge_refuses_the_target_among_its_sources(client, shop, erp):
    """Merging an order into itself is 400 and takes no lock."""
    status, body = await post(client, f"/stores/{shop.store_id}/orders/o1/merge", bearer(shop.b),
                              {"from_order_ids": ["o1"]})
    assert status == 400 and body["error"]["code"] == "VALIDATION_ERROR"


async def test_the_erp_refusing_gives_the_locks_back(client, shop, erp):
    """When the ERP refuses the move, the operation's lock is released and the order stays where it was."""
    await second_table(client, shop, erp, order=False)
    erp.behaviour.refuse["order.move"] = OrderClosed("closed at the till")
    status, body = await move(client, shop, shop.b)
    assert status == 409 and body["error"]["code"] == "ORDER_CLOSED"
    assert await services(client).engine.locks(shop.store_id) == []
    order, _ = await services(client).engine.get_order(shop.store_id, "o1")
    assert order["table_id"] == "T1"


async def test_diners_follow_their_moved_order_and_a_new_party_does_not(client, shop, erp):
    """A session opened at T1 before the move sees o1 at T2 without scanning; one opened after sees T1 empty."""
    await second_table(client, shop, erp, order=False)
    svc = services(client)
    before, _, _ = svc.auth.new_session(shop.store_id, "T1", await svc.engine.now())
    sock, _, _ = await open_socket(client, f"/api/v1/ws?token={before}")
    await asyncio.sleep(0.002)
    assert (await move(client, shop, shop.b))[0] == 200
    told = await sock.event("order.moved")
    assert told["data"]["to_table_id"] == "T2" and told["data"]["order"]["order_id"] == "o1"
    await sock.ws.close()
    view = await (await client.get("/api/v1/h5/table", headers=bearer(before))).json()
    assert view["table"]["table_id"] == "T2" and view["order"]["order_id"] == "o1"
    await asyncio.sleep(0.002)
    after, _, _ = svc.auth.new_session(shop.store_id, "T1", await svc.engine.now())
    view = await (await client.get("/api/v1/h5/table", headers=bearer(after))).json()
    assert view["table"]["table_id"] == "T1" and view["order"] is None
    resubscribed, _, snapshot = await open_socket(client, f"/api/v1/ws?token={before}")
    assert [o["order_id"] for o in snapshot["orders"]] == ["o1"] and snapshot["orders"][0]["table_id"] == "T2"
    await resubscribed.ws.close()


async def test_diners_of_a_merged_order_see_the_merged_order(client, shop, erp):
    """A session at T2 (o2) sees o1 with the merged lines after o2 is merged into o1."""
    await second_table(client, shop, erp)
    svc = services(client)
    diner, _, _ = svc.auth.new_session(shop.store_id, "T2", await svc.engine.now())
    await asyncio.sleep(0.002)
    assert (await merge(client, shop, shop.b))[0] == 200
    view = await (await client.get("/api/v1/h5/table", headers=bearer(diner))).json()
    assert view["order"]["order_id"] == "o1" and view["order"]["total_cents"] == 5300


async def test_a_move_racing_a_checkout_leaves_no_lock_on_the_wrong_table(client, shop, erp):
    """A diner's checkout and a waiter's move at once: one of them is refused or they serialise; every lock names its order's table."""
    await second_table(client, shop, erp, order=False)
    svc = services(client)
    diner, _, _ = svc.auth.new_session(shop.store_id, "T1", await svc.engine.now())
    for _ in range(3):
        checkout, moved = await asyncio.gather(
            post(client, "/h5/checkout", bearer(diner), {}), move(client, shop, shop.b, to="T2"),
        )
        assert checkout[0] in (201, 409) and moved[0] in (200, 409), (checkout, moved)
        await locks_on_right_tables(client, shop)
        order, _ = await svc.engine.get_order(shop.store_id, "o1")
        assert order == erp.db.order("o1") | {"updated_at": order["updated_at"]}
        if checkout[0] == 201:
            lock = checkout[1]["lock"]
            assert lock["version"] <= order["version"]
            await post(client, "/h5/checkout/cancel", bearer(diner), {"token": lock["token"]})
        # and back again for the next round
        await post(client, f"/stores/{shop.store_id}/orders/o1/move", bearer(shop.b), {"to_table_id": "T1", "force": True})


async def test_a_merge_racing_an_add_on_loses_no_line(client, shop, erp):
    """A diner adds soup to o2 while o2 is merged into o1: the soup ends in o1 or the add-on is refused, never lost."""
    await second_table(client, shop, erp)
    svc = services(client)
    diner, _, _ = svc.auth.new_session(shop.store_id, "T2", await svc.engine.now())
    added, merged = await asyncio.gather(
        post(client, "/h5/items", bearer(diner), {"items": [{"sku": "tea", "qty": 3}], "request_id": "r1"}),
        merge(client, shop, shop.b),
    )
    assert merged[0] in (200, 409), merged
    o1 = erp.db.order("o1")
    teas = sum(i["qty"] for i in o1["items"] if i["sku"] == "tea")
    if merged[0] == 200 and added[0] == 200 and added[1]["order"]["order_id"] == "o2":
        assert teas == 2 + 3  # the add-on landed in o2 before the merge and was carried over
    stored, _ = await svc.engine.get_order(shop.store_id, "o1")
    assert stored["total_cents"] == o1["total_cents"] and stored["version"] == o1["version"]
    assert sum(i["qty"] for i in stored["items"]) == sum(i["qty"] for i in o1["items"])


async def test_a_forced_move_of_a_paid_share_is_a_reconciliation_case(client, shop, erp):
    """Forcing a move over a paid share opens a refund task that the admin's reconciliation report lists."""
    await second_table(client, shop, erp, order=False)
    await share_paid(client, shop, "o1", 900)
    status, body = await move(client, shop, shop.b, force=True)
    assert status == 200 and body["refund_tasks"] == [{"order_id": "o1", "reason": "share_paid", "paid_cents": 900}]
    resp = await client.get(f"/api/v1/admin/stores/{shop.store_id}/reconciliation", headers=bearer(ADMIN_TOKEN))
    cases = (await resp.json())["cases"]
    assert [(c["order_id"], c["reasons"]) for c in cases] == [("o1", ["refund_needed"])]


async def pay_o1(client, shop: Shop, erp) -> dict:
    """Terminal A takes the payment lock and completes its own cash payment of o1 (the ERP records it too)."""
    engine = services(client).engine
    lock, _ = await engine.acquire(shop.store_id, "o1", holder(shop, "a"), Kind.PAYMENT)
    await engine.complete(shop.store_id, "o1", holder(shop, "a"), token=lock["token"], amount_cents=3800, version=1,
                          payment_ref="cash-1")
    erp.db.mark_paid("o1", version=1, amount_cents=3800, payment_ref="cash-1")
    return lock


async def test_reopen_gives_a_new_version_and_keeps_the_payment_in_the_books(client, shop, erp):
    """A paid order reopened (反结账) is open at version 2, can be paid again, and the first payment stays on record."""
    await pay_o1(client, shop, erp)
    status, body = await post(client, f"/stores/{shop.store_id}/orders/o1/reopen", bearer(shop.a))
    assert status == 200, body
    assert body["order"]["status"] == "open" and body["order"]["version"] == 2
    reopened = [e for e in await events(client, shop) if e["name"] == "order.reopened"]
    assert reopened[0]["data"]["previous"]["paid_ref"] == "cash-1"
    assert reopened[0]["data"]["previous"]["version"] == 1 and reopened[0]["data"]["previous"]["status"] == "paid"
    assert [p["payment_ref"] for p in erp.db.reopened_payments("o1")] == ["cash-1"]
    paid = [e for e in await events(client, shop) if e["name"] == "order.paid"]
    assert paid[0]["data"]["payment_ref"] == "cash-1"  # the event log keeps the first payment
    engine = services(client).engine
    history = json.loads(await services(client).redis.hget(keys.order(shop.store_id, "o1"), "history"))
    assert history[0]["paid_ref"] == "cash-1" and history[0]["total_cents"] == 3800
    resp = await client.get(f"/api/v1/admin/stores/{shop.store_id}/reconciliation", headers=bearer(ADMIN_TOKEN))
    case = (await resp.json())["cases"][0]
    assert case["reasons"] == ["reopened"] and "order.paid" in [e["name"] for e in case["trail"]]
    again, _ = await engine.acquire(shop.store_id, "o1", holder(shop, "a"), Kind.PAYMENT)
    order = await engine.complete(shop.store_id, "o1", holder(shop, "a"), token=again["token"], amount_cents=3800,
                                  version=2, payment_ref="cash-2")
    assert order["order"]["status"] == "paid"


async def test_reopen_of_an_open_order_is_refused(client, shop, erp):
    """Reopening an order that is open is 409 ORDER_OPEN and the ERP is not asked."""
    status, body = await post(client, f"/stores/{shop.store_id}/orders/o1/reopen", bearer(shop.a))
    assert status == 409 and body["error"]["code"] == "ORDER_OPEN" and erp.methods("order.reopen") == []


async def test_cancel_follows_the_move_rules_and_closes_the_order(client, shop, erp):
    """Cancel under another terminal's order lock is ORDER_LOCKED; forced, the ERP cancels it and its locks end."""
    await services(client).engine.acquire(shop.store_id, "o1", holder(shop, "a"), Kind.ORDER)
    status, body = await post(client, f"/stores/{shop.store_id}/orders/o1/cancel", bearer(shop.b))
    assert status == 409 and body["error"]["code"] == "ORDER_LOCKED" and body["error"]["force_allowed"] is True
    status, body = await post(client, f"/stores/{shop.store_id}/orders/o1/cancel", bearer(shop.b), {"force": True})
    assert status == 200 and body["order"]["status"] == "cancelled" and body["locks"] == []
    assert erp.db.order("o1")["status"] == "cancelled"
    assert await services(client).engine.locks(shop.store_id) == []


async def test_no_payment_against_the_pre_merge_total(client, shop, erp):
    """A cashier's payment lock on o1 (v1, 3,800) refuses the merge; forced, that lock can no longer complete the old total."""
    await second_table(client, shop, erp)
    engine = services(client).engine
    cashier = holder(shop, "a")
    paying, _ = await engine.acquire(shop.store_id, "o1", cashier, Kind.PAYMENT, expected_version=1)
    status, body = await merge(client, shop, shop.b)
    assert status == 409 and body["error"]["code"] == "PAYMENT_LOCKED"
    assert (await merge(client, shop, shop.b, force=True))[0] == 200
    with pytest.raises(TablelockError) as refused:
        await engine.complete(shop.store_id, "o1", cashier, token=paying["token"], amount_cents=3800, version=1,
                              payment_ref="late")
    assert refused.value.code in ("LOCK_LOST", "STALE_VERSION")
    order, _ = await engine.get_order(shop.store_id, "o1")
    assert order["status"] == "open" and order["total_cents"] == 5300


# --- split bill (SPEC §10): share payment locks under a move, merge or cancel --------------------

async def claim_shares(client, shop: Shop, n: int = 2) -> list[dict]:
    """``n`` diners each claim one of ``n`` equal parts of o1 (a share payment lock each)."""
    from coordinator.core.shares import ShareKind, ShareSpec
    from coordinator.store.share_book import ShareBook

    book = ShareBook(services(client).engine)
    return [(await book.claim(shop.store_id, "o1", {"role": "h5", "session_id": f"d{k}"},
                              ShareSpec(ShareKind.PARTS, parts=n, part=k)))[0] for k in range(1, n + 1)]


def share_slot(lock: dict) -> str:
    """The locks-hash slot of a share lock."""
    return f"share:{lock['fence']}"


async def table_op(client, shop: Shop, operation: str, force: bool) -> tuple[int, dict]:
    """A move, merge or cancel of o1 by terminal B."""
    if operation == "cancel":
        return await post(client, f"/stores/{shop.store_id}/orders/o1/cancel", bearer(shop.b), {"force": force})
    return await (move if operation == "move" else merge)(client, shop, shop.b, force=force)


@pytest.mark.parametrize("operation", ["move", "merge", "cancel"])
async def test_claimed_shares_are_payment_locks_a_force_breaks(client, shop, erp, operation):
    """Two diners' claimed shares refuse the operation PAYMENT_LOCKED (force allowed); forced, both share locks end lock.forced."""
    await second_table(client, shop, erp)
    shares = await claim_shares(client, shop)
    status, body = await table_op(client, shop, operation, False)
    assert status == 409 and body["error"]["code"] == "PAYMENT_LOCKED" and body["error"]["force_allowed"] is True
    assert body["error"]["lock"]["fence"] == shares[0]["fence"]
    assert erp.methods(f"order.{operation}") == []
    status, body = await table_op(client, shop, operation, True)
    assert status == 200, body
    assert body["refund_tasks"] == [] and await services(client).engine.locks(shop.store_id) == []
    forced = [e["data"]["lock"]["fence"] for e in await events(client, shop) if e["name"] == "lock.forced"]
    assert forced == [s["fence"] for s in shares]


@pytest.mark.parametrize("phase", ["in_flight", "completing"])
@pytest.mark.parametrize("operation", ["move", "merge", "cancel"])
async def test_a_share_with_money_in_flight_is_never_forced(client, shop, erp, operation, phase):
    """A diner's share in flight (or completing) refuses the operation PAYMENT_IN_FLIGHT, force_allowed false, even forced; nothing breaks."""
    await second_table(client, shop, erp)
    shares = await claim_shares(client, shop)
    fields = {"phase": phase, "out_trade_no": "TLnotrade"} | ({"completing": True} if phase == "completing" else {})
    await set_lock_field(client, shop, "o1", share_slot(shares[1]), **fields)
    for force in (False, True):
        status, body = await table_op(client, shop, operation, force)
        assert status == 409 and body["error"]["code"] == "PAYMENT_IN_FLIGHT", body
        assert body["error"]["force_allowed"] is False and body["error"]["lock"]["fence"] == shares[1]["fence"]
    assert erp.methods(f"order.{operation}") == []
    assert sorted(l["fence"] for l in await services(client).engine.locks(shop.store_id)) == [s["fence"] for s in shares]
    assert not [e for e in await events(client, shop) if e["name"] in ("lock.forced", "refund.needed")]


async def test_a_paid_share_beside_a_claimed_one_is_share_paid_then_forced_with_a_refund(client, shop, erp):
    """A paid share (paid_cents) with another diner's share claimed: SHARE_PAID first; forced, the claim is broken and a refund task opened."""
    await second_table(client, shop, erp)
    shares = await claim_shares(client, shop)
    await share_paid(client, shop, "o1", 1900)
    status, body = await move(client, shop, shop.b)
    assert status == 409 and body["error"]["code"] == "SHARE_PAID" and body["error"]["force_allowed"] is True
    status, body = await move(client, shop, shop.b, force=True)
    assert status == 200 and body["refund_tasks"] == [{"order_id": "o1", "reason": "share_paid", "paid_cents": 1900}]
    forced = [e["data"]["lock"]["fence"] for e in await events(client, shop) if e["name"] == "lock.forced"]
    assert sorted(forced) == sorted(s["fence"] for s in shares)
    await locks_on_right_tables(client, shop)


async def test_share_locks_follow_their_order_to_the_new_table(client, shop, erp):
    """A share lock present when a move finishes (one claimed by the mover in a race) names the order's new table after it."""
    from coordinator.store.tableops import TableOps

    await second_table(client, shop, erp, order=False)
    svc = services(client)
    ops = TableOps(svc.engine)
    mover = holder(shop, "b")
    begun = await ops.begin(shop.store_id, "move", ["o1"], mover, force=False)
    # As a share claimed between begin and finish would leave it (the mover's own order lock converted).
    now = await svc.engine.now()
    share = {"kind": "payment", "order_id": "o1", "table_id": "T1", "holder": {"role": "h5", "session_id": "d1"},
             "fence": 99, "version": 1, "acquired_at": now, "expires_at": now + 60_000, "token": "tok-share-99",
             "completing": False, "share": {"kind": "amount", "amount_cents": 100}}
    await svc.redis.hset(keys.locks(shop.store_id, "o1"), "share:99", json.dumps(share))
    moved = erp.db.order("o1") | {"table_id": "T2", "version": 2}
    await svc.engine.put_order(shop.store_id, OrderIn.model_validate(moved), mover)
    await ops.finish(shop.store_id, "move", "o1", begun["orders"], mover)
    locks = await svc.engine.locks(shop.store_id)
    assert [(l["fence"], l["table_id"]) for l in locks] == [(99, "T2")]
    await locks_on_right_tables(client, shop)
