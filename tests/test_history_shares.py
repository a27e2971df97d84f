"""The history checker's split-bill part (SPEC §10, invariant 10 of §13, and invariant 9 for share
trades) is honest: a clean hand-made split bill passes, and each planted violation — overlapping
shares, shares above the total, a share paid twice, the order paid while its shares fall short,
books that disagree at the end, a table operation forcing a share in flight, a share lock left
behind by a move — is reported under its invariant. The last share confirmed after the ERP's own copy
closed the order (issue 13) is accepted only as pay_confirm.lua makes it, pinned both ways."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.history.checker import check
from tests.support.history.recorder import History, Op

TERMINAL = "Tabcdef02"
ERP = {"role": "erp", "terminal_id": TERMINAL, "name": "收银台"}
H5A = {"role": "h5", "session_id": "sessA-0123456789"}
H5B = {"role": "h5", "session_id": "sessB-0123456789"}
LINES_V1 = [{"line_id": "l1", "sku": "d1", "name": "菜1", "qty": 1, "unit_price_cents": 600, "source": "erp"},
            {"line_id": "l2", "sku": "d2", "name": "菜2", "qty": 1, "unit_price_cents": 400, "source": "erp"}]
LINES_V2 = LINES_V1 + [{"line_id": "l3", "sku": "d3", "name": "菜3", "qty": 1, "unit_price_cents": 200, "source": "h5"}]
S1 = {"kind": "lines", "line_ids": ["l1"], "amount_cents": 600}
S2 = {"kind": "amount", "amount_cents": 300}
S3 = {"kind": "rest", "amount_cents": 300}


def _order(version: int, status: str = "open", paid: int = 0) -> dict[str, Any]:
    items = LINES_V1 if version == 1 else LINES_V2
    order = {"order_id": "o3", "table_id": "T3", "version": version, "status": status, "items": items,
             "total_cents": sum(i["unit_price_cents"] for i in items)}
    return order | ({"paid_cents": paid} if paid else {})


def _lock(fence: int, holder: dict, share: dict, at: int) -> dict[str, Any]:
    return {"kind": "payment", "order_id": "o3", "table_id": "T3", "holder": holder, "fence": fence,
            "version": 1 if fence < 3 else 2, "acquired_at": at, "expires_at": at + 60_000, "share": dict(share)}


def _event(seq: int, ts: int, name: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": "event", "seq": seq, "ts": ts, "name": name, "store_id": "s", "table_id": "T3", "order_id": "o3",
            "data": data}


def _paid(seq: int, ts: int, fence: int, share: dict, paid: int, version: int) -> dict[str, Any]:
    record = {**share, "fence": fence, "paid_at": ts}
    return _event(seq, ts, "share.paid", {"share": record, "paid_cents": paid, "order": _order(version, paid=paid),
                                          "remaining_cents": _order(version)["total_cents"] - paid})


def _trade(no: str, fence: int, share: dict, tx: str) -> dict[str, Any]:
    return {"out_trade_no": no, "provider": "wechatpay", "order_id": "o3", "amount_cents": share["amount_cents"],
            "fence": fence, "share": share,
            "final": {"out_trade_no": no, "state": "paid", "transaction_id": tx, "amount_cents": share["amount_cents"],
                      "refunds": {}}}


def clean_split_history() -> History:
    """Order o3 (1,000) split: diner A pays line l1 (600) and diner B 300 through the provider side by side;
    a dish is added (total 1,200) after those captures; the cashier takes the rest (300) at the till: paid once."""
    locks = {1: _lock(1, H5A, S1, 1000), 2: _lock(2, H5B, S2, 1100), 3: _lock(3, ERP, S3, 3000)}
    stream = [
        _event(1, 900, "order.updated", {"order": _order(1)}),
        _event(2, 1000, "lock.acquired", {"lock": locks[1]}),
        _event(3, 1100, "lock.acquired", {"lock": locks[2]}),
        _event(4, 2000, "lock.released", {"reason": "paid", "lock": locks[1]}),
        _paid(5, 2000, 1, S1, 600, 1),
        _event(6, 2100, "lock.released", {"reason": "paid", "lock": locks[2]}),
        _paid(7, 2100, 2, S2, 900, 1),
        _event(8, 2500, "order.updated", {"order": _order(2, paid=900)}),
        _event(9, 3000, "lock.acquired", {"lock": locks[3]}),
        _event(10, 3100, "lock.released", {"reason": "paid", "lock": locks[3]}),
        _paid(11, 3100, 3, S3, 1200, 2),
        _event(12, 3100, "order.paid", {"payment_ref": "r-rest", "amount_cents": 1200,
                                        "order": _order(2, "paid", 1200)}),
    ]
    ops = [Op(0, "erp0", "erp", 0, "POST", "/stores/s/orders/o3/shares/payments",
              {"token": "tok-rest-0123456789abcdef", "amount_cents": 300, "version": 2, "payment_ref": "r-rest"},
              3.0, 3.1, 200, {"order": _order(2, "paid", 1200)})]
    shares = [{**S1, "fence": 1, "paid_at": 2000}, {**S2, "fence": 2, "paid_at": 2100}, {**S3, "fence": 3, "paid_at": 3100}]
    return History(
        store_id="s", ops=ops, stream=stream, clock=[(0.0, 0)], final_now=4000, final_seq=12,
        trades=[_trade("TL1", 1, S1, "4201"), _trade("TL2", 2, S2, "4202")],
        payments=[{"out_trade_no": "TL1", "order_id": "o3", "state": "paid"},
                  {"out_trade_no": "TL2", "order_id": "o3", "state": "paid"}],
        final_orders={"o3": {"status": "paid", "version": 2, "table_id": "T3", "total_cents": 1200, "paid_cents": 1200, "shares": shares,
                             "refs": {"wechatpay:4201": 1, "wechatpay:4202": 2, "r-rest": 3}}},
        erp_books={"o3": {"status": "paid", "shares": {"wechatpay:4201": 600, "wechatpay:4202": 300, "r-rest": 300}}},
        terminals={TERMINAL: "erp~s~" + TERMINAL + "~secret0123456789"},
    )


def test_a_clean_split_bill_breaks_no_invariant():
    """The clean split bill passes every check, and the share checks looked at grants, payments and the end state."""
    report = check(clean_split_history())
    assert report.violations == [], [str(v) for v in report.violations]
    counts = report.counts
    assert (counts["I10 shares granted"], counts["I10 shares paid"], counts["I10 split orders paid"]) == (3, 3, 1)
    assert counts["I10 grants beside live shares"] == 1 and counts["I10 order changes after a share was paid"] == 1
    assert counts["I10 ERP books compared"] == 1 and counts["I9 shares paid"] == 2
    assert counts["I1 share pairs side by side"] == 1


def _ev(h: History, seq: int) -> dict[str, Any]:
    return next(e for e in h.stream if e["seq"] == seq)


def _overlapping_shares(h: History) -> None:
    # Diner B's share claims line l1, which diner A's live share already holds.
    _ev(h, 3)["data"]["lock"]["share"] = {"kind": "lines", "line_ids": ["l1"], "amount_cents": 300}


def _parts_of_two_sizes(h: History) -> None:
    _ev(h, 2)["data"]["lock"]["share"] = {"kind": "parts", "parts": 2, "part": 1, "amount_cents": 500}
    _ev(h, 3)["data"]["lock"]["share"] = {"kind": "parts", "parts": 3, "part": 2, "amount_cents": 333}


def _over_the_total(h: History) -> None:
    _ev(h, 3)["data"]["lock"]["share"]["amount_cents"] = 500  # 600 + 500 claimed of 1,000


def _share_paid_twice(h: History) -> None:
    again = copy.deepcopy(_ev(h, 5))
    again["seq"], again["data"]["paid_cents"] = 13, 1800
    h.stream.append(again)
    h.final_seq = 13


def _paid_while_short(h: History) -> None:
    # The order is marked paid right after diner B's share: 900 of 1,000 paid.
    h.stream = h.stream[:7] + [_event(8, 2100, "order.paid", {"payment_ref": "wechatpay:4202", "amount_cents": 900,
                                                              "order": _order(1, "paid", 900)})]
    h.final_seq = 8
    h.ops = []
    h.final_orders["o3"] = {"status": "paid", "version": 1, "total_cents": 1000, "paid_cents": 900,
                            "shares": h.final_orders["o3"]["shares"][:2],
                            "refs": {"wechatpay:4201": 1, "wechatpay:4202": 2}}
    h.erp_books["o3"]["shares"].pop("r-rest")


def _reached_but_not_paid(h: History) -> None:
    h.stream = h.stream[:11]
    h.final_seq = 11


def _paid_cents_wrong(h: History) -> None:
    _ev(h, 7)["data"]["paid_cents"] = 600  # diner B's share not counted


def _final_paid_cents_wrong(h: History) -> None:
    h.final_orders["o3"]["paid_cents"] = 1500


def _share_under_two_refs(h: History) -> None:
    h.final_orders["o3"]["refs"]["wechatpay:4299"] = 1


def _erp_books_disagree(h: History) -> None:
    del h.erp_books["o3"]["shares"]["wechatpay:4202"]


def _share_trade_paid_and_surplus(h: History) -> None:
    h.stream.append(_event(13, 3500, "payment.surplus", {"out_trade_no": "TL1", "provider": "wechatpay",
                                                         "transaction_id": "4201", "amount_cents": 600,
                                                         "reason": "lock_gone", "refund_state": "pending"}))
    h.final_seq = 13


def _share_trade_lost(h: History) -> None:
    h.trades.append(_trade("TL9", 7, {"kind": "amount", "amount_cents": 100}, "4209"))


def _operation_forced_a_share_in_flight(h: History) -> None:
    # A move (forced) broke diner B's share while its money was in flight, instead of being refused.
    lock = {**_ev(h, 3)["data"]["lock"], "phase": "in_flight", "out_trade_no": "TL2"}
    _ev(h, 6).update(name="lock.forced", data={"by": ERP, "operation": "move", "lock": lock})


def _lock_left_on_the_old_table(h: History) -> None:
    h.final_orders["o3"]["table_id"] = "T4"  # the order moved; a share lock still names T3
    h.final_locks = [{**_lock(4, H5A, S3, 3900), "table_id": "T3"}]


S_REST = {"kind": "rest", "amount_cents": 400}


def closed_by_copy_history() -> History:
    """Order o3 (1,000): diner A pays line l1 (600); diner B's rest (400) is captured and booked by the
    ERP, which then has the order paid; an order.fetch stores that copy (B's completing lock ends
    order_closed) before the ERP's answer lands: pay_confirm.lua joins B's share from its record."""
    a, b = _lock(1, H5A, S1, 1000), _lock(2, H5B, S_REST, 1100)
    completing = {**b, "phase": "completing", "completing": True, "out_trade_no": "TL2"}
    stream = [
        _event(1, 900, "order.updated", {"order": _order(1)}),
        _event(2, 1000, "lock.acquired", {"lock": a}),
        _event(3, 1100, "lock.acquired", {"lock": b}),
        _event(4, 2000, "lock.released", {"reason": "paid", "lock": a}),
        _paid(5, 2000, 1, S1, 600, 1),
        _event(6, 2500, "lock.released", {"reason": "order_closed", "lock": completing}),
        _event(7, 2500, "order.updated", {"order": _order(1, "paid", 600)}),
        _paid(8, 2600, 2, S_REST, 1000, 1),
    ]
    _ev_of = {e["seq"]: e for e in stream}
    _ev_of[8]["data"]["order"]["status"] = "paid"
    shares = [{**S1, "fence": 1, "paid_at": 2000}, {**S_REST, "fence": 2, "paid_at": 2600}]
    return History(
        store_id="s", ops=[], stream=stream, clock=[(0.0, 0)], final_now=4000, final_seq=8,
        trades=[_trade("TL1", 1, S1, "4201"), _trade("TL2", 2, S_REST, "4202")],
        payments=[{"out_trade_no": "TL1", "order_id": "o3", "state": "paid"},
                  {"out_trade_no": "TL2", "order_id": "o3", "state": "paid"}],
        final_orders={"o3": {"status": "paid", "version": 1, "table_id": "T3", "total_cents": 1000, "paid_cents": 1000,
                             "shares": shares, "refs": {"wechatpay:4201": 1, "wechatpay:4202": 2}}},
        erp_books={"o3": {"status": "paid", "shares": {"wechatpay:4201": 600, "wechatpay:4202": 400}}},
        terminals={TERMINAL: "erp~s~" + TERMINAL + "~secret0123456789"},
    )


def test_a_share_paid_after_the_erps_copy_closed_the_order_is_accepted():
    """A completing share whose lock the ERP's paid copy ended (order_closed) and that pay_confirm then joins breaks nothing."""
    report = check(closed_by_copy_history())
    assert report.violations == [], [str(v) for v in report.violations]
    assert report.counts["I10 shares paid after the ERP's copy closed the order"] == 1
    assert report.counts["I9 shares paid"] == 2


def _late_share_not_completing(h: History) -> None:
    lock = _ev(h, 6)["data"]["lock"]
    lock.update(phase="in_flight", completing=False)  # no money was being confirmed for it


def _late_share_on_a_cancelled_order(h: History) -> None:
    _ev(h, 7)["data"]["order"]["status"] = "cancelled"


def _late_share_without_its_close(h: History) -> None:
    _ev(h, 6)["data"]["reason"] = "released"


@pytest.mark.parametrize("plant", [_late_share_not_completing, _late_share_on_a_cancelled_order,
                                   _late_share_without_its_close])
def test_a_share_paid_after_a_close_is_flagged_unless_the_erp_copy_ended_it_completing(plant):
    """A share.paid after the order closed is an I10 violation when its lock was not completing, the order was cancelled, or the lock did not end order_closed."""
    history = closed_by_copy_history()
    plant(history)
    found = [str(v) for v in check(history).violations if v.invariant == "I10"]
    assert any("after the order was closed" in v or "did not just end paid" in v for v in found), found


#: name -> (invariant, a phrase the report must carry, the plant)
VIOLATIONS: dict[str, tuple[str, str, Callable[[History], None]]] = {
    "overlapping lines": ("I10", "overlaps", _overlapping_shares),
    "parts of two sizes": ("I10", "beside parts of", _parts_of_two_sizes),
    "shares above the total": ("I10", "above the total", _over_the_total),
    "a share paid twice": ("I10", "paid twice", _share_paid_twice),
    "order paid while shares fall short": ("I10", "fall short", _paid_while_short),
    "shares reach the total, order never paid": ("I10", "never paid", _reached_but_not_paid),
    "paid_cents not the running sum": ("I10", "add up to", _paid_cents_wrong),
    "final paid_cents not the shares": ("I10", "at the end: paid_cents", _final_paid_cents_wrong),
    "a share under two payment refs": ("I10", "2 payment refs", _share_under_two_refs),
    "ERP books disagree": ("I10", "the ERP booked", _erp_books_disagree),
    "share trade paid and surplus": ("I9", "counted twice", _share_trade_paid_and_surplus),
    "share trade lost": ("I9", "lost", _share_trade_lost),
    "an operation forced a share in flight": ("TO4", "with money in flight", _operation_forced_a_share_in_flight),
    "a share lock left on the old table": ("TO5", "its order is at T4", _lock_left_on_the_old_table),
}


@pytest.mark.parametrize("name", list(VIOLATIONS))
def test_each_planted_split_bill_violation_is_reported(name):
    """A clean split bill with one violation planted is reported under its invariant, by the check meant for it."""
    invariant, phrase, plant = VIOLATIONS[name]
    history = clean_split_history()
    plant(history)
    report = check(history)
    found = [str(v) for v in report.violations if v.invariant == invariant]
    assert any(phrase in v for v in found), (name, [str(v) for v in report.violations])
