"""SPEC §10 split bill — invariant 10 of §13 — over a recorded History. Pure: no I/O, no clock.

    I10  at each share lock granted (``lock.acquired`` whose lock has a ``share``) the order's shares
         that count — every paid share and every share lock still live, in stream order — never
         overlap (a line in one share only; equal parts all of one N, each part once) and, with the
         new one, never sum above the order's total; the share's amount is what its kind says (a part:
         the equal part, the last taking the rounding; lines: their amounts; the rest: what remained)
         at each ``share.paid``: the share is one whose lock has just ended ``lock.released{paid}``,
         paid once (a fence is never paid twice), ``paid_cents`` is the running sum of the paid shares
         (each counted exactly once), never above the total, and the order was still open — or else
         the order was closed as paid by the ERP's own copy (``order.updated``) after the share's lock,
         completing, ended ``order_closed``: the ERP had booked that share, pay_confirm.lua joins it
         from its payment record (issue 13), and no ``order.paid`` follows (the order is paid already)
         at each ``order.paid`` of an order with paid shares: the shares reached the total (the event
         right after the share that reached it, only the other locks' releases between), or a
         whole-order payment took exactly what remained; shares reaching the total always pay the order
         at the end (``History.final_orders``, read from Redis): paid_cents = the sum of the order's
         paid shares = what the stream paid, the shares disjoint, never above the total, the order paid
         when they reach it, one payment_ref per share; and the ERP's books (``History.erp_books``) hold
         the same share payments, unless the workload could not know their outcome (``uncertain``)
         or a payment of the order was still being confirmed when the run ended
I9 for a share's provider trade (its outcome is that share paid, or a surplus) is in ``payments_check``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tests.support.history.recorder import History

#: Payment record states in which the ERP may not have answered yet (the books may still differ).
UNSETTLED = ("completing", "unknown")


@dataclass
class OrderShares:
    """One order's split bill as the stream has told it so far."""

    total: int | None = None
    lines: dict[str, int] = field(default_factory=dict)
    live: dict[int, dict[str, Any]] = field(default_factory=dict)
    ended_paid: dict[int, dict[str, Any]] = field(default_factory=dict)
    paid: dict[int, dict[str, Any]] = field(default_factory=dict)
    paid_sum: int = 0
    closed: bool = False
    #: the status the order closed with ("paid" | "cancelled"), "" while open.
    closed_as: str = ""
    #: share locks that ended order_closed while completing (the ERP may have booked them): fence -> share.
    closed_completing: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: seq of the share.paid that made the shares reach the total, until order.paid follows.
    reached: int | None = None
    last: str = ""


def part_amount(total: int, parts: int, part: int) -> int:
    """One of ``parts`` equal parts of ``total``; the last part takes the rounding (SPEC §10)."""
    each = total // parts
    return total - each * (parts - 1) if part == parts else each


def overlap(share: dict[str, Any], others: Iterable[dict[str, Any]]) -> str | None:
    """Why ``share`` overlaps one of ``others`` (a line twice; parts of another N or the same part), or None."""
    for other in others:
        if share.get("kind") == "lines" and other.get("kind") == "lines":
            both = set(share.get("line_ids") or []) & set(other.get("line_ids") or [])
            if both:
                return f"line {min(both)} also in share#{other.get('fence')}"
        if share.get("kind") == "parts" and other.get("kind") == "parts":
            if int(other["parts"]) != int(share["parts"]):
                return f"parts of {share['parts']} beside parts of {other['parts']} (share#{other.get('fence')})"
            if int(other["part"]) == int(share["part"]):
                return f"part {share['part']}/{share['parts']} twice (share#{other.get('fence')})"
    return None


def _order_of(event: dict[str, Any]) -> dict[str, Any] | None:
    order = (event.get("data") or {}).get("order")
    return order if isinstance(order, dict) and order.get("order_id") == event.get("order_id") else None


def _line_amounts(order: dict[str, Any]) -> dict[str, int]:
    out = {i["line_id"]: int(i["qty"]) * int(i["unit_price_cents"]) for i in order.get("items") or []}
    for adjustment in order.get("adjustments") or []:
        if adjustment.get("line_id") in out:
            out[adjustment["line_id"]] += int(adjustment["amount_cents"])
    return out


def _expected_amount(share: dict[str, Any], st: OrderShares, due: int) -> int | None:
    """What the share's kind makes its amount (None: an amount share, any amount goes)."""
    kind = share.get("kind")
    if kind == "parts" and st.total is not None:
        return part_amount(st.total, int(share["parts"]), int(share["part"]))
    if kind == "lines" and st.lines:
        return sum(st.lines.get(line, 0) for line in share.get("line_ids") or [])
    if kind == "rest":
        return due
    return None


def check_shares(history: History, stream: list[dict[str, Any]], lives: dict, counts: Counter) -> list[tuple[str, str]]:
    """The I10 violations of ``history`` (``stream`` sorted by seq; ``lives`` from ``lives.reconstruct``)."""
    out: list[tuple[str, str]] = []
    orders: dict[str, OrderShares] = defaultdict(OrderShares)

    def flag(detail: str) -> None:
        out.append(("I10", detail))

    for event in stream:
        order_id, name, data = event.get("order_id"), event["name"], event.get("data") or {}
        if order_id is None:
            continue
        st = orders[order_id]
        order = _order_of(event)
        if st.reached is not None and name != "order.paid" and not (
                name == "lock.released" and data.get("reason") == "paid"):
            flag(f"order {order_id}: its shares reached the total (seq {st.reached}) but {name} (seq "
                 f"{event['seq']}) came before any order.paid")
            st.reached = None
        if name == "lock.acquired" and (data.get("lock") or {}).get("share"):
            _granted(order_id, event, st, counts, flag)
        elif name in ("lock.released", "lock.expired", "lock.forced"):
            fence = int((data.get("lock") or {}).get("fence") or -1)
            share = st.live.pop(fence, None)
            if share is not None and name == "lock.released" and data.get("reason") == "paid":
                st.ended_paid[fence] = share
            lock = data.get("lock") or {}
            if share is not None and data.get("reason") == "order_closed" and (
                    lock.get("completing") or lock.get("phase") == "completing"):
                st.closed_completing[fence] = share
        elif name == "share.paid":
            _share_paid(order_id, event, st, counts, flag)
        elif name == "order.paid":
            _order_paid(order_id, event, st, counts, flag)
        if order is not None:
            st.total, st.lines = int(order["total_cents"]), _line_amounts(order)
            if order.get("status") in ("paid", "cancelled"):
                st.closed = True
                st.closed_as = st.closed_as or str(order["status"])
            if name == "order.updated" and st.paid and order.get("status") == "open":
                counts["I10 order changes after a share was paid"] += 1
        st.last = name
    for order_id, st in orders.items():
        if st.reached is not None:
            flag(f"order {order_id}: its shares reached the total (seq {st.reached}) and the order was never paid")
    _final(history, orders, counts, flag)
    return out


def _granted(order_id: str, event: dict[str, Any], st: OrderShares, counts: Counter, flag: Any) -> None:
    lock = event["data"]["lock"]
    share = {**lock["share"], "fence": int(lock["fence"])}
    amount = int(share.get("amount_cents") or 0)
    counts["I10 shares granted"] += 1
    counts[f"I10 {share.get('kind')} shares"] += 1
    counted = [*st.paid.values(), *st.live.values()]
    if st.live:
        counts["I10 grants beside live shares"] += 1
    why = overlap(share, counted)
    if why is not None:
        flag(f"order {order_id}: share#{share['fence']} (seq {event['seq']}) overlaps: {why}")
    held = sum(int(s.get("amount_cents") or 0) for s in counted)
    if st.total is not None:
        counts["I10 grants checked against the total"] += 1
        if held + amount > st.total:
            flag(f"order {order_id}: share#{share['fence']} of {amount} (seq {event['seq']}) with {held} already "
                 f"claimed or paid is above the total {st.total}")
        expected = _expected_amount(share, st, st.total - held)
        if amount < 1 or (expected is not None and amount != expected):
            flag(f"order {order_id}: {share.get('kind')} share#{share['fence']} (seq {event['seq']}) is {amount} "
                 f"cents, its kind makes it {expected}")
    st.live[share["fence"]] = share


def _share_paid(order_id: str, event: dict[str, Any], st: OrderShares, counts: Counter, flag: Any) -> None:
    data = event["data"]
    share = data.get("share") or {}
    fence = int(share.get("fence") or -1)
    amount = int(share.get("amount_cents") or 0)
    counts["I10 shares paid"] += 1
    if fence in st.paid:
        flag(f"order {order_id}: share#{fence} paid twice (seq {event['seq']})")
        return
    late = st.closed_as == "paid" and fence in st.closed_completing and fence not in st.ended_paid
    lock_share = st.closed_completing.pop(fence, None) if late else st.ended_paid.pop(fence, None)
    if lock_share is None:
        flag(f"order {order_id}: share.paid (seq {event['seq']}) for share#{fence}, whose lock did not just end paid")
    elif int(lock_share.get("amount_cents") or 0) != amount:
        flag(f"order {order_id}: share#{fence} claimed for {lock_share.get('amount_cents')}, paid as {amount}")
    if late:
        counts["I10 shares paid after the ERP's copy closed the order"] += 1
        why = overlap(share, st.paid.values())
        if why is not None:
            flag(f"order {order_id}: share#{fence} paid (seq {event['seq']}) after the ERP closed the order overlaps: {why}")
    elif st.closed:
        flag(f"order {order_id}: share#{fence} paid (seq {event['seq']}) after the order was closed")
    st.paid[fence] = {**share, "fence": fence}
    st.paid_sum += amount
    if int(data.get("paid_cents", -1)) != st.paid_sum:
        flag(f"order {order_id}: share.paid (seq {event['seq']}) says paid_cents {data.get('paid_cents')}, the "
             f"paid shares add up to {st.paid_sum}")
    total = st.total if st.total is not None else int((data.get("order") or {}).get("total_cents") or 0)
    if st.paid_sum > total:
        flag(f"order {order_id}: paid shares add up to {st.paid_sum}, above the total {total} (seq {event['seq']})")
    elif st.paid_sum == total and not late:  # a late share finds the order paid already: no order.paid follows
        st.reached = event["seq"]


def _order_paid(order_id: str, event: dict[str, Any], st: OrderShares, counts: Counter, flag: Any) -> None:
    by_shares = st.reached is not None or st.last == "share.paid"
    st.reached = None
    if not st.paid:
        return
    counts["I10 split orders paid"] += 1
    amount = int((event.get("data") or {}).get("amount_cents") or 0)
    total = st.total or 0
    if by_shares and st.paid_sum < total:
        flag(f"order {order_id} paid (seq {event['seq']}) while its shares fall short: {st.paid_sum} of {total}")
    elif by_shares and amount != st.paid_sum:
        flag(f"order {order_id} paid by its shares for {amount}, they add up to {st.paid_sum}")
    elif not by_shares and st.paid_sum + amount != total:
        flag(f"order {order_id} paid (seq {event['seq']}) by a payment of {amount} after {st.paid_sum} paid in "
             f"shares: the total is {total}")
    if not by_shares:
        counts["I10 rests paid whole"] += 1


def _final(history: History, orders: dict[str, OrderShares], counts: Counter, flag: Any) -> None:
    unsettled = {p.get("order_id") for p in history.payments if p.get("state") in UNSETTLED}
    for order_id, final in history.final_orders.items():
        shares = final.get("shares") or []
        paid_cents, total = int(final.get("paid_cents") or 0), int(final.get("total_cents") or 0)
        if not shares and not paid_cents:
            continue
        counts["I10 final split orders"] += 1
        added = sum(int(s.get("amount_cents") or 0) for s in shares)
        if added != paid_cents:
            flag(f"order {order_id} at the end: paid_cents {paid_cents}, its paid shares add up to {added}")
        streamed = orders[order_id].paid_sum if order_id in orders else None
        if history.stream and streamed is not None and streamed != paid_cents:
            flag(f"order {order_id} at the end: paid_cents {paid_cents}, the stream paid {streamed} in shares")
        for i, share in enumerate(shares):
            why = overlap(share, shares[:i])
            if why is not None:
                flag(f"order {order_id} at the end: paid share#{share.get('fence')} overlaps: {why}")
        if paid_cents > total:
            flag(f"order {order_id} at the end: {paid_cents} paid in shares, above the total {total}")
        if paid_cents >= total and final.get("status") != "paid":
            flag(f"order {order_id} at the end: its shares reached the total but it is {final.get('status')}")
        refs = Counter(int(f) for f in (final.get("refs") or {}).values())
        for share in shares:
            if refs[int(share.get("fence") or -1)] != 1:
                flag(f"order {order_id} at the end: share#{share.get('fence')} recorded under "
                     f"{refs[int(share.get('fence') or -1)]} payment refs")
        books = history.erp_books.get(order_id)
        if books is None or books.get("uncertain") or order_id in unsettled:
            counts["I10 ERP books not compared"] += 1
            continue
        counts["I10 ERP books compared"] += 1
        erp_refs = set(books.get("shares") or {})
        ours = {ref for ref, fence in (final.get("refs") or {}).items()
                if int(fence) in {int(s.get("fence") or -1) for s in shares}}
        if erp_refs != ours or sum(int(v) for v in (books.get("shares") or {}).values()) != paid_cents:
            flag(f"order {order_id} at the end: the ERP booked shares {sorted(erp_refs)} "
                 f"({sum(int(v) for v in (books.get('shares') or {}).values())} cents), the coordinator "
                 f"{sorted(ours)} ({paid_cents} cents)")
