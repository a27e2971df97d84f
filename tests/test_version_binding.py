"""Version binding in the pure rules (``rules.decide`` with ``version`` / ``expected_version``), row by row.

The twin of acquire.lua's re-binding: a holder asking again for the lock it holds gets it back
(same, older or no version), STALE_VERSION (the order moved past what it saw), or a fresh lock
bound to the newer version it pulled (the old one released first). acquire.lua is compared
against this in test_lua_agrees_with_rules.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from coordinator.core.rules import (
    Action,
    Actor,
    Code,
    Decision,
    HeldLock,
    Kind,
    Role,
    decide,
)

NOW = 1_700_000_000_000
LIVE = NOW + 60_000
STORED = 5                    # the order's stored version in every row

A = Actor(Role.ERP, "A")
B = Actor(Role.ERP, "B")
H = Actor(Role.H5, "h1")


def lock(kind: Kind, holder: Actor, bound: int | None, *, completing: bool = False) -> HeldLock:
    """A live lock of ``kind`` held by ``holder``, bound to order version ``bound``."""
    return HeldLock(kind, holder, LIVE, completing, bound)


OWN_PAY = lock(Kind.PAYMENT, H, STORED)
OWN_PAY_OLD = lock(Kind.PAYMENT, H, STORED - 1)
OWN_PAY_NEW = lock(Kind.PAYMENT, H, STORED + 1)
OWN_PAY_OLD_COMPLETING = lock(Kind.PAYMENT, H, STORED - 1, completing=True)
OWN_PAY_UNBOUND = lock(Kind.PAYMENT, H, None)
OWN_PRESETTLE_OLD = lock(Kind.PRESETTLE, A, STORED - 1)


@dataclass(frozen=True)
class Row:
    """Who holds what, who asks what with which expected_version, and what must come of it."""

    locks: tuple[HeldLock, ...]
    actor: Actor
    action: Action
    expected: int | None
    outcome: str              # "new" | "own" | "rebind" | a denial code
    bound: int | None = None  # the version a new lock binds to
    force: bool = False
    enforced: bool = True


ROWS = {
    # no lock held: a new lock binds to what the asker saw, or the stored version
    "free|no version→new@5": Row((), H, Action.PAY, None, "new", STORED),
    "free|equal→new@5": Row((), H, Action.PAY, STORED, "new", STORED),
    "free|older→stale": Row((), H, Action.PAY, STORED - 1, Code.STALE_VERSION),
    "free|newer→new@6": Row((), H, Action.PAY, STORED + 1, "new", STORED + 1),
    # own lock bound to the stored version
    "own@5|no version→own": Row((OWN_PAY,), H, Action.PAY, None, "own"),
    "own@5|equal→own": Row((OWN_PAY,), H, Action.PAY, STORED, "own"),
    "own@5|older→stale": Row((OWN_PAY,), H, Action.PAY, STORED - 1, Code.STALE_VERSION),
    "own@5|newer→rebind@6": Row((OWN_PAY,), H, Action.PAY, STORED + 1, "rebind", STORED + 1),
    # own lock bound to an older version than stored (the ERP changed the order meanwhile)
    "own@4|no version→own": Row((OWN_PAY_OLD,), H, Action.PAY, None, "own"),
    "own@4|equal to stored→rebind@5": Row((OWN_PAY_OLD,), H, Action.PAY, STORED, "rebind", STORED),
    "own@4|equal to lock→stale": Row((OWN_PAY_OLD,), H, Action.PAY, STORED - 1, Code.STALE_VERSION),
    "own@4 completing|newer→own": Row((OWN_PAY_OLD_COMPLETING,), H, Action.PAY, STORED, "own"),
    # own lock bound to a newer version than stored (granted before the ERP's push arrived)
    "own@6|equal to stored→own": Row((OWN_PAY_NEW,), H, Action.PAY, STORED, "own"),
    "own unbound|newer→own": Row((OWN_PAY_UNBOUND,), H, Action.PAY, STORED + 1, "own"),
    # presettle re-binds the same way
    "own presettle@4|equal→rebind@5": Row((OWN_PRESETTLE_OLD,), A, Action.PRESETTLE, STORED, "rebind", STORED),
    # a conflict is reported before staleness; staleness is checked before anything is broken
    "other's payment|older→PAYMENT_LOCKED": Row(
        (lock(Kind.PAYMENT, B, STORED),), A, Action.PAY, STORED - 1, Code.PAYMENT_LOCKED),
    "other's payment forced|older→stale": Row(
        (lock(Kind.PAYMENT, B, STORED),), A, Action.PAY, STORED - 1, Code.STALE_VERSION, force=True),
    # legacy mode checks no version; the lock still says which one it was granted for
    "legacy|older→new@4": Row((), A, Action.PAY, STORED - 1, "new", STORED - 1, enforced=False),
}


def run(row: Row) -> Decision:
    """decide() for ``row`` at NOW, the order at STORED."""
    return decide(row.locks, row.actor, row.action, now=NOW, force=row.force, enforced=row.enforced,
                  version=STORED, expected_version=row.expected)


@pytest.mark.parametrize("row", ROWS.values(), ids=ROWS.keys())
def test_version_binding_row(row: Row) -> None:
    """Each row gives its lock back, re-binds it, grants a new one bound as shown, or refuses with its code."""
    d = run(row)
    if isinstance(row.outcome, Code):
        assert not d.allowed and d.code is row.outcome
        assert d.rebinds is None and d.breaks == () and d.converts is None
        return
    assert d.allowed and d.code is None
    if row.outcome == "own":
        assert d.reuse is row.locks[0] and d.rebinds is None
        return
    assert d.reuse is None and d.version == row.bound
    assert d.rebinds is (row.locks[0] if row.outcome == "rebind" else None)


def test_rebinding_is_not_done_when_the_new_grant_is_denied() -> None:
    """An own lock to re-bind stays when another's lock denies the new one: a denial changes nothing."""
    mine, theirs = lock(Kind.PAYMENT, A, STORED - 1), lock(Kind.ORDER, B, STORED)
    d = decide([theirs, mine], A, Action.PAY, now=NOW, version=STORED, expected_version=STORED)
    assert not d.allowed and d.code is Code.ORDER_LOCKED and d.rebinds is None and d.reported is theirs


def test_rebinding_comes_with_conversion_of_an_own_order_lock() -> None:
    """Re-binding a payment lock also converts the holder's own order lock, both ended before the grant."""
    order, pay = lock(Kind.ORDER, A, STORED), lock(Kind.PAYMENT, A, STORED - 1)
    d = decide([order, pay], A, Action.PAY, now=NOW, version=STORED, expected_version=STORED)
    assert d.allowed and d.rebinds is pay and d.converts is order and d.version == STORED


def test_without_versions_nothing_is_stale_or_rebound() -> None:
    """decide() called without versions (the board's check) never says STALE_VERSION nor re-binds."""
    d = decide([OWN_PAY_OLD], H, Action.PAY, now=NOW)
    assert d.allowed and d.reuse is OWN_PAY_OLD
    assert decide([], H, Action.PAY, now=NOW).version is None
