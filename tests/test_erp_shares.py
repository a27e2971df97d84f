"""The ERP simulator's books of split-bill payments (erp_simulator/shares.py, docs/protocol.md A13): what an ERP must do."""

from __future__ import annotations

import pytest

from erp_simulator.db import ErpDatabase
from erp_simulator.errors import AmountMismatch, FenceRejected, VersionMismatch
from erp_simulator.shares import ShareLedger
from erp_simulator.view import StoreView


@pytest.fixture
def ledger(tmp_path) -> tuple[ShareLedger, str]:
    """A ledger over a fresh ERP database with one open order of 100.00 (tea 2 x 18.00 + fish 64.00)."""
    db = ErpDatabase(tmp_path / "erp.sqlite")
    db.put_dish("tea", "茶", 1800)
    db.put_dish("fish", "鱼", 6400)
    order = db.open_order("T1", [{"sku": "tea", "qty": 2}, {"sku": "fish", "qty": 1}])
    return ShareLedger(db), order["order_id"]


def test_partial_payments_add_up_and_pay_the_order_at_the_total(ledger):
    """Shares are recorded one by one; the order turns paid exactly when they reach the total."""
    books, order_id = ledger
    first = books.pay_share(order_id, version=1, amount_cents=6400, payment_ref="wx-1", fence=10,
                            share={"kind": "lines", "line_ids": ["l2"], "amount_cents": 6400})
    assert (first["status"], first["paid_cents"]) == ("open", 6400)
    last = books.pay_share(order_id, version=1, amount_cents=3600, payment_ref="cash-1", fence=11,
                           share={"kind": "rest", "amount_cents": 3600})
    assert (last["status"], last["paid_cents"]) == ("paid", 10000)


def test_a_share_is_recorded_once_and_checked(ledger):
    """A repeated payment_ref changes nothing; shares confirm in any fence order; above what remains, below a whole-order fence, or another version is refused."""
    books, order_id = ledger
    share = {"kind": "parts", "parts": 2, "part": 1, "amount_cents": 5000}
    books.pay_share(order_id, version=1, amount_cents=5000, payment_ref="wx-1", fence=10, share=share)
    assert books.pay_share(order_id, version=1, amount_cents=5000, payment_ref="wx-1", fence=10,
                           share=share)["paid_cents"] == 5000
    with pytest.raises(AmountMismatch):
        books.pay_share(order_id, version=1, amount_cents=5001, payment_ref="wx-2", fence=12, share=share)
    books.pay_share(order_id, version=1, amount_cents=100, payment_ref="wx-3", fence=9, share=share)
    books.db.observe_fence(order_id, 20)  # a whole-order grant after the shares (e.g. a force)
    with pytest.raises(FenceRejected):
        books.pay_share(order_id, version=1, amount_cents=100, payment_ref="wx-5", fence=19, share=share)
    with pytest.raises(VersionMismatch):
        books.pay_share(order_id, version=2, amount_cents=100, payment_ref="wx-4", fence=21, share=share)
    assert books.paid_cents(order_id) == 5100


def test_the_terminal_view_keeps_share_locks_apart():
    """Two share locks of one order coexist in a terminal's view, end by fence, and are never "the" payment lock."""
    def event(seq: int, name: str, lock: dict, **data) -> dict:
        return {"type": "event", "seq": seq, "ts": 1, "name": name, "store_id": "s", "table_id": "T1",
                "order_id": "o1", "data": {"lock": lock, **data}}

    def share_lock(fence: int, cents: int) -> dict:
        return {"kind": "payment", "order_id": "o1", "table_id": "T1", "holder": {"role": "h5", "is_me": False},
                "fence": fence, "version": 1, "acquired_at": 0, "expires_at": 10**13,
                "share": {"kind": "amount", "amount_cents": cents}}

    view = StoreView()
    view.apply(event(1, "lock.acquired", share_lock(5, 100)))
    view.apply(event(2, "lock.acquired", share_lock(6, 200)))
    assert [l["fence"] for l in view.live_locks("o1", 1)] == [5, 6]
    assert view.lock_of("o1", "payment", 1) is None
    view.apply(event(3, "lock.released", share_lock(5, 100), reason="paid"))
    assert [l["fence"] for l in view.live_locks("o1", 1)] == [6]
