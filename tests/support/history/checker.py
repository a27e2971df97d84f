"""Check every SPEC §3 invariant over a recorded History. Pure: no I/O, no clock.

The store's event stream (read back at the end) is the record of what happened; the HTTP answers
and what each subscriber received are checked against it and against the rules:

    I1  at most one payment lock and at most one edit-slot lock per order at any instant
    I2  a payment lock never coexists with an order lock
    I3  fences strictly increase per order in grant order; every grant an answer shows was announced
    I4  at most one accepted completion per order, none with a stale, expired, forced-away or
        foreign token, a wrong version or a wrong amount
    I5  exactly one end event per lock; per subscriber strictly increasing seq and nothing missing
        after a resume; the stream itself has no gap
    I6  H5 answers and H5 websocket messages never carry others' tokens, terminal ids or other
        sessions' ids
    EX  expiry is exact: no lock.expired before expires_at, no denial citing a lock already expired
    TO  SPEC §11 moves and merges (``moves.py``): announced, locks on the order's table, merged sources done

A lock is known by (order_id, fence). Its interval is [acquired_at, end) on the Redis clock, where
end is the ts of its release or force, the expires_at it had when it expired, or — still live at
the end — the expires_at the final lock board shows. Touching intervals (one ends at the ms the
next starts, as in a force or a conversion) do not overlap.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterator

from coordinator.core.views import STAFF_ONLY_EVENTS
from tests.support.history.moves import check_table_ops
from tests.support.history.recorder import History, Op

INF = float("inf")
END_EVENTS = ("lock.released", "lock.expired", "lock.forced")
DENIALS = ("ORDER_LOCKED", "PAYMENT_LOCKED", "PRESETTLED")
#: Slack for mapping the workload's monotonic clock to Redis ms (sampling error, ms truncation).
CLOCK_SLACK_MS = 15
_TERMINAL_ID = re.compile(r"T[0-9a-f]{8}")


@dataclass
class Violation:
    """One broken invariant, with what shows it."""

    invariant: str
    detail: str

    def __str__(self) -> str:
        return f"{self.invariant}: {self.detail}"


@dataclass
class LockLife:
    """One lock from its grant to its end, as the stream tells it."""

    order_id: str
    fence: int
    kind: str
    holder: dict[str, Any]
    acquired_at: int
    expires_at: int
    grant_seq: int
    ends: list[dict[str, Any]] = field(default_factory=list)

    @property
    def slot(self) -> str:
        """edit (order, presettle) or pay (payment)."""
        return "pay" if self.kind == "payment" else "edit"

    def end(self, final: dict[tuple[str, int], dict[str, Any]]) -> float:
        """The end of the lock's interval on the Redis clock (see the module docstring)."""
        if self.ends:
            first = self.ends[0]
            if first["name"] == "lock.expired":
                return int(first["data"]["lock"]["expires_at"])
            return int(first["ts"])
        live = final.get((self.order_id, self.fence))
        return int(live["expires_at"]) if live else self.expires_at


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
    locks = _lives(stream, out)
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
    _subscribers(history, stream, out, counts)
    _expiry(stream, history, out, counts)
    _leaks(history, out, counts)
    check_table_ops(history, stream, locks, out, counts, Violation)
    return Report(out, counts)


# --- reconstruction -----------------------------------------------------------------------


def _lock_key(event: dict[str, Any]) -> tuple[str, int] | None:
    lock = (event.get("data") or {}).get("lock")
    if not isinstance(lock, dict) or "fence" not in lock:
        return None
    return str(lock.get("order_id") or event.get("order_id")), int(lock["fence"])


def _lives(stream: list[dict[str, Any]], out: list[Violation]) -> dict[tuple[str, int], LockLife]:
    lives: dict[tuple[str, int], LockLife] = {}
    for event in stream:
        name, key = event["name"], _lock_key(event)
        if key is None:
            continue
        lock = event["data"]["lock"]
        if name == "lock.acquired":
            if key in lives:
                out.append(Violation("I3", f"fence {key[1]} of order {key[0]} granted twice (seq {event['seq']})"))
                continue
            lives[key] = LockLife(key[0], key[1], lock["kind"], lock.get("holder") or {}, int(lock["acquired_at"]),
                                  int(lock["expires_at"]), event["seq"])
        elif key not in lives:
            out.append(Violation("I5", f"{name} (seq {event['seq']}) for lock {key} that was never granted"))
        elif name == "lock.renewed":
            if lives[key].ends:
                out.append(Violation("I5", f"lock {key} renewed (seq {event['seq']}) after it ended"))
            lives[key].expires_at = int(lock["expires_at"])
        elif name in END_EVENTS:
            lives[key].ends.append(event)
    return lives


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


def _grant_locks(op: Op) -> list[dict[str, Any]]:
    """Locks an answer says were granted to its caller (LockGrant, renew, Checkout)."""
    if op.status not in (200, 201) or not isinstance(op.resp, dict):
        return []
    lock = op.resp.get("lock")
    return [lock] if isinstance(lock, dict) and lock.get("token") else []


def _fences(stream: list[dict[str, Any]], locks: dict, ops: list[Op], out: list[Violation], counts: Counter) -> None:
    last: dict[str, tuple[int, int]] = {}
    for event in stream:
        if event["name"] != "lock.acquired":
            continue
        order_id, fence = _lock_key(event)  # type: ignore[misc]
        counts["I3 grants"] += 1
        if order_id in last and fence <= last[order_id][0]:
            out.append(Violation("I3", f"order {order_id}: fence {fence} (seq {event['seq']}) after fence "
                                       f"{last[order_id][0]} (seq {last[order_id][1]})"))
        last[order_id] = (fence, event["seq"])
    for op in ops:
        for lock in _grant_locks(op):
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
    return op.method == "POST" and (op.path.endswith("/payments") and "/locks" not in op.path)


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
        for lock in _grant_locks(op):
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
            if op.body.get("amount_cents") != paid_order.get("total_cents"):
                out.append(Violation("I4", f"op {op.i}: completion of {order_id} accepted for "
                                           f"{op.body.get('amount_cents')}, the total is {paid_order.get('total_cents')}"))
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


def _subscribers(history: History, stream: list[dict[str, Any]], out: list[Violation], counts: Counter) -> None:
    by_seq = {e["seq"]: e for e in stream}
    conns = defaultdict(list)
    for c in history.connections:
        conns[c.sub].append(c)
    received = defaultdict(list)
    for r in history.received:
        received[r.sub].append(r)
    for sub, connections in conns.items():
        connections.sort(key=lambda c: c.conn)
        h5 = sub in history.h5_subscribers
        first = next((c for c in connections if c.hello_seq is not None), None)
        if first is None:
            continue
        for c in connections[1:]:
            if c.hello_seq is not None and c.snapshot and c.since is not None:
                out.append(Violation("I5", f"{sub}: resume with since={c.since} on connection {c.conn} got a "
                                           "snapshot, not the missed events"))
        # In receive order, across every connection (a resume continues where the last one stopped).
        last, seen = 0, set()
        for r in received[sub]:
            seq = r.event["seq"]
            counts["I5 events received"] += 1
            if seq <= last:
                out.append(Violation("I5", f"{sub}: seq {seq} received after seq {last} (connection {r.conn})"))
            last = max(last, seq)
            seen.add(seq)
            event = by_seq.get(seq)
            if event is not None and _name_order(event) != _name_order(r.event):
                out.append(Violation("I5", f"{sub}: seq {seq} received as {_name_order(r.event)}, the stream has "
                                           f"{_name_order(event)}"))
        until = history.until.get(sub)
        if until is None:
            continue
        expected = {s for s, e in by_seq.items() if first.hello_seq < s <= until and _visible(e, history, sub, h5)}
        missing = sorted(expected - seen)
        counts["I5 events expected"] += len(expected)
        if missing:
            out.append(Violation("I5", f"{sub}: {len(missing)} events missing after seq {first.hello_seq}, e.g. "
                                       f"{missing[:10]}"))


def _name_order(event: dict[str, Any]) -> tuple[str, Any]:
    return event["name"], event.get("order_id")


def _visible(event: dict[str, Any], history: History, sub: str, h5: bool) -> bool:
    """Whether a subscriber must receive ``event`` (an H5 session: its table's, not staff-only)."""
    if not h5:
        return True
    if event["name"] in STAFF_ONLY_EVENTS:
        return False
    table = history.sessions.get(history.h5_subscribers[sub], {}).get("table_id")
    if event.get("table_id") is None:
        return event["name"] == "config.updated"
    return event.get("table_id") == table


# --- EX: expiry is exact ---------------------------------------------------------------------


def _expiry(stream: list[dict[str, Any]], history: History, out: list[Violation], counts: Counter) -> None:
    for event in stream:
        if event["name"] == "lock.expired":
            counts["EX expiries"] += 1
            if int(event["ts"]) < int(event["data"]["lock"]["expires_at"]):
                out.append(Violation("EX", f"lock.expired (seq {event['seq']}) at {event['ts']}, before its "
                                           f"expires_at {event['data']['lock']['expires_at']}"))
    if not history.clock:
        return
    for op in history.ops:
        if op.status != 409 or not isinstance(op.resp, dict):
            continue
        error = op.resp.get("error") or {}
        lock = error.get("lock")
        if error.get("code") not in DENIALS or not isinstance(lock, dict):
            continue
        counts["EX denials"] += 1
        sent = history.redis_ms(op.t0)
        if int(lock["expires_at"]) <= sent - CLOCK_SLACK_MS:
            out.append(Violation("EX", f"op {op.i} ({op.actor}) denied {error['code']} by a lock that expired at "
                                       f"{lock['expires_at']}, before the request was sent (~{sent:.0f})"))


# --- I6: what H5 sees -------------------------------------------------------------------------


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _leaks(history: History, out: list[Violation], counts: Counter) -> None:
    tokens_of: dict[str, set[str]] = defaultdict(set)
    for op in history.ops:
        for lock in _grant_locks(op):
            tokens_of[op.actor].add(lock["token"])
    terminal_ids = set(history.terminals)
    terminal_tokens = set(history.terminals.values())
    session_ids = {actor: s.get("session_id", "") for actor, s in history.sessions.items()}
    session_tokens = {actor: s.get("token", "") for actor, s in history.sessions.items()}
    all_lock_tokens = {t for ts in tokens_of.values() for t in ts}

    def inspect(actor: str, value: Any, where: str) -> None:
        counts["I6 answers inspected"] += 1
        own = tokens_of.get(actor, set()) | {session_tokens.get(actor, "")}
        for text in _strings(value):
            if text in terminal_ids or text in terminal_tokens or any(
                    m in terminal_ids for m in _TERMINAL_ID.findall(text)):
                out.append(Violation("I6", f"{where} to {actor} shows a terminal id or token: {text[:40]!r}"))
            elif text in all_lock_tokens and text not in own:
                out.append(Violation("I6", f"{where} to {actor} shows another holder's lock token"))
            elif any(text == sid and other != actor for other, sid in session_ids.items() if sid):
                out.append(Violation("I6", f"{where} to {actor} shows another session's id {text!r}"))
            elif any(text == tok and other != actor for other, tok in session_tokens.items() if tok):
                out.append(Violation("I6", f"{where} to {actor} shows another session's token"))

    for op in history.ops:
        if op.role == "h5" and op.resp is not None:
            inspect(op.actor, op.resp, f"op {op.i} {op.method} {op.path}")
    for r in history.received:
        actor = history.h5_subscribers.get(r.sub)
        if actor is not None:
            inspect(actor, r.event, f"event seq {r.event['seq']}")


def expiry_lags(history: History, *, outside_faults: bool = False) -> list[float]:
    """How late each lock.expired reached each staff subscriber, in ms after its expires_at (SPEC §7: p99 < 250).

    ``outside_faults`` leaves out deliveries from a second before a kill or Redis restart to three after it.
    """
    if not history.clock:
        return []
    windows = [(f.t0 - 1, (f.t1 or f.t0) + 3) for f in history.faults if f.kind in ("kill", "redis")]
    return [history.redis_ms(r.t) - int(r.event["data"]["lock"]["expires_at"])
            for r in history.received
            if r.event["name"] == "lock.expired" and r.sub not in history.h5_subscribers
            and not (outside_faults and any(a <= r.t <= b for a, b in windows))]
