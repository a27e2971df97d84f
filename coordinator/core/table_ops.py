"""SPEC §11 as one pure function: may an ERP terminal move or merge these orders now?

``decide_table_op(orders, actor, now=, force=)`` looks at every order the operation touches (the
moved order; or the merge's target and sources) and says: allowed (taking an ``order`` lock on each,
or keeping the asker's own), or denied with a code and ``force_allowed``; when forced, the locks to
break and the refund tasks to open. It is the twin of ``store/lua/table_op.lua`` (op ``begin``),
tested against it over generated cases (``tests/test_table_op_rules.py``).

Per order, the first of:
1. money in flight — the whole-order ``payment`` lock in phase ``in_flight`` or ``completing`` (or
   marked ``completing``): ``PAYMENT_IN_FLIGHT``; forcing is allowed for ERP unless completing (the
   ERP is confirming that money: nothing may break it), and opens a refund task (``payment_in_flight``);
2. a split-bill share's payment lock with money in flight (phase ``in_flight`` / ``completing`` or
   marked ``completing``): ``PAYMENT_IN_FLIGHT``, never forceable — a diner's share is paid or
   fails on its own, the operation waits for it (the first such share by fence is reported);
3. a share paid (split bill: ``paid_cents > 0``): ``SHARE_PAID``; forcing opens a refund task
   (``share_paid``) for what was paid;
4. SPEC §2's ``modify`` rules (``rules.decide``) over every lock, share locks included (a claimed
   share is a payment lock): ``ORDER_LOCKED`` / ``PRESETTLED`` / ``PAYMENT_LOCKED``, force for ERP
   (forced, each claimed share lock is broken like any payment lock).
The first denied order (in the order given) is the one reported; ``force_allowed`` is true only if
every denial may be forced. H5 sessions may not move or merge (``FORBIDDEN``).
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.core.rules import Action, Actor, Code, HeldLock, Kind, Role, decide

#: Payment phases (docs/protocol.md C2) in which money is on its way: a move would strand it.
MONEY_PHASES = frozenset({"in_flight", "completing"})


@dataclass(frozen=True)
class ShareHold:
    """A split-bill share's payment lock (SPEC §10) and its payment phase (None / ``claimed`` / ``in_flight`` / ``completing``)."""

    lock: HeldLock
    phase: str | None = None


@dataclass(frozen=True)
class OrderState:
    """What the rule looks at of one order: its locks, the payment lock's phase, the shares paid."""

    order_id: str
    locks: tuple[HeldLock, ...]
    #: Phase of the payment lock (``claimed`` | ``in_flight`` | ``completing``), None when it has none.
    payment_phase: str | None = None
    #: Split bill: cents already paid on shares of this order (SPEC §10).
    paid_cents: int = 0
    #: Split bill: the order's share payment locks (slots ``share:<fence>``), by fence ascending.
    shares: tuple[ShareHold, ...] = ()


@dataclass(frozen=True)
class TableOpDecision:
    """The outcome: allowed (with what forcing breaks and the refunds it opens) or denied."""

    allowed: bool
    code: str | None = None
    force_allowed: bool = False
    order_id: str | None = None
    reported: HeldLock | None = None
    #: (order_id, lock) to end with lock.forced, in order then REPORT_ORDER.
    breaks: tuple[tuple[str, HeldLock], ...] = ()
    #: (order_id, reason): refund tasks opened by forcing (payment_in_flight | share_paid).
    refunds: tuple[tuple[str, str], ...] = ()
    #: Orders on which the asker already holds the ``order`` lock (kept, not re-taken).
    reuse: tuple[str, ...] = ()


def _money(lock: HeldLock, phase: str | None) -> tuple[bool, bool]:
    """(money in flight, completing) for a live payment lock."""
    completing = lock.completing or phase == "completing"
    return completing or phase in MONEY_PHASES, completing


def _one(order: OrderState, actor: Actor, now: int, force: bool) -> tuple[tuple | None, TableOpDecision]:
    """(denial (code, force_allowed, lock) or None, the per-order grant with breaks/refunds/reuse)."""
    live = [lock for lock in (*order.locks, *(s.lock for s in order.shares)) if lock.live(now)]
    pay = next((lock for lock in live if lock.kind is Kind.PAYMENT and not lock.share), None)
    share_money = next((s.lock for s in order.shares if s.lock.live(now) and _money(s.lock, s.phase)[0]), None)
    erp = actor.role is Role.ERP
    refunds: list[tuple[str, str]] = []
    denial = None
    if pay is not None and _money(pay, order.payment_phase)[0]:
        completing = _money(pay, order.payment_phase)[1]
        denial = ("PAYMENT_IN_FLIGHT", erp and not completing, pay)
        refunds.append((order.order_id, "payment_in_flight"))
    elif share_money is not None:
        denial = ("PAYMENT_IN_FLIGHT", False, share_money)
    elif order.paid_cents > 0:
        denial = ("SHARE_PAID", erp, None)
    if order.paid_cents > 0:
        refunds.append((order.order_id, "share_paid"))
    # The asker's own order lock is kept (it edits the order it moves); the rest meet SPEC §2's
    # modify rules as a new order lock would.
    mine = [lock for lock in live if lock.kind is Kind.ORDER and lock.holder == actor]
    others = [lock for lock in live if lock not in mine]
    modify = decide(others, actor, Action.MODIFY, now=now)
    if denial is None and not modify.allowed:
        denial = (str(modify.code), modify.force_allowed, modify.reported)
    if force:
        modify = decide(others, actor, Action.MODIFY, now=now, force=True)
    # Forced, modify breaks every conflicting lock (the in-flight payment's too); it refuses even
    # forced only under a completing lock, which is then a PAYMENT_IN_FLIGHT that cannot be forced.
    breaks = tuple((order.order_id, lock) for lock in modify.breaks)
    reuse = (order.order_id,) if mine else ()
    return denial, TableOpDecision(True, breaks=breaks, refunds=tuple(refunds) if force else (), reuse=reuse)


def decide_table_op(orders: list[OrderState], actor: Actor, *, now: int, force: bool = False,
                    enforced: bool = True) -> TableOpDecision:
    """Decide a move or merge of ``orders`` by ``actor`` at ``now`` (see the module docstring).

    ``enforced`` false (legacy mode, SPEC §2 "Feature switch"): locks neither refuse nor are taken;
    a paid share still refuses (money, not a lock).
    """
    if actor.role is not Role.ERP:
        return TableOpDecision(False, code=Code.FORBIDDEN.value)
    if not enforced:
        orders = [OrderState(o.order_id, (), None, o.paid_cents) for o in orders]  # legacy mode stores no share lock
    denials = []
    grants = []
    for order in orders:
        denial, grant = _one(order, actor, now, force)
        if denial is not None:
            denials.append((order.order_id, *denial))
        grants.append(grant)
    if denials:
        forceable = all(d[2] for d in denials)
        if not (force and forceable):
            order_id, code, _, lock = denials[0]
            return TableOpDecision(False, code=code, force_allowed=forceable, order_id=order_id, reported=lock)
    return TableOpDecision(
        True,
        breaks=tuple(b for g in grants for b in g.breaks),
        refunds=tuple(r for g in grants for r in g.refunds),
        reuse=tuple(o for g in grants for o in g.reuse),
    )
