"""The history checker: honest on hand-made histories (each invariant's violation is reported; split-bill
ones in ``test_history_shares.py``), and silent on a real randomized run across two coordinator processes
with a kill -9 and a Redis restart, diners paying whole orders and shares through the sandbox provider."""

from __future__ import annotations

import copy
import time
from collections import Counter
from typing import Any, Callable

import pytest

from tests.support.history.checker import check
from tests.support.history.payments_check import check_payments
from tests.support.history.recorder import Connection, History, Op, Received
from tests.support.history.workload import Plan, run_workload

TERMINAL = "Tabcdef01"
TOKENS = {"erp-order": "tok-erp-order-0123456789abcdef", "erp-pay": "tok-erp-pay-0123456789abcdef",
          "h5a": "tok-h5a-pay-0123456789abcdef", "h5b": "tok-h5b-pay-0123456789abcdef"}


def _lock(order: str, fence: int, kind: str, holder: dict[str, Any], at: int, expires: int,
          token: str | None = None) -> dict[str, Any]:
    lock = {"kind": kind, "order_id": order, "table_id": "T1" if order == "o1" else "T2", "holder": holder,
            "fence": fence, "version": 1, "acquired_at": at, "expires_at": expires}
    if token:
        lock["token"] = token
    return lock


ERP = {"role": "erp", "terminal_id": TERMINAL, "name": "收银台"}
H5A = {"role": "h5", "session_id": "sessA-0123456789"}
H5B = {"role": "h5", "session_id": "sessB-0123456789"}


def _event(seq: int, ts: int, name: str, order: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": "event", "seq": seq, "ts": ts, "name": name, "store_id": "s",
            "table_id": "T1" if order == "o1" else "T2", "order_id": order, "data": data}


def clean_history() -> History:
    """A small history in which every invariant holds: o1 is taken, converted and paid by a terminal;
    on o2 diner A's payment lock expires and diner B's is still live at the end."""
    paid_order = {"order_id": "o1", "table_id": "T1", "version": 1, "status": "paid", "items": [],
                  "total_cents": 500, "updated_at": 3000}
    stream = [
        _event(1, 1000, "lock.acquired", "o1", {"lock": _lock("o1", 1, "order", ERP, 1000, 6000)}),
        _event(2, 2000, "lock.released", "o1", {"reason": "converted", "lock": _lock("o1", 1, "order", ERP, 1000, 6000)}),
        _event(3, 2000, "lock.acquired", "o1", {"lock": _lock("o1", 2, "payment", ERP, 2000, 7000)}),
        _event(4, 3000, "lock.released", "o1", {"reason": "paid", "lock": _lock("o1", 2, "payment", ERP, 2000, 7000)}),
        _event(5, 3000, "order.paid", "o1", {"payment_ref": "r1", "amount_cents": 500, "order": paid_order}),
        _event(6, 4000, "lock.acquired", "o2", {"lock": _lock("o2", 1, "payment", H5A, 4000, 6000)}),
        _event(7, 6100, "lock.expired", "o2", {"lock": _lock("o2", 1, "payment", H5A, 4000, 6000)}),
        _event(8, 6200, "lock.acquired", "o2", {"lock": _lock("o2", 2, "payment", H5B, 6200, 8200)}),
    ]
    s = "/stores/s/orders"
    ops = [
        Op(0, "erp0", "erp", 0, "POST", f"{s}/o1/locks", {"kind": "order"}, 1.0, 1.01, 201,
           {"lock": _lock("o1", 1, "order", ERP, 1000, 6000, TOKENS["erp-order"]), "enforced": True}),
        Op(1, "erp0", "erp", 0, "POST", f"{s}/o1/locks", {"kind": "payment"}, 2.0, 2.01, 201,
           {"lock": _lock("o1", 2, "payment", ERP, 2000, 7000, TOKENS["erp-pay"]), "enforced": True}),
        Op(2, "erp0", "erp", 1, "POST", f"{s}/o1/payments",
           {"token": TOKENS["erp-pay"], "amount_cents": 500, "version": 1, "payment_ref": "r1"}, 3.0, 3.01, 200,
           {"order": paid_order}),
        Op(3, "h5-0", "h5", 0, "POST", "/h5/checkout", None, 4.0, 4.01, 201,
           {"lock": _lock("o2", 1, "payment", H5A, 4000, 6000, TOKENS["h5a"]), "order": {}, "enforced": True}),
        Op(4, "h5-1", "h5", 1, "POST", "/h5/checkout", None, 6.2, 6.21, 201,
           {"lock": _lock("o2", 2, "payment", H5B, 6200, 8200, TOKENS["h5b"]), "order": {}, "enforced": True}),
        Op(5, "h5-0", "h5", 0, "GET", "/h5/table", None, 6.3, 6.31, 200,
           {"locks": [{**_lock("o2", 2, "payment", {"role": "h5", "is_me": False}, 6200, 8200)}]}),
        Op(6, "erp0", "erp", 0, "POST", f"{s}/o2/locks", {"kind": "payment"}, 6.5, 6.51, 409,
           {"error": {"code": "PAYMENT_LOCKED", "force_allowed": True,
                      "lock": _lock("o2", 2, "payment", {"role": "h5", "session_id": H5B["session_id"]}, 6200, 8200)}}),
    ]
    h5_view = copy.deepcopy(stream[5:])
    for event in h5_view:
        event["data"]["lock"]["holder"] = {"role": "h5", "is_me": event["data"]["lock"]["holder"] == H5A}
    history = History(
        store_id="s", ops=ops, stream=stream, clock=[(0.0, 0)],
        connections=[Connection("obs", 0, 0, None, 0.5, 0, True, 4.5, 1006), Connection("obs", 1, 1, 4, 4.6, 8, False),
                     Connection("h5w", 0, 0, None, 0.5, 0, True)],
        received=[Received("obs", 0 if e["seq"] <= 4 else 1, e["ts"] / 1000, e) for e in stream]
        + [Received("h5w", 0, e["ts"] / 1000, e) for e in h5_view],
        final_locks=[_lock("o2", 2, "payment", H5B, 6200, 8200)], final_now=7000, final_seq=8,
        until={"obs": 8, "h5w": 8}, terminals={TERMINAL: "erp~s~" + TERMINAL + "~secret0123456789"},
        sessions={"h5-0": {"session_id": H5A["session_id"], "token": "h5~s~T2~sessA~1~mac", "table_id": "T2"},
                  "h5-1": {"session_id": H5B["session_id"], "token": "h5~s~T2~sessB~1~mac", "table_id": "T2"}},
        h5_subscribers={"h5w": "h5-0"},
    )
    return history


def test_checker_finds_nothing_wrong_in_a_clean_hand_made_history():
    """The clean hand-made history passes every check, and the checker did look at each part of it."""
    report = check(clean_history())
    assert report.violations == [], [str(v) for v in report.violations]
    for what in ("I1 pay intervals", "I3 grants", "I4 accepted completions", "I5 locks ended", "I5 events expected",
                 "EX denials", "I6 answers inspected"):
        assert report.counts[what] > 0, what


def _event_of(h: History, seq: int) -> dict[str, Any]:
    return next(e for e in h.stream if e["seq"] == seq)


def _second_payment_overlaps(h: History) -> None:
    # Diner B's lock granted while diner A's was still live (at 5000 instead of 6200).
    for e in (_event_of(h, 8),):
        e["data"]["lock"]["acquired_at"] = 5000
    h.final_locks[0]["acquired_at"] = 5000


def _edit_slot_overlaps(h: History) -> None:
    h.stream.append(_event(9, 1500, "lock.acquired", "o1", {"lock": _lock("o1", 3, "presettle", ERP, 1500, 9000)}))
    h.final_locks.append(_lock("o1", 3, "presettle", ERP, 1500, 9000))
    h.final_seq = 9


def _payment_with_order(h: History) -> None:
    _event_of(h, 2)["ts"] = 2500  # the order lock was released after the payment lock was granted at 2000


def _fence_goes_down(h: History) -> None:
    for seq in (6, 7):
        _event_of(h, seq)["data"]["lock"]["fence"] = 5
    h.ops[3].resp["lock"]["fence"] = 5


def _phantom_grant(h: History) -> None:
    h.ops.append(Op(7, "erp0", "erp", 0, "POST", "/stores/s/orders/o2/locks", {"kind": "order"}, 6.6, 6.61, 201,
                    {"lock": _lock("o2", 9, "order", ERP, 6600, 9000, "tok-phantom-0123456789abcdef")}))


def _paid_twice(h: History) -> None:
    h.stream.append(_event(9, 3500, "order.paid", "o1", copy.deepcopy(_event_of(h, 5)["data"])))
    h.final_seq = 9


def _stale_token_accepted(h: History) -> None:
    # Diner A pays with the token of the lock that had expired at 6000, and it is accepted.
    h.ops.append(Op(7, "h5-0", "h5", 0, "POST", "/h5/payments",
                    {"token": TOKENS["h5a"], "amount_cents": 0, "version": 1, "payment_ref": "late"}, 6.7, 6.8, 200,
                    {"order": {"order_id": "o2", "status": "open", "version": 1, "total_cents": 0}}))


def _foreign_token_accepted(h: History) -> None:
    h.ops[2].actor = "erp1"


def _second_completion_accepted(h: History) -> None:
    again = copy.deepcopy(h.ops[2])
    again.i, again.body["payment_ref"] = 7, "r2"
    h.ops.append(again)


def _wrong_amount_accepted(h: History) -> None:
    h.ops[2].body["amount_cents"] = 499


def _ended_twice(h: History) -> None:
    h.stream.append(_event(9, 6300, "lock.forced", "o2", {"by": ERP, "lock": _lock("o2", 1, "payment", H5A, 4000, 6000)}))
    h.final_seq = 9


def _never_ended(h: History) -> None:
    h.stream = [e for e in h.stream if e["seq"] != 7]
    for e in h.stream:
        if e["seq"] > 7:
            e["seq"] -= 1
    h.received = [r for r in h.received if r.event["seq"] != 7]
    h.final_seq, h.until = 7, {"obs": 7, "h5w": 7}


def _seq_goes_backwards(h: History) -> None:
    obs = [r for r in h.received if r.sub == "obs"]
    obs[2], obs[3] = obs[3], obs[2]
    h.received = obs + [r for r in h.received if r.sub != "obs"]


def _event_missed_after_resume(h: History) -> None:
    h.received = [r for r in h.received if not (r.sub == "obs" and r.event["seq"] == 6)]


def _resume_got_a_snapshot(h: History) -> None:
    h.connections[1].snapshot = True


def _stream_gap(h: History) -> None:
    _event_of(h, 8)["seq"] = 10
    h.final_seq, h.until = 10, {"obs": 10, "h5w": 10}
    for r in h.received:
        if r.event["seq"] == 8:
            r.event = {**r.event, "seq": 10}


def _h5_sees_terminal_id(h: History) -> None:
    h.ops[5].resp["locks"][0]["holder"] = {"role": "erp", "terminal_id": TERMINAL}


def _h5_sees_another_token(h: History) -> None:
    h.ops[5].resp["locks"][0]["token"] = TOKENS["h5b"]


def _h5_sees_another_session(h: History) -> None:
    next(r for r in h.received if r.sub == "h5w" and r.event["seq"] == 8).event["data"]["lock"]["holder"] = H5B


def _expired_early(h: History) -> None:
    _event_of(h, 7)["ts"] = 5900


def _denied_by_expired_lock(h: History) -> None:
    h.ops[6].resp["error"]["lock"] = _lock("o2", 1, "payment", {"role": "h5", "session_id": "x"}, 4000, 6000)


def _move_not_announced(h: History) -> None:
    h.ops.append(Op(7, "erp0", "erp", 0, "POST", "/stores/s/orders/o2/move", {"to_table_id": "T3", "force": False},
                    7.0, 7.01, 200, {"order": {"order_id": "o2", "table_id": "T3"}, "locks": [], "refund_tasks": []}))


def _lock_outlives_a_merge(h: History) -> None:
    h.stream.append(_event(9, 6900, "order.merged", "o2", {"into": "o1", "from": ["o2"], "into_table_id": "T1"}))
    h.final_seq = 9


def _trade(no: str, order: str, tx: str, *, state: str = "paid", refunded: int = 0) -> dict[str, Any]:
    """A provider trade the workload started, with the sandbox's final view of it."""
    refunds = {"R" + no: {"out_refund_no": "R" + no, "amount_cents": refunded, "state": "SUCCESS"}} if refunded else {}
    return {"out_trade_no": no, "provider": "wechatpay", "order_id": order, "amount_cents": 500,
            "final": {"out_trade_no": no, "state": state, "transaction_id": tx if state == "paid" else None,
                      "amount_cents": 500, "refunds": refunds}}


def _paid_by_provider(h: History, tx: str = "42000001") -> None:
    # o1 is paid by a captured provider payment instead of by the terminal's completion.
    h.ops = [op for op in h.ops if op.i != 2]
    _event_of(h, 5)["data"]["payment_ref"] = f"wechatpay:{tx}"
    h.trades.append(_trade("TL1", "o1", tx))


def _provider_payment_lost(h: History) -> None:
    h.trades.append(_trade("TL9", "o2", "42000009"))  # captured, yet no order.paid and no surplus


def _provider_payment_counted_twice(h: History) -> None:
    _paid_by_provider(h)
    h.stream.append(_event(9, 3500, "payment.surplus", "o1", {"out_trade_no": "TL1", "provider": "wechatpay",
                                                              "transaction_id": "42000001", "amount_cents": 500,
                                                              "reason": "order_closed", "refund_state": "pending"}))
    h.final_seq = 9


def _provider_payment_paid_and_refunded(h: History) -> None:
    _paid_by_provider(h)
    h.trades[-1]["final"]["refunds"] = _trade("TL1", "o1", "42000001", refunded=500)["final"]["refunds"]


def _order_paid_by_nobody(h: History) -> None:
    _event_of(h, 5)["data"]["payment_ref"] = "wechatpay:42000077"  # no trade, no ERP completion sent it


def test_checker_accepts_a_provider_payment_and_a_refunded_surplus():
    """I8/I9 hold for an order paid once by a captured trade, a refunded surplus and an uncaptured trade."""
    h = clean_history()
    _paid_by_provider(h)
    h.trades += [_trade("TL2", "o2", "42000002", refunded=500), _trade("TL3", "o2", "", state="closed")]
    h.stream.append(_event(9, 6300, "payment.surplus", "o2", {"out_trade_no": "TL2", "provider": "wechatpay",
                                                              "transaction_id": "42000002", "amount_cents": 500,
                                                              "reason": "lock_gone", "refund_state": "pending"}))
    h.payments = [{"out_trade_no": "TL1", "state": "paid"},
                  {"out_trade_no": "TL2", "state": "surplus", "refund_state": "succeeded"},
                  {"out_trade_no": "TL3", "state": "closed"}]
    counts: Counter = Counter()
    out = check_payments(h, sorted(h.stream, key=lambda e: e["seq"]), counts)
    assert out == [], out
    assert (counts["I9 paid"], counts["I9 surplus"], counts["I9 refunded"], counts["I9 not captured"]) == (1, 1, 1, 1)
    assert counts["I8 orders paid"] == 1


def _paid_by_the_erps_copy(h: History) -> None:
    # o2 is paid by a captured trade, but the ERP's copy (status paid) closed it before the confirmation.
    paid_copy = {"order_id": "o2", "table_id": "T2", "version": 1, "status": "paid", "items": [], "total_cents": 500}
    h.stream.append(_event(9, 6300, "order.updated", "o2", {"order": paid_copy}))
    h.trades.append(_trade("TL4", "o2", "42000004"))
    h.payments = [{"out_trade_no": "TL4", "state": "paid"}]
    h.final_seq = 9


def test_checker_accepts_a_payment_confirmed_after_the_erps_copy_closed_the_order():
    """I9: a captured trade whose order the ERP's own copy closed first (no order.paid, record paid) is paid, not lost."""
    h = clean_history()
    _paid_by_the_erps_copy(h)
    counts: Counter = Counter()
    assert check_payments(h, sorted(h.stream, key=lambda e: e["seq"]), counts) == []
    assert counts["I9 paid, closed by the ERP's copy"] == 1


def _erps_copy_but_paid_by_another(h: History) -> None:
    _paid_by_the_erps_copy(h)
    h.stream.append(_event(10, 6400, "order.paid", "o2", {"payment_ref": "erp-x", "amount_cents": 500,
                                                          "order": {"order_id": "o2", "table_id": "T2",
                                                                    "status": "paid", "total_cents": 500}}))
    h.final_seq = 10


VIOLATIONS: dict[str, tuple[str, Callable[[History], None]]] = {
    "two payment locks": ("I1", _second_payment_overlaps),
    "two edit-slot locks": ("I1", _edit_slot_overlaps),
    "payment with order": ("I2", _payment_with_order),
    "fence goes down": ("I3", _fence_goes_down),
    "grant never announced": ("I3", _phantom_grant),
    "paid twice": ("I4", _paid_twice),
    "stale token accepted": ("I4", _stale_token_accepted),
    "foreign token accepted": ("I4", _foreign_token_accepted),
    "second completion accepted": ("I4", _second_completion_accepted),
    "wrong amount accepted": ("I4", _wrong_amount_accepted),
    "lock ended twice": ("I5", _ended_twice),
    "lock never ended": ("I5", _never_ended),
    "seq goes backwards": ("I5", _seq_goes_backwards),
    "event missed after resume": ("I5", _event_missed_after_resume),
    "resume got a snapshot": ("I5", _resume_got_a_snapshot),
    "gap in the stream": ("I5", _stream_gap),
    "H5 sees a terminal id": ("I6", _h5_sees_terminal_id),
    "H5 sees another's token": ("I6", _h5_sees_another_token),
    "H5 sees another session": ("I6", _h5_sees_another_session),
    "expired before expires_at": ("EX", _expired_early),
    "denied by an expired lock": ("EX", _denied_by_expired_lock),
    "move not announced": ("TO1", _move_not_announced),
    "lock outlives a merge": ("TO3", _lock_outlives_a_merge),
    "provider payment with neither outcome": ("I9", _provider_payment_lost),
    "provider payment paid and surplus": ("I9", _provider_payment_counted_twice),
    "provider payment paid and refunded": ("I9", _provider_payment_paid_and_refunded),
    "order paid by no payment": ("I8", _order_paid_by_nobody),
    "ERP's copy closed an order another payment paid": ("I9", _erps_copy_but_paid_by_another),
}


@pytest.mark.parametrize("name", list(VIOLATIONS))
def test_checker_reports_each_kind_of_violation(name):
    """A hand-made history with one violation planted is reported under that invariant."""
    invariant, plant = VIOLATIONS[name]
    history = clean_history()
    plant(history)
    report = check(history)
    assert invariant in report.by_invariant(), (name, [str(v) for v in report.violations])


# --- the real thing -----------------------------------------------------------------------


async def test_history_holds_every_invariant_across_two_processes_a_kill_and_a_redis_restart(redis_factory, tmp_path):
    """A randomized run of ERP terminals and diners paying through the sandbox provider — whole orders and split-bill
    shares side by side — on two processes, with kill -9 and a Redis restart, breaks no invariant (provider money
    and split bill included: I8, I9, I10)."""
    redis = redis_factory(tcp=True)
    started = time.monotonic()
    history = await run_workload(Plan(ops=3000, max_seconds=60, providers=True, settle_seconds=15, shares=0.25),
                                 redis, tmp_path)
    report = check(history)
    statuses = history.notes["statuses"]
    faults = [f.kind for f in history.faults]
    summary = {"ops": len(history.ops), "events": len(history.stream), "violations": len(report.violations),
               "trades": len(history.trades), "settled in": history.notes.get("settle_seconds"),
               "faults": faults, "statuses": statuses, "seconds": round(time.monotonic() - started, 1),
               "checked": dict(report.counts)}
    print(f"\nhistory: {summary}")
    assert report.violations == [], "\n".join(str(v) for v in report.violations[:30])
    assert "kill" in faults and "redis" in faults
    assert len(history.ops) >= 2500 and len(history.stream) >= 500
    assert statuses.get("503:UNAVAILABLE", 0) > 0, "the Redis outage was not seen by any request"
    resumed = [c for c in history.connections if c.since is not None and c.hello_seq is not None]
    assert resumed, "no subscriber resumed after the kill"
    assert report.counts["I4 accepted completions"] > 0 and report.counts["I5 events expected"] > 0
    assert report.counts["TO moves"] > 0 and report.counts["TO merges"] > 0, "no move or merge went through"
    assert report.counts["I9 captured"] >= 3, "too little provider traffic to judge invariant 9"
    assert report.counts["I9 paid"] + report.counts["I9 surplus"] == report.counts["I9 captured"]
    c = report.counts
    assert c["I10 shares granted"] >= 10 and c["I10 grants beside live shares"] >= 1, "too few shares side by side"
    assert c["I10 shares paid"] >= 5 and c["I9 shares paid"] >= 1 and c["I10 split orders paid"] >= 1, \
        "too few shares paid to judge invariant 10"
    assert c["I10 order changes after a share was paid"] >= 1 and c["I10 ERP books compared"] >= 1
