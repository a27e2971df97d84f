"""The stand-in ERP's own database: versions, fencing, auto-accept, payment."""

from __future__ import annotations

import pytest

from erp_simulator.db import AcceptCheck, ErpDatabase
from erp_simulator.errors import (
    ACCEPT_PAYMENT_LOCKED,
    AcceptRefused,
    AmountMismatch,
    FenceRejected,
    NotFound,
    OrderClosed,
    VersionMismatch,
)


@pytest.fixture
def db(tmp_path) -> ErpDatabase:
    """A fresh ERP database file with a table and a three-dish menu."""
    database = ErpDatabase(tmp_path / "erp.sqlite", clock=iter(range(1_000, 10**9, 10)).__next__)
    database.put_table("T1", "一号桌")
    database.put_dish("tea", "茶", 900)
    database.put_dish("rice", "米饭", 2000)
    database.put_dish("soup", "汤", 1500)
    yield database
    database.close()


def test_open_order_has_version_1_and_wire_shape(db):
    """A new order starts at version 1 in the SPEC Order shape, lines priced from the menu."""
    order = db.open_order("T1", [{"sku": "tea", "qty": 2}])
    assert order == {
        "order_id": order["order_id"], "table_id": "T1", "version": 1, "status": "open",
        "items": [{"line_id": "l1", "sku": "tea", "name": "茶", "qty": 2, "unit_price_cents": 900, "source": "erp"}],
        "total_cents": 1800,
    }


def test_counted_order_ids_skip_an_id_opened_explicitly(db):
    """An order opened as ``o1`` by name does not make the next counted order collide with it."""
    db.open_order("T1", [{"sku": "tea", "qty": 1}], order_id="o1")
    order, changed = db.accept_items(None, "T2", [{"sku": "rice", "qty": 1}], "r-1")
    assert changed and order["order_id"] == "o2" and order["table_id"] == "T2"
    assert db.order("o1")["items"][0]["sku"] == "tea"


def test_every_change_bumps_the_version(db):
    """Adding, removing and cancelling each bump the version by one; reads do not."""
    order_id = db.open_order("T1", [{"sku": "tea", "qty": 1}])["order_id"]
    assert db.add_items(order_id, [{"sku": "rice", "qty": 1}])["version"] == 2
    assert db.order(order_id)["version"] == 2
    after_remove = db.remove_line(order_id, "l1")
    assert (after_remove["version"], after_remove["total_cents"]) == (3, 2000)
    assert db.cancel(order_id)["version"] == 4
    assert db.order(order_id)["status"] == "cancelled"


def test_changes_survive_reopening_the_file(db, tmp_path):
    """The database is a file: a second connection sees committed orders and versions."""
    order_id = db.open_order("T1", [{"sku": "soup", "qty": 3}])["order_id"]
    db.add_items(order_id, [{"sku": "tea", "qty": 1}])
    other = ErpDatabase(tmp_path / "erp.sqlite")
    try:
        assert other.order(order_id) == db.order(order_id)
        assert other.order(order_id)["version"] == 2
    finally:
        other.close()


def test_a_lower_fence_is_refused_and_changes_nothing(db):
    """After fence 8 is seen, a write carrying fence 7 raises FenceRejected and the order stays as it was."""
    order_id = db.open_order("T1", [{"sku": "tea", "qty": 1}])["order_id"]
    db.add_items(order_id, [{"sku": "rice", "qty": 1}], fence=7)
    assert db.observe_fence(order_id, 8) == 8
    before = db.order(order_id)
    with pytest.raises(FenceRejected) as refused:
        db.remove_line(order_id, "l1", fence=7)
    assert (refused.value.fence, refused.value.highest, refused.value.code) == (7, 8, "STALE_FENCE")
    assert db.order(order_id) == before
    with pytest.raises(FenceRejected):
        db.mark_paid(order_id, version=before["version"], amount_cents=before["total_cents"], payment_ref="p", fence=7)


def test_fences_only_grow(db):
    """Observing a lower fence keeps the highest; an equal or higher fence may write and raises the mark."""
    order_id = db.open_order("T1")["order_id"]
    db.observe_fence(order_id, 5)
    assert db.observe_fence(order_id, 3) == 5
    db.add_items(order_id, [{"sku": "tea", "qty": 1}], fence=5)
    db.add_items(order_id, [{"sku": "tea", "qty": 1}], fence=9)
    assert db.highest_fence(order_id) == 9


def test_accept_items_refuses_with_the_spec_toast_while_payment_locked(db):
    """A diner's add-on under a payment lock is refused with the SPEC accept toast and adds nothing."""
    order = db.open_order("T1", [{"sku": "tea", "qty": 1}])
    with pytest.raises(AcceptRefused) as refused:
        db.accept_items(order["order_id"], "T1", [{"sku": "soup", "qty": 1}], "r1",
                        AcceptCheck(False, "PAYMENT_LOCKED"))
    assert refused.value.code == "PAYMENT_LOCKED"
    assert refused.value.message == ACCEPT_PAYMENT_LOCKED == "订单正在其他机器/顾客端进行支付,暂不能接单,如需接单请先取消支付"
    assert db.order(order["order_id"]) == order
    assert db.accepted_order("r1") is None


def test_accept_items_adds_h5_lines_and_is_idempotent(db):
    """An allowed add-on appends h5 lines once; the same request_id again returns the order unchanged."""
    order_id = db.open_order("T1", [{"sku": "tea", "qty": 1}])["order_id"]
    order, changed = db.accept_items(None, "T1", [{"sku": "soup", "qty": 2}], "r1")
    assert changed and order["order_id"] == order_id and order["version"] == 2
    assert order["items"][-1] == {"line_id": "l2", "sku": "soup", "name": "汤", "qty": 2,
                                  "unit_price_cents": 1500, "source": "h5"}
    again, changed = db.accept_items(None, "T1", [{"sku": "soup", "qty": 2}], "r1",
                                     AcceptCheck(False, "PAYMENT_LOCKED"))
    assert not changed and again == order


def test_accept_items_opens_an_order_on_an_empty_table(db):
    """With no open order on the table, an add-on opens one at version 1 with h5 lines."""
    order, changed = db.accept_items(None, "T2", [{"sku": "rice", "qty": 1}], "r2")
    assert changed and order["table_id"] == "T2" and order["version"] == 1
    assert [i["source"] for i in order["items"]] == ["h5"]
    assert db.table_order("T2") == order


def test_presettled_refusal_carries_the_presettled_text(db):
    """An add-on under a presettle lock is refused with the PRESETTLED message."""
    order_id = db.open_order("T1")["order_id"]
    with pytest.raises(AcceptRefused) as refused:
        db.accept_items(order_id, "T1", [{"sku": "tea", "qty": 1}], "r3", AcceptCheck(False, "PRESETTLED"))
    assert refused.value.code == "PRESETTLED" and refused.value.message == "订单已预结,如需修改请联系服务员"


def test_mark_paid_checks_version_and_amount_and_is_idempotent(db):
    """Paying needs the current version and the exact total; the same payment_ref again is a no-op."""
    order = db.open_order("T1", [{"sku": "tea", "qty": 2}])
    with pytest.raises(VersionMismatch) as stale:
        db.mark_paid(order["order_id"], version=2, amount_cents=1800, payment_ref="p1")
    assert stale.value.wire()["order"] == order  # the caller learns the ERP's current version
    with pytest.raises(AmountMismatch):
        db.mark_paid(order["order_id"], version=1, amount_cents=1700, payment_ref="p1")
    paid = db.mark_paid(order["order_id"], version=1, amount_cents=1800, payment_ref="p1", fence=3)
    assert (paid["status"], paid["version"]) == ("paid", 1)
    assert db.mark_paid(order["order_id"], version=1, amount_cents=1800, payment_ref="p1") == paid
    assert db.payment(order["order_id"])["payment_ref"] == "p1"
    with pytest.raises(OrderClosed):
        db.mark_paid(order["order_id"], version=1, amount_cents=1800, payment_ref="p2")
    with pytest.raises(OrderClosed):
        db.add_items(order["order_id"], [{"sku": "tea", "qty": 1}])


def test_unknown_order_line_and_dish_are_not_found(db):
    """Unknown orders, lines and dishes raise NotFound."""
    with pytest.raises(NotFound):
        db.order("nope")
    order_id = db.open_order("T1")["order_id"]
    with pytest.raises(NotFound):
        db.remove_line(order_id, "l99")
    with pytest.raises(NotFound):
        db.add_items(order_id, [{"sku": "caviar", "qty": 1}])
    assert db.order(order_id)["version"] == 1


def test_table_order_is_the_most_recently_opened(db):
    """With two open orders on a table, the table's order is the newer one."""
    db.open_order("T1", order_id="a1")
    db.open_order("T1", order_id="a2")
    assert db.table_order("T1")["order_id"] == "a2"
    assert [o["order_id"] for o in db.open_orders()] == ["a1", "a2"]
