"""The checker's part for what clients are told (SPEC §3 invariants 5 and 6, exact expiry). Pure.

    I5  per subscriber strictly increasing seq and nothing missing after a resume (no snapshot on a resume)
    EX  expiry is exact: no lock.expired before expires_at, no denial citing a lock already expired
    I6  H5 answers and H5 websocket messages never carry others' tokens, terminal ids or other
        sessions' ids
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Any, Iterator

from coordinator.core.views import STAFF_ONLY_EVENTS
from tests.support.history.lives import Violation, grant_locks
from tests.support.history.recorder import History

DENIALS = ("ORDER_LOCKED", "PAYMENT_LOCKED", "PRESETTLED")
#: Slack for mapping the workload's monotonic clock to Redis ms (sampling error, ms truncation).
CLOCK_SLACK_MS = 15
_TERMINAL_ID = re.compile(r"T[0-9a-f]{8}")


def check_subscribers(history: History, stream: list[dict[str, Any]], out: list[Violation], counts: Counter) -> None:
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


def check_expiry(stream: list[dict[str, Any]], history: History, out: list[Violation], counts: Counter) -> None:
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


def check_leaks(history: History, out: list[Violation], counts: Counter) -> None:
    tokens_of: dict[str, set[str]] = defaultdict(set)
    for op in history.ops:
        for lock in grant_locks(op):
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
