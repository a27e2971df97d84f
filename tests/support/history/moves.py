"""The history checker's part for SPEC §11 table operations (moves and merges). Pure.

    TO1  every move / merge the coordinator answered 200 is in the stream: one order.moved for a
         move, one order.merged per source for a merge, naming what the answer names
    TO2  locks follow their order: every lock.acquired names the table its order is at as of that
         seq (order.updated / order.moved tell where an order is)
    TO3  a merged source is done: after its order.merged no lock is granted on it and none of its
         locks outlives the merge (each ended at or before that seq)
    TO4  split bill (SPEC §10, §11): a table operation never forces a share's payment lock with money
         in flight (phase in_flight / completing, or completing); a claimed one it may
    TO5  locks follow their order: every lock on the final board names the table its order is at
         (``History.final_orders``), share locks included
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from tests.support.history.recorder import History


def _answered(history: History, suffix: str) -> list[Any]:
    return [op for op in history.ops if op.method == "POST" and op.path.endswith(suffix) and op.status == 200]


def check_table_ops(history: History, stream: list[dict[str, Any]], lives: dict, out: list, counts: Counter,
                    violation: Any) -> None:
    """Append a ``violation(invariant, detail)`` for each broken TO1–TO3 rule."""
    moved = [e for e in stream if e["name"] == "order.moved"]
    merged = [e for e in stream if e["name"] == "order.merged"]
    counts["TO moves"] += len(moved)
    counts["TO merges"] += len(merged)
    # TO1
    for op in _answered(history, "/move"):
        order_id = op.path.rstrip("/").split("/")[-2]
        to = op.body.get("to_table_id")
        hits = [e for e in moved if e["order_id"] == order_id and e["data"].get("to_table_id") == to]
        if not hits:
            out.append(violation("TO1", f"move of {order_id} to {to} answered 200 (op {op.i}) without order.moved"))
    for op in _answered(history, "/merge"):
        into = op.path.rstrip("/").split("/")[-2]
        for source in op.body.get("from_order_ids") or []:
            if not [e for e in merged if e["order_id"] == source and e["data"].get("into") == into]:
                out.append(violation("TO1", f"merge of {source} into {into} answered 200 (op {op.i}) without order.merged"))
    # TO2
    where: dict[str, str] = {}
    for event in stream:
        data = event.get("data") or {}
        if event["name"] in ("order.updated", "order.paid") and isinstance(data.get("order"), dict):
            where[data["order"]["order_id"]] = data["order"]["table_id"]
        elif event["name"] == "order.moved":
            where[event["order_id"]] = data.get("to_table_id")
        elif event["name"] == "lock.acquired":
            lock = data.get("lock") or {}
            counts["TO2 grants placed"] += 1
            at = where.get(lock.get("order_id"))
            if at is not None and lock.get("table_id") != at:
                out.append(violation("TO2", f"lock {lock.get('order_id')}/{lock.get('fence')} granted at seq "
                                            f"{event['seq']} names table {lock.get('table_id')}, its order is at {at}"))
    # TO3
    for event in merged:
        source, seq = event["order_id"], event["seq"]
        for (order_id, fence), life in lives.items():
            if order_id != source:
                continue
            if life.grant_seq > seq:
                out.append(violation("TO3", f"lock {order_id}/{fence} granted (seq {life.grant_seq}) after the merge"))
            elif not life.ends or life.ends[0]["seq"] > seq:
                out.append(violation("TO3", f"lock {order_id}/{fence} outlived the merge of its order (seq {seq})"))
    # TO4
    for event in stream:
        data = event.get("data") or {}
        lock = data.get("lock") or {}
        if event["name"] != "lock.forced" or not data.get("operation") or not lock.get("share"):
            continue
        counts["TO4 share locks forced by an operation"] += 1
        if lock.get("completing") or lock.get("phase") in ("in_flight", "completing"):
            out.append(violation("TO4", f"{data['operation']} forced share lock {lock.get('order_id')}/{lock.get('fence')} "
                                        f"with money in flight (phase {lock.get('phase')}, seq {event['seq']})"))
    # TO5
    for lock in history.final_locks:
        final = history.final_orders.get(lock.get("order_id"))
        if final is None or final.get("table_id") is None:
            continue
        counts["TO5 final locks placed"] += 1
        if lock.get("table_id") != final["table_id"]:
            out.append(violation("TO5", f"lock {lock.get('order_id')}/{lock.get('fence')} on the final board names table "
                                        f"{lock.get('table_id')}, its order is at {final['table_id']}"))
