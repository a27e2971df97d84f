"""SPEC §13 invariants 8 and 9 over a recorded History: provider money. Pure: no I/O, no clock.

    I8  no order is marked paid (``order.paid``) except by an ERP terminal's completion (its
        ``payment_ref`` was sent by an ERP actor) or by a provider payment the sandbox captured
        (``payment_ref`` = ``<provider>:<transaction id>`` of a paid trade)
    I9  every provider transaction the sandbox captured ends as exactly one of: the order it was
        started for, marked paid once by that payment (and never refunded) — for a split-bill
        share's trade (SPEC §10: the trade names its lock's ``fence`` and ``share``), that share
        paid once (``share.paid`` of that fence, for the amount taken) —, or a surplus with a
        refund task (refund pending, processing or succeeded, never more than was received);
        none lost, none counted twice. A trade the provider did not capture has no outcome at all.
        A whole-order trade the ERP confirmed while its own copy of the order (status paid) closed the
        order first is paid without an order.paid (pay_confirm.lua): accepted when the record is paid,
        nothing refunded, and no other payment paid that order.

The sandbox's final trades (``History.trades[*].final``) are the provider's truth; the event
stream is the coordinator's record; the admin payment records (``History.payments``) its books.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, NamedTuple

from tests.support.history.recorder import History


class Flag(NamedTuple):
    """One broken invariant (the checker turns it into its ``Violation``)."""

    invariant: str
    detail: str


#: A refund task that is alive or done (``failed`` / ``manual`` would leave the diner's money kept).
REFUND_OK = ("pending", "processing", "succeeded")


def erp_refs(history: History) -> set[str]:
    """Every payment_ref an ERP terminal ever sent with a completion (accepted or not)."""
    return {op.body["payment_ref"] for op in history.ops
            if op.role == "erp" and op.method == "POST" and op.path.endswith("/payments") and "/locks" not in op.path
            and isinstance(op.body, dict) and op.body.get("payment_ref")}


def check_payments(history: History, stream: list[dict[str, Any]], counts: Counter) -> list[Flag]:
    """The I8 and I9 violations of ``history`` (``stream`` sorted by seq) ."""
    out: list[Flag] = []

    paid_by_ref: dict[str, list[dict[str, Any]]] = defaultdict(list)
    surplus_by_no: dict[str, list[dict[str, Any]]] = defaultdict(list)
    share_paid: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    refund_events: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in stream:
        data = event.get("data") or {}
        if event["name"] == "order.paid":
            paid_by_ref[str(data.get("payment_ref"))].append(event)
        elif event["name"] == "share.paid":
            share_paid[(str(event["order_id"]), int((data.get("share") or {}).get("fence") or -1))].append(event)
        elif event["name"] == "payment.surplus":
            surplus_by_no[str(data.get("out_trade_no"))].append(event)
        elif event["name"] == "payment.refund_updated":
            refund_events[str(data.get("out_trade_no"))].append(event)
    records = {p["out_trade_no"]: p for p in history.payments}
    #: Orders an ERP copy stored as paid (order.updated with status paid), and orders with an order.paid.
    closed_by_copy = {e["order_id"] for e in stream if e["name"] == "order.updated"
                      and ((e.get("data") or {}).get("order") or {}).get("status") == "paid"}
    paid_orders = {e["order_id"]: True for e in stream if e["name"] == "order.paid"}
    captured: set[str] = set()
    # A start repeated while in flight answers the same trade: one transaction, however many starts.
    for trade in {t["out_trade_no"]: t for t in history.trades}.values():
        no, final = trade["out_trade_no"], trade.get("final") or {}
        counts["I9 trades"] += 1
        record = records.get(no) or {}
        if final.get("state") != "paid":
            counts["I9 not captured"] += 1
            if surplus_by_no.get(no) or record.get("state") in ("completing", "paid", "surplus"):
                out.append(Flag("I9", f"trade {no} was never captured by the provider ({final.get('state')}) "
                                           f"but the coordinator booked it ({record.get('state')})"))
            continue
        ref = f"{trade['provider']}:{final.get('transaction_id')}"
        captured.add(ref)
        counts["I9 captured"] += 1
        share = trade.get("share") is not None
        # A share's trade pays its share; the order.paid its last share brings is the order's, not a second outcome.
        paid = share_paid.get((trade["order_id"], int(trade.get("fence") or -1)), []) if share else paid_by_ref.get(ref, [])
        surplus = surplus_by_no.get(no, [])
        refunds = list((final.get("refunds") or {}).values())
        refunded = sum(int(r.get("amount_cents") or 0) for r in refunds)
        if not paid and not surplus and not share and record.get("state") == "paid" and not refunds \
                and trade["order_id"] in closed_by_copy and not paid_orders.get(trade["order_id"]):
            # pay_confirm.lua: the ERP confirmed this payment, but its own copy of the order (status paid,
            # stored from an order.fetch answer) closed the order first — paid, without an order.paid.
            counts["I9 paid, closed by the ERP's copy"] += 1
            continue
        if not paid and not surplus:
            out.append(Flag("I9", f"trade {no} ({ref}, {final.get('amount_cents')} cents) was captured but "
                                       f"neither paid an order nor became a surplus (record: {record.get('state')}): lost"))
            continue
        if paid and surplus:
            out.append(Flag("I9", f"trade {no} ({ref}) both paid order {paid[0]['order_id']} (seq "
                                       f"{paid[0]['seq']}) and became a surplus (seq {surplus[0]['seq']}): counted twice"))
            continue
        if len(paid) > 1 or len(surplus) > 1:
            out.append(Flag("I9", f"trade {no} ({ref}) counted {len(paid) + len(surplus)} times: "
                                       f"{[(e['name'], e['seq']) for e in paid + surplus]}"))
            continue
        if paid:
            counts["I9 paid"] += 1
            event = paid[0]
            if event["order_id"] != trade["order_id"]:
                out.append(Flag("I9", f"trade {no} was started for order {trade['order_id']} but paid "
                                           f"{event['order_id']} (seq {event['seq']})"))
            data = event.get("data") or {}
            got = (data.get("share") or {}).get("amount_cents") if share else data.get("amount_cents")
            if int(got or 0) != int(final.get("amount_cents") or -1):
                out.append(Flag("I9", f"trade {no}: {event['name']} for {got} cents, "
                                           f"the provider took {final.get('amount_cents')}"))
            if share:
                counts["I9 shares paid"] += 1
            if refunds:
                out.append(Flag("I9", f"trade {no} paid order {event['order_id']} and was refunded "
                                           f"{refunded} cents too: counted twice"))
            if record and record.get("state") != "paid":
                out.append(Flag("I9", f"trade {no} paid its order but its record says {record.get('state')}"))
            continue
        counts["I9 surplus"] += 1
        state = record.get("refund_state") if record else None
        if state is None:
            updates = refund_events.get(no) or surplus
            state = (updates[-1].get("data") or {}).get("refund_state")
        if record and record.get("state") != "surplus":
            out.append(Flag("I9", f"trade {no} became a surplus but its record says {record.get('state')}"))
        if state not in REFUND_OK and not refunds:
            out.append(Flag("I9", f"trade {no} is a surplus without a live refund task (refund {state})"))
        if state == "succeeded":
            counts["I9 refunded"] += 1
        if refunded > int(final.get("amount_cents") or 0):
            out.append(Flag("I9", f"trade {no}: {refunded} cents refunded of {final.get('amount_cents')} received"))
    for no in surplus_by_no:
        if no not in {t["out_trade_no"] for t in history.trades}:
            out.append(Flag("I9", f"surplus for trade {no}, which the workload never started"))
    refs = erp_refs(history)
    for ref, events in paid_by_ref.items():
        counts["I8 orders paid"] += len(events)
        if ref not in refs and ref not in captured:
            for event in events:
                out.append(Flag("I8", f"order {event['order_id']} marked paid (seq {event['seq']}) by {ref}, "
                                           "neither an ERP completion nor a captured provider payment"))
    return out
