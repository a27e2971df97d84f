"""The pure lock rules (coordinator/rules.py) against SPEC §2, cell by cell, with literal data."""

from __future__ import annotations

import re
from typing import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.core.rules import (
    ACTION_KIND,
    CONFLICTS,
    H5_ACTIONS,
    REPORT_ORDER,
    SLOT,
    Action,
    Actor,
    Code,
    Decision,
    HeldLock,
    Kind,
    Role,
    decide,
    lua_rules_table,
)

NOW = 1_700_000_000_000
LIVE = NOW + 60_000
PAST = NOW - 60_000

A = Actor(Role.ERP, "A")      # the ERP terminal asking, in most tests
B = Actor(Role.ERP, "B")      # another ERP terminal
H = Actor(Role.H5, "h1")      # an H5 session
H2 = Actor(Role.H5, "h2")     # another H5 session


def held(kind: Kind, holder: Actor, *, expires_at: int = LIVE, completing: bool = False) -> HeldLock:
    """A lock of ``kind`` held by ``holder``, live unless told otherwise."""
    return HeldLock(kind, holder, expires_at, completing)


def run(locks: list[HeldLock], actor: Actor, action: Action, **kw: object) -> Decision:
    """decide() at NOW."""
    return decide(locks, actor, action, now=NOW, **kw)  # type: ignore[arg-type]


# --- SPEC §2 table, every cell --------------------------------------------------------------

ALLOW, OWN = "allow", "own"   # OWN: allowed by handing back the lock the actor already holds
OL, PL, PS = Code.ORDER_LOCKED, Code.PAYMENT_LOCKED, Code.PRESETTLED

#: The table's columns, for an actor ``me``: the locks the order holds.
COLUMNS: dict[str, Callable[[Actor], list[HeldLock]]] = {
    "free": lambda me: [],
    "order-by-other": lambda me: [held(Kind.ORDER, B if me != B else A)],
    "presettle-by-other": lambda me: [held(Kind.PRESETTLE, B)],
    "presettle-by-self": lambda me: [held(Kind.PRESETTLE, me)],
    "payment-by-other-erp": lambda me: [held(Kind.PAYMENT, B)],
    "payment-by-other-h5": lambda me: [held(Kind.PAYMENT, H2 if me == H else H)],
    "payment-by-self": lambda me: [held(Kind.PAYMENT, me)],
}

#: SPEC §2 as an ERP terminal meets it. "Own locks" turns two deny cells into a hand-back.
ERP_TABLE: dict[Action, tuple[object, ...]] = {
    #                     free   order  pres-o pres-s pay-e pay-h5 pay-s
    Action.ADD_ITEMS:    (ALLOW, ALLOW, PS,    PS,    PL,   PL,    PL),
    Action.ACCEPT_ITEMS: (ALLOW, ALLOW, PS,    PS,    PL,   PL,    PL),
    Action.MODIFY:       (ALLOW, OL,    PS,    PS,    PL,   PL,    PL),
    Action.PRESETTLE:    (ALLOW, OL,    PS,    OWN,   PL,   PL,    PL),
    Action.PAY:          (ALLOW, OL,    ALLOW, ALLOW, PL,   PL,    OWN),
}

#: SPEC §2 as an H5 session meets it (it may only add dishes and pay; it never holds an edit lock).
H5_COLUMNS = ("free", "order-by-other", "presettle-by-other", "payment-by-other-erp",
              "payment-by-other-h5", "payment-by-self")
H5_TABLE: dict[Action, tuple[object, ...]] = {
    #                  free   order  pres-o pay-e pay-h5 pay-s
    Action.ADD_ITEMS: (ALLOW, ALLOW, PS,    PL,   PL,    PL),
    Action.PAY:       (ALLOW, OL,    ALLOW, PL,   PL,    OWN),
}


def _cells(who: str, actor: Actor, table: dict[Action, tuple[object, ...]], columns: tuple[str, ...]):
    for action, row in table.items():
        for column, expected in zip(columns, row, strict=True):
            outcome = {ALLOW: "allow", OWN: "allow (own lock back)"}.get(expected, f"deny {expected}")
            yield pytest.param(actor, action, column, expected, id=f"{who}{action}|{column}→{outcome}")


TABLE_CELLS = [
    *_cells("", A, ERP_TABLE, tuple(COLUMNS)),
    *_cells("h5:", H, H5_TABLE, H5_COLUMNS),
]


@pytest.mark.parametrize(("actor", "action", "column", "expected"), TABLE_CELLS)
def test_spec_table_cell(actor: Actor, action: Action, column: str, expected: object) -> None:
    """Each cell of the SPEC §2 table gives its allow/deny and code; only ERP denials may be forced."""
    locks = COLUMNS[column](actor)
    d = run(locks, actor, action)
    assert d.kind is ACTION_KIND.get(action)
    if expected in (ALLOW, OWN):
        assert d.allowed and d.code is None and d.breaks == () and d.converts is None
        assert d.reuse == (locks[0] if expected == OWN else None)
    else:
        assert not d.allowed
        assert d.code is expected
        assert d.reported == locks[0]
        assert d.force_allowed is (actor.role is Role.ERP)


def test_table_covers_every_action_and_column() -> None:
    """The ERP table above has a row for every action and a cell for every column."""
    assert set(ERP_TABLE) == set(Action)
    assert all(len(row) == len(COLUMNS) for row in ERP_TABLE.values())
    assert set(H5_TABLE) == set(H5_ACTIONS)


# --- own locks ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(Kind), ids=str)
def test_own_lock_is_handed_back_unchanged(kind: Kind) -> None:
    """Asking again for a lock one holds returns that very lock: nothing converted or broken."""
    action = next(a for a, k in ACTION_KIND.items() if k is kind)
    mine = held(kind, A)
    d = run([mine], A, action)
    assert d.allowed and d.reuse is mine and d.converts is None and d.breaks == ()


@pytest.mark.parametrize("action", [Action.PAY, Action.PRESETTLE], ids=str)
def test_own_order_lock_converts(action: Action) -> None:
    """An ERP terminal holding the order lock may pay or presettle: its order lock is converted."""
    mine = held(Kind.ORDER, A)
    d = run([mine], A, action)
    assert d.allowed and d.kind is ACTION_KIND[action]
    assert d.converts is mine and d.reuse is None and d.breaks == ()


@pytest.mark.parametrize("action", [Action.ADD_ITEMS, Action.ACCEPT_ITEMS], ids=str)
def test_own_order_lock_does_not_block_own_edits(action: Action) -> None:
    """The order lock's holder may add or accept dishes (it is the one editing)."""
    d = run([held(Kind.ORDER, A)], A, action)
    assert d.allowed and d.converts is None


def test_expired_own_order_lock_is_not_converted() -> None:
    """An own order lock past expiry is reaped, not converted."""
    stale = held(Kind.ORDER, A, expires_at=PAST)
    d = run([stale], A, Action.PAY)
    assert d.allowed and d.converts is None and d.expired == (stale,)


@pytest.mark.parametrize("action", [Action.ADD_ITEMS, Action.ACCEPT_ITEMS, Action.MODIFY], ids=str)
@pytest.mark.parametrize("kind", [Kind.PAYMENT, Kind.PRESETTLE], ids=str)
def test_the_holder_included(kind: Kind, action: Action) -> None:
    """While a payment or presettle lock is held its own holder cannot change the order either."""
    d = run([held(kind, A)], A, action)
    assert not d.allowed
    assert d.code is (Code.PAYMENT_LOCKED if kind is Kind.PAYMENT else Code.PRESETTLED)


# --- force ----------------------------------------------------------------------------------


def test_force_breaks_exactly_the_conflicting_locks() -> None:
    """pay with force breaks the other payment lock but keeps the presettle lock it coexists with."""
    presettle, payment = held(Kind.PRESETTLE, B), held(Kind.PAYMENT, H)
    denied = run([presettle, payment], A, Action.PAY)
    assert not denied.allowed and denied.code is Code.PAYMENT_LOCKED and denied.force_allowed
    d = run([presettle, payment], A, Action.PAY, force=True)
    assert d.allowed and d.kind is Kind.PAYMENT and d.breaks == (payment,)


def test_force_breaks_every_conflict_payment_first() -> None:
    """modify with force breaks both the payment and the presettle lock, in report order."""
    presettle, payment = held(Kind.PRESETTLE, B), held(Kind.PAYMENT, H)
    d = run([presettle, payment], A, Action.MODIFY, force=True)
    assert d.allowed and d.kind is Kind.ORDER and d.breaks == (payment, presettle)


def test_force_on_an_own_order_lock_converts_and_breaks() -> None:
    """An own order lock is converted, never forced, while another's conflicting lock is broken."""
    mine, payment = held(Kind.ORDER, A), held(Kind.PAYMENT, B)
    d = run([mine, payment], A, Action.PRESETTLE, force=True)
    assert d.allowed and d.converts is mine and d.breaks == (payment,)


def test_force_without_conflict_breaks_nothing() -> None:
    """force on a free order is a plain grant."""
    d = run([], A, Action.MODIFY, force=True)
    assert d.allowed and d.breaks == ()


def test_force_does_not_break_expired_locks() -> None:
    """A lock past expiry is reaped, never reported as forced."""
    stale = held(Kind.ORDER, B, expires_at=PAST)
    d = run([stale], A, Action.MODIFY, force=True)
    assert d.allowed and d.breaks == () and d.expired == (stale,)


@pytest.mark.parametrize("action", [Action.ADD_ITEMS, Action.ACCEPT_ITEMS], ids=str)
def test_force_takes_no_lock_for_dish_actions(action: Action) -> None:
    """Adding or accepting dishes takes no lock, so force cannot push them through a payment."""
    d = run([held(Kind.PAYMENT, H)], A, action, force=True)
    assert not d.allowed and d.code is Code.PAYMENT_LOCKED and d.breaks == ()


@pytest.mark.parametrize("action", [Action.PAY, Action.MODIFY, Action.PRESETTLE, Action.ADD_ITEMS], ids=str)
def test_completing_payment_cannot_be_forced(action: Action) -> None:
    """A payment the ERP is confirming refuses force, and says so with force_allowed false."""
    completing = held(Kind.PAYMENT, H, completing=True)
    denied = run([completing], A, action)
    assert not denied.allowed and denied.code is Code.PAYMENT_LOCKED and not denied.force_allowed
    forced = run([completing], A, action, force=True)
    assert not forced.allowed and not forced.force_allowed and forced.breaks == ()


def test_completing_payment_blocks_force_of_other_conflicts_too() -> None:
    """modify meeting a presettle lock and a completing payment is refused whole, nothing broken."""
    locks = [held(Kind.PRESETTLE, B), held(Kind.PAYMENT, H, completing=True)]
    d = run(locks, A, Action.MODIFY, force=True)
    assert not d.allowed and d.code is Code.PAYMENT_LOCKED and not d.force_allowed


def test_completing_payment_does_not_stop_presettle_coexisting() -> None:
    """A completing payment does not conflict with a presettle lock being kept, only with pay."""
    d = run([held(Kind.PRESETTLE, B), held(Kind.PAYMENT, H, completing=True)], A, Action.PAY)
    assert not d.allowed and d.reported == held(Kind.PAYMENT, H, completing=True)


# --- H5 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("column", H5_COLUMNS)
def test_h5_never_gets_force_allowed(column: str) -> None:
    """Every H5 denial carries force_allowed false."""
    for action in H5_ACTIONS:
        d = run(COLUMNS[column](H), H, action)
        assert d.allowed or not d.force_allowed


@pytest.mark.parametrize("column", ["free", "payment-by-other-erp"])
def test_h5_force_is_forbidden(column: str) -> None:
    """force from H5 is FORBIDDEN, whether or not anything conflicts."""
    d = run(COLUMNS[column](H), H, Action.PAY, force=True)
    assert not d.allowed and d.code is Code.FORBIDDEN and not d.force_allowed and d.breaks == ()


@pytest.mark.parametrize("action", [Action.MODIFY, Action.PRESETTLE, Action.ACCEPT_ITEMS], ids=str)
def test_h5_may_not_edit_presettle_or_accept(action: Action) -> None:
    """H5 may hold only payment and may not accept items: anything else is FORBIDDEN."""
    d = run([], H, action)
    assert not d.allowed and d.code is Code.FORBIDDEN and not d.force_allowed


# --- expiry ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("expires_at", "blocks"), [(NOW - 1, False), (NOW, False), (NOW + 1, True)],
                         ids=["now-1", "now", "now+1"])
def test_expiry_is_exact(expires_at: int, blocks: bool) -> None:
    """A lock blocks strictly before expires_at and never at or after it."""
    lock = held(Kind.PAYMENT, B, expires_at=expires_at)
    d = run([lock], A, Action.PAY)
    assert d.allowed is not blocks
    assert d.expired == (() if blocks else (lock,))


def test_expired_locks_are_listed_even_when_denied() -> None:
    """A denial still reports the expired locks, so whoever applies it reaps them."""
    stale, live = held(Kind.ORDER, B, expires_at=PAST), held(Kind.PAYMENT, H)
    d = run([stale, live], A, Action.PAY)
    assert not d.allowed and d.expired == (stale,) and d.reported == live


# --- legacy mode ----------------------------------------------------------------------------


@pytest.mark.parametrize("action", list(Action), ids=str)
def test_legacy_mode_allows_everything(action: Action) -> None:
    """With strong linking off an ERP terminal is allowed anything, whatever is held."""
    locks = [held(Kind.PRESETTLE, B), held(Kind.PAYMENT, H, completing=True)]
    d = run(locks, A, action, enforced=False)
    assert d.allowed and not d.enforced and d.breaks == () and d.reuse is None


def test_legacy_mode_keeps_role_restrictions() -> None:
    """With strong linking off H5 still may not edit, presettle, accept or force."""
    for action in (Action.MODIFY, Action.PRESETTLE, Action.ACCEPT_ITEMS):
        assert run([], H, action, enforced=False).code is Code.FORBIDDEN
    assert run([], H, Action.PAY, force=True, enforced=False).code is Code.FORBIDDEN
    assert run([], H, Action.PAY, enforced=False).allowed


# --- which conflict is reported -------------------------------------------------------------


@pytest.mark.parametrize(
    ("locks", "action", "code"),
    [
        ([held(Kind.PRESETTLE, B), held(Kind.PAYMENT, H)], Action.MODIFY, Code.PAYMENT_LOCKED),
        ([held(Kind.PRESETTLE, B), held(Kind.PAYMENT, H)], Action.ADD_ITEMS, Code.PAYMENT_LOCKED),
        ([held(Kind.PAYMENT, H), held(Kind.PRESETTLE, B)], Action.PRESETTLE, Code.PAYMENT_LOCKED),
        # Not a state the slots allow, but the rules do not assume slots: presettle outranks order.
        ([held(Kind.ORDER, B), held(Kind.PRESETTLE, B)], Action.MODIFY, Code.PRESETTLED),
        ([held(Kind.ORDER, B), held(Kind.PAYMENT, H)], Action.PAY, Code.PAYMENT_LOCKED),
    ],
    ids=["presettle+payment→modify", "presettle+payment→add_items", "payment+presettle→presettle",
         "order+presettle→modify", "order+payment→pay"],
)
def test_report_order(locks: list[HeldLock], action: Action, code: Code) -> None:
    """Of several conflicts the one reported is payment, then presettle, then order."""
    d = run(locks, A, action)
    reported_kind = {Code.PAYMENT_LOCKED: Kind.PAYMENT, Code.PRESETTLED: Kind.PRESETTLE}[code]
    assert not d.allowed and d.code is code
    assert d.reported is next(l for l in locks if l.kind is reported_kind)


# --- granted decisions keep the invariants (SPEC §3.1, §3.2) --------------------------------

ACTORS = [A, B, H, H2]


@st.composite
def slot_states(draw: st.DrawFn) -> list[HeldLock]:
    """A state the slots allow: one edit lock (ERP only), one payment lock, some expired."""
    expiry = st.sampled_from([PAST, NOW, NOW + 1, LIVE])
    locks = []
    edit = draw(st.sampled_from([None, Kind.ORDER, Kind.PRESETTLE]))
    if edit:
        locks.append(held(edit, draw(st.sampled_from([A, B])), expires_at=draw(expiry)))
    if draw(st.booleans()):
        locks.append(held(Kind.PAYMENT, draw(st.sampled_from(ACTORS)), expires_at=draw(expiry),
                          completing=draw(st.booleans())))
    live = [l for l in locks if l.live(NOW)]
    if {l.kind for l in live} == {Kind.ORDER, Kind.PAYMENT}:
        locks.remove(next(l for l in locks if l.kind is Kind.ORDER))   # SPEC §3.2
    return locks


def apply(locks: list[HeldLock], actor: Actor, d: Decision) -> list[HeldLock]:
    """The live locks after a granted decision is carried out."""
    ended = {id(l) for l in (*d.expired, *d.breaks, *(l for l in (d.converts, d.rebinds) if l))}
    after = [l for l in locks if id(l) not in ended]
    if d.kind is not None and d.reuse is None:
        after.append(held(d.kind, actor))
    return after


@settings(max_examples=500, deadline=None, database=None)
@given(slot_states(), st.sampled_from(ACTORS), st.sampled_from(list(Action)), st.booleans())
def test_granted_decisions_keep_the_slot_invariants(
    locks: list[HeldLock], actor: Actor, action: Action, force: bool
) -> None:
    """Whatever is granted leaves one lock per slot, never payment beside order, H5 only paying."""
    d = run(locks, actor, action, force=force)
    if not d.allowed:
        assert d.code is not None and d.breaks == () and d.converts is None and d.reuse is None
        forcible = d.code is not Code.FORBIDDEN and not d.reported.completing
        assert d.force_allowed is (actor.role is Role.ERP and forcible)
        return
    after = apply(locks, actor, d)
    slots = [SLOT[l.kind] for l in after]
    assert len(slots) == len(set(slots)), after
    assert not {Kind.ORDER, Kind.PAYMENT} <= {l.kind for l in after}, after
    assert all(l.holder.role is Role.ERP for l in after if l.kind is not Kind.PAYMENT)
    assert all(not l.completing for l in d.breaks)


# --- the Lua copy of the table --------------------------------------------------------------

_LUA_CELL = re.compile(r'\["(\w+)"\] = ("(\w+)"|false|true)')


def _lua_assignments(source: str) -> dict[str, str]:
    """``local NAME = {...}`` → the text between the braces, for each table in ``source``."""
    return dict(re.findall(r"local (\w+) = \{(.*?)\}\s*$", source, re.M | re.S))


def test_lua_rules_table_renders_every_conflicts_cell() -> None:
    """The Lua table generated for acquire.lua holds exactly CONFLICTS, cell by cell."""
    rows = re.findall(r'^  \["(\w+)"\] = \{(.*)\},$', lua_rules_table(), re.M)
    rendered = {
        Action(action): {Kind(k): (Code(code) if code else None) for k, _, code in _LUA_CELL.findall(cells)}
        for action, cells in rows
    }
    assert rendered == CONFLICTS
    assert sum(len(cells) for cells in rendered.values()) == len(Action) * len(Kind)


def test_lua_rules_table_renders_kinds_slots_report_order_and_h5() -> None:
    """ACTION_KIND, SLOT, REPORT_ORDER and the H5 actions reach the Lua unchanged."""
    source = lua_rules_table()
    tables = _lua_assignments(source)

    def pairs(name: str) -> dict[str, str]:
        return {k: v.strip('"') for k, v, _ in _LUA_CELL.findall(tables[name])}

    assert pairs("ACTION_KIND") == {a.value: k.value for a, k in ACTION_KIND.items()}
    assert pairs("SLOT") == {k.value: s for k, s in SLOT.items()}
    assert pairs("H5_ACTIONS") == {a.value: "true" for a in H5_ACTIONS}
    assert re.findall(r'"(\w+)"', tables["REPORT_ORDER"]) == [k.value for k in REPORT_ORDER]
