"""The pure split-bill rule (coordinator/core/shares.py, SPEC §10) row by row, with literal data."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.core.rules import Actor, HeldLock, Kind, Role
from coordinator.core.shares import (
    HeldShare,
    OrderDue,
    ShareCode,
    ShareKind,
    ShareSpec,
    claim_share,
    line_amounts,
    part_amount,
)

NOW = 1_700_000_000_000
LIVE = NOW + 15_000
PAST = NOW - 1

D1, D2, D3 = Actor(Role.H5, "d1"), Actor(Role.H5, "d2"), Actor(Role.H5, "d3")
CASHIER, WAITER = Actor(Role.ERP, "A"), Actor(Role.ERP, "B")

#: 3 lines: l1 18.00, l2 68.00 - 5.00 line discount = 63.00, l3 20.00; service charge 10.01 → 111.01
ITEMS = [
    {"line_id": "l1", "qty": 2, "unit_price_cents": 900},
    {"line_id": "l2", "qty": 1, "unit_price_cents": 6800},
    {"line_id": "l3", "qty": 1, "unit_price_cents": 2000},
]
ADJUSTMENTS = [{"kind": "discount", "amount_cents": -500, "line_id": "l2"},
               {"kind": "service_charge", "amount_cents": 1001}]
ORDER = OrderDue(total_cents=11101, version=3, lines=line_amounts(ITEMS, ADJUSTMENTS))


def lines(*ids: str) -> ShareSpec:
    """A share of the given lines."""
    return ShareSpec(ShareKind.LINES, line_ids=ids)


def parts(n: int, k: int) -> ShareSpec:
    """Part k of n equal parts."""
    return ShareSpec(ShareKind.PARTS, parts=n, part=k)


def amount(cents: int) -> ShareSpec:
    """A share of a given amount."""
    return ShareSpec(ShareKind.AMOUNT, amount_cents=cents)


REST = ShareSpec(ShareKind.REST)


def claimed(spec: ShareSpec, cents: int, holder: Actor = D2, *, expires_at: int = LIVE) -> HeldShare:
    """A share claimed under a payment lock (live unless told otherwise)."""
    return HeldShare(spec, cents, holder, expires_at)


def paid(spec: ShareSpec, cents: int, holder: Actor = D2) -> HeldShare:
    """A share already paid (its lock is gone; it counts forever)."""
    return HeldShare(spec, cents, holder, 0, paid=True)


def lock(kind: Kind, holder: Actor, *, expires_at: int = LIVE) -> HeldLock:
    """An edit-slot or whole-order payment lock."""
    return HeldLock(kind, holder, expires_at)


OK = "ok"

#: (id, actor, spec, locks, shares, expected_version, outcome: OK with amount | code)
ROWS = [
    ("lines-free", D1, lines("l1"), [], [], None, (OK, 1800)),
    ("lines-own-adjustment-goes-with-line", D1, lines("l2"), [], [], None, (OK, 6300)),
    ("lines-two", D1, lines("l1", "l3"), [], [], None, (OK, 3800)),
    ("lines-taken-by-live-claim", D1, lines("l1"), [], [claimed(lines("l1", "l3"), 3800)], None, ShareCode.TAKEN),
    ("lines-taken-by-paid-share", D1, lines("l3"), [], [paid(lines("l3"), 2000)], None, ShareCode.TAKEN),
    ("lines-free-again-after-claim-lapsed", D1, lines("l1"), [],
     [claimed(lines("l1"), 1800, expires_at=NOW)], None, (OK, 1800)),
    ("lines-disjoint-coexist", D1, lines("l2"), [], [claimed(lines("l1"), 1800)], None, (OK, 6300)),
    ("lines-unknown", D1, lines("l9"), [], [], None, ShareCode.INVALID),
    ("lines-repeated", D1, lines("l1", "l1"), [], [], None, ShareCode.INVALID),
    ("lines-empty", D1, lines(), [], [], None, ShareCode.INVALID),
    ("parts-first", D1, parts(4, 1), [], [], None, (OK, 2775)),
    ("parts-last-takes-rounding", D1, parts(4, 4), [], [], None, (OK, 11101 - 3 * 2775)),
    ("parts-same-part-taken", D1, parts(4, 2), [], [claimed(parts(4, 2), 2775)], None, ShareCode.TAKEN),
    ("parts-other-n-refused", D1, parts(3, 1), [], [paid(parts(4, 1), 2775)], None, ShareCode.TAKEN),
    ("parts-other-part-coexists", D1, parts(4, 3), [], [claimed(parts(4, 1), 2775), paid(parts(4, 2), 2775, D3)],
     None, (OK, 2775)),
    ("parts-out-of-range", D1, parts(4, 5), [], [], None, ShareCode.INVALID),
    ("parts-one-is-not-a-split", D1, parts(1, 1), [], [], None, ShareCode.INVALID),
    ("amount-fits", D1, amount(5000), [], [paid(lines("l1"), 1800)], None, (OK, 5000)),
    ("amount-exactly-what-remains", D1, amount(11101 - 1800), [], [paid(lines("l1"), 1800)], None, (OK, 9301)),
    ("amount-above-what-remains", D1, amount(9302), [], [paid(lines("l1"), 1800)], None, ShareCode.EXCEEDS),
    ("amount-zero", D1, amount(0), [], [], None, ShareCode.INVALID),
    ("rest-is-what-remains", CASHIER, REST, [], [paid(lines("l1"), 1800), claimed(parts(4, 1), 2775)], None,
     (OK, 11101 - 1800 - 2775)),
    ("rest-when-nothing-remains", CASHIER, REST, [], [claimed(amount(11101), 11101)], None, ShareCode.EXCEEDS),
    ("lines-above-what-remains", D1, lines("l2"), [], [claimed(amount(5000), 5000)], None, ShareCode.EXCEEDS),
    ("whole-payment-excludes-shares", D1, lines("l1"), [lock(Kind.PAYMENT, CASHIER)], [], None,
     ShareCode.PAYMENT_LOCKED),
    ("whole-payment-expired-does-not", D1, lines("l1"), [lock(Kind.PAYMENT, CASHIER, expires_at=NOW)], [], None,
     (OK, 1800)),
    ("order-lock-of-another-blocks", D1, lines("l1"), [lock(Kind.ORDER, WAITER)], [], None, ShareCode.ORDER_LOCKED),
    ("order-lock-of-another-blocks-erp", CASHIER, REST, [lock(Kind.ORDER, WAITER)], [], None,
     ShareCode.ORDER_LOCKED),
    ("own-order-lock-does-not-block", WAITER, REST, [lock(Kind.ORDER, WAITER)], [], None, (OK, 11101)),
    ("presettle-allows", D1, lines("l1"), [lock(Kind.PRESETTLE, WAITER)], [], None, (OK, 1800)),
    ("stale-version", D1, lines("l1"), [], [], 2, ShareCode.STALE_VERSION),
    ("current-version", D1, lines("l1"), [], [], 3, (OK, 1800)),
    ("own-live-share-handed-back", D1, lines("l3"), [], [claimed(lines("l1"), 1800, D1)], None, (OK, 1800)),
    ("own-paid-share-does-not-count-as-held", D1, lines("l3"), [], [paid(lines("l1"), 1800, D1)], None,
     (OK, 2000)),
]


@pytest.mark.parametrize(("actor", "spec", "locks", "shares", "expected_version", "outcome"),
                         [pytest.param(*row[1:], id=row[0]) for row in ROWS])
def test_claim_share(actor, spec, locks, shares, expected_version, outcome):
    """Each row: the share claim is granted with its amount, or refused with its code."""
    decision = claim_share(ORDER, spec, actor, locks=locks, shares=shares, now=NOW,
                           expected_version=expected_version)
    if isinstance(outcome, tuple):
        assert (decision.allowed, decision.amount_cents, decision.code) == (True, outcome[1], None)
    else:
        assert (decision.allowed, decision.code) == (False, outcome)


def test_own_live_share_is_reused_not_duplicated():
    """The actor's own live share comes back as ``reuse`` (one live share per payer and order)."""
    mine = claimed(lines("l1"), 1800, D1)
    decision = claim_share(ORDER, lines("l1"), D1, locks=[], shares=[mine], now=NOW)
    assert decision.reuse == mine


@pytest.mark.parametrize(("total", "n"), [(10000, 3), (1, 2), (11101, 4), (99, 50), (0, 2), (7, 7)])
def test_equal_parts_add_up_to_the_total(total, n):
    """N equal parts sum to the total exactly; only the last differs, by less than N cents."""
    amounts = [part_amount(total, n, k) for k in range(1, n + 1)]
    assert sum(amounts) == total and set(amounts[:-1]) <= {total // n} and 0 <= amounts[-1] - amounts[0] < n


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["lines", "parts", "amount", "rest"]),
                          st.integers(1, 4), st.integers(1, 6000), st.sampled_from([D1, D2, D3, CASHIER])),
                max_size=12))
def test_granted_shares_never_overlap_nor_exceed_the_total(claims):
    """Invariant 10: whatever sequence of claims is granted, lines and parts are disjoint and the sum <= total."""
    held: list[HeldShare] = []
    for kind, k, cents, actor in claims:
        spec = {"lines": lines(f"l{min(k, 3)}"), "parts": parts(4, k), "amount": amount(cents), "rest": REST}[kind]
        decision = claim_share(ORDER, spec, Actor(actor.role, f"{actor.id}-{len(held)}"), locks=[], shares=held,
                               now=NOW)
        if decision.allowed and decision.reuse is None:
            held.append(paid(spec, decision.amount_cents))
    assert sum(s.amount_cents for s in held) <= ORDER.total_cents
    taken = [line for s in held if s.spec.kind is ShareKind.LINES for line in s.spec.line_ids]
    assert len(taken) == len(set(taken))
    taken_parts = [s.spec.part for s in held if s.spec.kind is ShareKind.PARTS]
    assert len(taken_parts) == len(set(taken_parts))


def test_own_order_lock_is_converted_into_the_share_lock():
    """An ERP terminal claiming a share while holding its own order lock ends that lock (converted)."""
    own = lock(Kind.ORDER, WAITER)
    decision = claim_share(ORDER, REST, WAITER, locks=[own], shares=[], now=NOW)
    assert decision.allowed and decision.converts == own
