"""Check every SPEC §3 invariant over a recorded History. Pure: no I/O, no clock.

The store's event stream (read back at the end) is the record of what happened; the HTTP answers
and what each subscriber received are checked against it and against the rules:

    I1  at most one payment lock and at most one edit-slot lock per order at any instant
    I2  a payment lock never coexists with an order lock
    I3  fences strictly increase per order in grant order; every grant an answer shows was announced
    I4  at most one accepted completion per order, none with a stale, expired, forced-away or
        foreign token, a wrong version or a wrong amount
    I5  exactly one end event per lock; the stream itself has no gap; per subscriber: ``delivery_check``
    I6, EX  what H5 sees, exact expiry: ``delivery_check``
    TO  SPEC §11 moves and merges (``moves.py``): announced, locks on the order's table, merged sources done
    I8, I9  provider money (SPEC §13): see ``payments_check``
    I10  split bill (SPEC §10, §13): see ``shares_check``

Locks and their intervals: ``lives.py``. With split bill, several share payment locks of one order
may be live at once (I1 leaves share-with-share out; ``shares_check`` keeps them disjoint), while a
whole-order payment lock still overlaps no other payment lock, share or not.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Iterator

from tests.support.history.delivery_check import check_expiry, check_leaks, check_subscribers, expiry_lags
from tests.support.history.lives import LockLife, Violation, grant_locks, lock_key, reconstruct
from tests.support.history.moves import check_table_ops
from tests.support.history.payments_check import check_payments
from tests.support.history.recorder import History, Op
from tests.support.history.shares_check import check_shares

__all__ = ["Report", "Violation", "check", "expiry_lags"]




@dataclass
class Report:
    """The checker's answer: violations, and how much it looked at (a checker that saw nothing proves nothing)."""

    violations: list[Violation]
    counts: Counter

    def by_invariant(self) -> Counter:
        """Violations per invariant."""
        return Counter(v.invariant for v in self.violations)


def check(history: History) -> Report:
    """Every invariant over ``history``."""
    out: list[Violation] = []
    counts: Counter = Counter()
    stream = sorted(history.stream, key=lambda e: e["seq"])
    locks = reconstruct(stream, out)
    final = {(l["order_id"], int(l["fence"])): l for l in history.final_locks}
    counts["events"] = len(stream)
    counts["locks"] = len(locks)
    counts["ops"] = len(history.ops)
    _stream_gaps(stream, out)
    _intervals(locks, final, out, counts)
    _fences(stream, locks, history.ops, out, counts)
    _completions(stream, locks, history.ops, out, counts)
    if history.final_now:  # a history without a final lock board cannot tell a live lock from a lost end
        _one_end(locks, final, history.final_now, history.final_seq, out, counts)
    check_subscribers(history, stream, out, counts)
    check_expiry(stream, history, out, counts)
    check_leaks(history, out, counts)
    check_table_ops(history, stream, locks, out, counts, Violation)
    out += [Violation(invariant, detail) for invariant, detail in check_payments(history, stream, counts)]
    out += [Violation(invariant, detail) for invariant, detail in check_shares(history, stream, locks, counts)]
    return Report(out, counts)



# --- I1, I2: overlaps ---------------------------------------------------------------------


def _overlaps(intervals: list[tuple[float, float, LockLife]]) -> Iterator[tuple[LockLife, LockLife]]:
    """Pairs of intervals that overlap (touching ones do not)."""
    intervals = sorted(intervals, key=lambda x: (x[0], x[1]))
    active: list[tuple[float, float, LockLife]] = []
    for start, end, life in intervals:
        active = [a for a in active if a[1] > start]
        for other in active:
            yield other[2], life
        if end > start:
            active.append((start, end, life))


def _intervals(locks: dict[tuple[str, int], LockLife], final: dict, out: list[Violation], counts: Counter) -> None:
    by_order: dict[str, list[LockLife]] = defaultdict(list)
    for life in locks.values():
        by_order[life.order_id].append(life)
    for order_id, lives in by_order.items():
        spans = {life.fence: (life.acquired_at, life.end(final), life) for life in lives}
        for slot in ("edit", "pay"):
            in_slot = [s for s in spans.values() if s[2].slot == slot]
            counts[f"I1 {slot} intervals"] += len(in_slot)
            for a, b in _overlaps(in_slot):
                if a.share is not None and b.share is not None:
                    counts["I1 share pairs side by side"] += 1  # split bill: kept apart by shares_check (I10)
                    continue
                out.append(Violation("I1", f"order {order_id}: {slot}-slot locks overlap: "
                                           f"{_describe(a, final)} and {_describe(b, final)}"))
        pay_and_order = [s for s in spans.values() if s[2].kind in ("payment", "order")]
        for a, b in _overlaps(pay_and_order):
            if {a.kind, b.kind} == {"payment", "order"}:
                counts["I2 conflicts"] += 1
                out.append(Violation("I2", f"order {order_id}: payment and order locks coexist: "
                                           f"{_describe(a, final)} and {_describe(b, final)}"))
        counts["I2 pairs looked at"] += len(pay_and_order)


def _describe(life: LockLife, final: dict) -> str:
    return f"{life.kind}#{life.fence} [{life.acquired_at}, {life.end(final)})"


# --- I3: fences ---------------------------------------------------------------------------




def _fences(stream: list[dict[str, Any]], locks: dict, ops: list[Op], out: list[Violation], counts: Counter) -> None:
    last: dict[str, tuple[int, int]] = {}
    for event in stream:
        if event["name"] != "lock.acquired":
            continue
        order_id, fence = lock_key(event)  # type: ignore[misc]
        counts["I3 grants"] += 1
        if order_id in last and fence <= last[order_id][0]:
            out.append(Violation("I3", f"order {order_id}: fence {fence} (seq {event['seq']}) after fence "
                                       f"{last[order_id][0]} (seq {last[order_id][1]})"))
        last[order_id] = (fence, event["seq"])
    for op in ops:
        for lock in grant_locks(op):
            if lock.get("enforced") is False:
                continue
            key = (lock["order_id"], int(lock["fence"]))
            counts["I3 answers matched"] += 1
            life = locks.get(key)
            if life is None:
                out.append(Violation("I3", f"op {op.i} ({op.actor}) was granted {lock['kind']}#{key[1]} on "
                                           f"{key[0]}, which no lock.acquired announced"))
            elif life.kind != lock["kind"] or _holder_id(life.holder) != _holder_id(lock.get("holder") or {}):
                out.append(Violation("I3", f"op {op.i}: grant {key} differs from its lock.acquired "
                                           f"({life.kind} of {_holder_id(life.holder)})"))


def _holder_id(holder: dict[str, Any]) -> str:
    return f"{holder.get('role')}:{holder.get('terminal_id') or holder.get('session_id') or ''}"


# --- I4: payments -------------------------------------------------------------------------


def _is_completion(op: Op) -> bool:
    # A terminal paying its own share (``.../shares/payments``) is one of several: shares_check judges it.
    return op.method == "POST" and op.path.endswith("/payments") and "/locks" not in op.path \
        and not op.path.endswith("/shares/payments")


def _completions(stream: list[dict[str, Any]], locks: dict, ops: list[Op], out: list[Violation],
                 counts: Counter) -> None:
    paid_events: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in stream:
        if event["name"] == "order.paid":
            paid_events[event["order_id"]].append(event)
    for order_id, events in paid_events.items():
        counts["I4 orders paid"] += 1
        if len(events) > 1:
            out.append(Violation("I4", f"order {order_id} marked paid {len(events)} times "
                                       f"(seqs {[e['seq'] for e in events]})"))
    # Which lock each token belongs to, and who was given it.
    by_token: dict[str, tuple[tuple[str, int], str]] = {}
    for op in ops:
        for lock in grant_locks(op):
            by_token.setdefault(lock["token"], ((lock["order_id"], int(lock["fence"])), op.actor))
    accepted: dict[str, set[str]] = defaultdict(set)
    for op in ops:
        if not _is_completion(op) or op.status != 200 or not isinstance(op.body, dict):
            continue
        counts["I4 accepted completions"] += 1
        order = (op.resp or {}).get("order") or {}
        order_id = order.get("order_id")
        ref = op.body.get("payment_ref")
        accepted[order_id].add(ref)
        paid = paid_events.get(order_id, [])
        paid_ref = (paid[0]["data"].get("payment_ref") if paid else None)
        if paid and ref != paid_ref:
            out.append(Violation("I4", f"op {op.i} ({op.actor}): completion {ref} of order {order_id} accepted, "
                                       f"but the order was paid by {paid_ref}"))
            continue
        if not paid and order.get("status") == "paid":
            continue  # paid by the ERP's own push of a paid status: no order.paid to compare with
        found = by_token.get(op.body.get("token"))
        if found is None:
            out.append(Violation("I4", f"op {op.i} ({op.actor}): completion of {order_id} accepted with a token "
                                       "no grant ever handed out"))
            continue
        key, owner = found
        if owner != op.actor:
            out.append(Violation("I4", f"op {op.i} ({op.actor}): completion of {order_id} accepted with "
                                       f"{owner}'s token (foreign)"))
        life = locks.get(key)
        if key[0] != order_id or life is None or life.kind != "payment":
            out.append(Violation("I4", f"op {op.i}: completion of {order_id} accepted with the token of {key}"))
            continue
        if not life.ends or life.ends[0]["name"] != "lock.released" or life.ends[0]["data"].get("reason") != "paid":
            how = life.ends[0]["name"] + "/" + str(life.ends[0]["data"].get("reason")) if life.ends else "still live"
            out.append(Violation("I4", f"op {op.i} ({op.actor}): completion of {order_id} accepted with the token of "
                                       f"payment#{key[1]}, which ended {how}, not by this payment (stale token)"))
        if paid:
            paid_order = paid[0]["data"].get("order") or {}
            if op.body.get("version") != paid_order.get("version"):
                out.append(Violation("I4", f"op {op.i}: completion of {order_id} accepted for version "
                                           f"{op.body.get('version')}, the order is at {paid_order.get('version')}"))
            # With split bill (SPEC §10) a whole-order payment takes what the paid shares left due.
            due = int(paid_order.get("total_cents") or 0) - int(paid_order.get("paid_cents") or 0)
            if op.body.get("amount_cents") != due:
                out.append(Violation("I4", f"op {op.i}: completion of {order_id} accepted for "
                                           f"{op.body.get('amount_cents')}, {due} was due"))
    for order_id, refs in accepted.items():
        if len(refs) > 1:
            out.append(Violation("I4", f"order {order_id}: {len(refs)} different completions accepted: {sorted(refs)}"))


# --- I5: lock ends, seq, resume -------------------------------------------------------------


def _one_end(locks: dict[tuple[str, int], LockLife], final: dict, final_now: int, final_seq: int,
             out: list[Violation], counts: Counter) -> None:
    """Each lock granted by ``final_seq`` has exactly one end by then, unless it is on the final board."""
    for key, life in locks.items():
        if final_seq and life.grant_seq > final_seq:
            continue
        ends = len([e for e in life.ends if not final_seq or e["seq"] <= final_seq])
        if len(life.ends) > 1:
            ends = len(life.ends)
        counts["I5 locks ended"] += ends == 1
        if ends > 1:
            out.append(Violation("I5", f"lock {life.kind}#{key[1]} of {key[0]} ended {ends} times: "
                                       f"{[(e['name'], e['seq']) for e in life.ends]}"))
        elif ends == 1 and key in final:
            out.append(Violation("I5", f"lock {key} ended (seq {life.ends[0]['seq']}) but is still on the board"))
        elif ends == 0 and key not in final:
            if final_now and 0 <= final_now - life.expires_at < 1000:
                continue  # expired just before the board was read: its lock.expired is due within 250 ms
            out.append(Violation("I5", f"lock {life.kind}#{key[1]} of {key[0]} (expires_at {life.expires_at}) never "
                                       f"ended and is not on the final board read at {final_now} (lost end event)"))


def _stream_gaps(stream: list[dict[str, Any]], out: list[Violation]) -> None:
    seqs = [e["seq"] for e in stream]
    for a, b in zip(seqs, seqs[1:]):
        if b != a + 1:
            out.append(Violation("I5", f"the event stream jumps from seq {a} to {b}"))
