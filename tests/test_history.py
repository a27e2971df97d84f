"""The history checker: honest on hand-made histories (each invariant's violation is reported), and
silent on a real randomized run across two coordinator processes with a kill -9 and a Redis restart."""

from __future__ import annotations

import copy
import time
from typing import Any, Callable

import pytest

from tests.support.history.checker import check
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
    """A randomized run of ERP terminals and diners on two processes, with kill -9 and a Redis restart, breaks no invariant."""
    redis = redis_factory(tcp=True)
    started = time.monotonic()
    history = await run_workload(Plan(ops=3000, max_seconds=80), redis, tmp_path)
    report = check(history)
    statuses = history.notes["statuses"]
    faults = [f.kind for f in history.faults]
    summary = {"ops": len(history.ops), "events": len(history.stream), "violations": len(report.violations),
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
