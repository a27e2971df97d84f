"""The lock rules of SPEC §2 as one pure function.

``decide(locks, actor, action, now=...)`` looks at the locks an order holds and says whether
``actor`` may do ``action``: granted (possibly reusing or converting its own lock, possibly
breaking others' locks when forcing) or denied with a SPEC code and ``force_allowed``.

No I/O and no clock: ``now`` is passed in (Redis server time, Unix ms). The Lua scripts apply
the same rules atomically; their conflict table is *generated* from ``CONFLICTS`` below
(see ``lua_rules_table``) and a property test runs both over generated cases.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Iterable


class Kind(StrEnum):
    """A lock kind."""

    ORDER = "order"
    PRESETTLE = "presettle"
    PAYMENT = "payment"


class Action(StrEnum):
    """Something a client wants to do to an order."""

    ADD_ITEMS = "add_items"
    ACCEPT_ITEMS = "accept_items"
    MODIFY = "modify"
    PRESETTLE = "presettle"
    PAY = "pay"


class Role(StrEnum):
    """Who asks: an ERP terminal or an H5 session."""

    ERP = "erp"
    H5 = "h5"


class Code(StrEnum):
    """Denial codes of the rules (SPEC §5)."""

    ORDER_LOCKED = "ORDER_LOCKED"
    PAYMENT_LOCKED = "PAYMENT_LOCKED"
    PRESETTLED = "PRESETTLED"
    FORBIDDEN = "FORBIDDEN"
    STALE_VERSION = "STALE_VERSION"


#: The lock an action takes, if any.
ACTION_KIND: dict[Action, Kind] = {
    Action.MODIFY: Kind.ORDER,
    Action.PRESETTLE: Kind.PRESETTLE,
    Action.PAY: Kind.PAYMENT,
}

#: Which slot each kind lives in: ``order`` and ``presettle`` share the edit slot.
SLOT: dict[Kind, str] = {Kind.ORDER: "edit", Kind.PRESETTLE: "edit", Kind.PAYMENT: "pay"}

#: SPEC §2 table: the code an action meets when ``kind`` is held. ``None`` = allowed.
#: An ``order`` lock only counts when another client holds it; ``presettle`` and ``payment``
#: count whoever holds them ("the holder included").
CONFLICTS: dict[Action, dict[Kind, Code | None]] = {
    Action.ADD_ITEMS: {Kind.ORDER: None, Kind.PRESETTLE: Code.PRESETTLED, Kind.PAYMENT: Code.PAYMENT_LOCKED},
    Action.ACCEPT_ITEMS: {Kind.ORDER: None, Kind.PRESETTLE: Code.PRESETTLED, Kind.PAYMENT: Code.PAYMENT_LOCKED},
    Action.MODIFY: {Kind.ORDER: Code.ORDER_LOCKED, Kind.PRESETTLE: Code.PRESETTLED, Kind.PAYMENT: Code.PAYMENT_LOCKED},
    Action.PRESETTLE: {Kind.ORDER: Code.ORDER_LOCKED, Kind.PRESETTLE: Code.PRESETTLED, Kind.PAYMENT: Code.PAYMENT_LOCKED},
    Action.PAY: {Kind.ORDER: Code.ORDER_LOCKED, Kind.PRESETTLE: None, Kind.PAYMENT: Code.PAYMENT_LOCKED},
}

#: When several locks conflict, the one reported is the first in this order: a payment under
#: way is the most important thing to warn about, then a printed bill, then an editor.
REPORT_ORDER: tuple[Kind, ...] = (Kind.PAYMENT, Kind.PRESETTLE, Kind.ORDER)

#: Actions an H5 session may ask for at all.
H5_ACTIONS = frozenset({Action.ADD_ITEMS, Action.PAY})


@dataclass(frozen=True)
class Actor:
    """The client asking: its role and its id (terminal_id or session_id)."""

    role: Role
    id: str


@dataclass(frozen=True)
class HeldLock:
    """The part of a stored lock the rules look at."""

    kind: Kind
    holder: Actor
    expires_at: int
    completing: bool = False
    #: The order version the lock is bound to (None: unknown, never re-bound).
    version: int | None = None
    #: A split-bill share's payment lock (SPEC §10): it blocks as a payment lock does, but it is
    #: never the asker's own whole-order lock to hand back or re-bind (core/shares.py decides shares).
    share: bool = False

    def live(self, now: int) -> bool:
        """A lock blocks until ``expires_at`` and never after.

        A ``completing`` lock cannot expire while the ERP confirms because starting completion
        moves ``expires_at`` past the RPC deadline; if the coordinator dies meanwhile the lock
        still ends then, so nothing stays stuck.
        """
        return now < self.expires_at


@dataclass(frozen=True)
class Decision:
    """The outcome of ``decide``.

    ``allowed`` with ``reuse`` set: the actor already holds the lock; it gets it back unchanged.
    ``allowed`` otherwise: grant a new lock of ``kind``, bound to order ``version``, after ending
    ``rebinds`` (the actor's own lock of that kind, bound to an older version than it now asks
    for: reason ``released``), ``converts`` (its own ``order`` lock, reason ``converted``) and
    ``breaks`` (others' locks, ``lock.forced``), in that order.
    ``expired``: locks past expiry that were ignored; whoever applies the decision reaps them first.
    Denied: ``code``, ``force_allowed`` and the lock that was ``reported`` (none for
    ``FORBIDDEN`` and ``STALE_VERSION``).
    """

    allowed: bool
    kind: Kind | None = None
    code: Code | None = None
    force_allowed: bool = False
    reported: HeldLock | None = None
    reuse: HeldLock | None = None
    rebinds: HeldLock | None = None
    converts: HeldLock | None = None
    breaks: tuple[HeldLock, ...] = ()
    expired: tuple[HeldLock, ...] = field(default=())
    enforced: bool = True
    version: int | None = None


def _conflict(action: Action, lock: HeldLock, actor: Actor) -> Code | None:
    if lock.kind is Kind.ORDER and lock.holder == actor:
        return None
    return CONFLICTS[action][lock.kind]


def _stale(version: int | None, expected_version: int | None) -> bool:
    """The asker's expected version is older than the order's stored one."""
    return expected_version is not None and version is not None and version > expected_version


def _rebinds(lock: HeldLock, expected_version: int | None) -> bool:
    """The holder asks again with a newer version than its lock is bound to (not while completing)."""
    return (
        expected_version is not None and lock.version is not None
        and expected_version > lock.version and not lock.completing
    )


def decide(
    locks: Iterable[HeldLock],
    actor: Actor,
    action: Action,
    *,
    now: int,
    force: bool = False,
    enforced: bool = True,
    version: int | None = None,
    expected_version: int | None = None,
) -> Decision:
    """Decide whether ``actor`` may do ``action`` given the order's ``locks`` at time ``now``.

    ``version`` is the order's stored version and ``expected_version`` the one the asker saw
    (None: not given). A new lock binds to ``expected_version`` when given, else ``version``.
    Version binding: the asker's own lock of the same kind comes back when it asks with the same
    or no version, STALE_VERSION when the order moved past what it saw, and is re-bound (ended,
    then a fresh lock granted) when it asks with a newer version than the lock holds. Otherwise
    a conflict is reported before staleness.
    """
    kind = ACTION_KIND.get(action)
    binds = expected_version if expected_version is not None else version
    if actor.role is Role.H5 and (force or action not in H5_ACTIONS):
        return Decision(allowed=False, kind=kind, code=Code.FORBIDDEN)
    if not enforced:
        return Decision(allowed=True, kind=kind, enforced=False, version=binds)

    held = list(locks)
    expired = tuple(lock for lock in held if not lock.live(now))
    live = [lock for lock in held if lock.live(now)]
    stale = _stale(version, expected_version)

    rebinds = None
    if kind is not None:
        for lock in live:
            if lock.kind is kind and lock.holder == actor and not lock.share:
                if stale:
                    return Decision(allowed=False, kind=kind, code=Code.STALE_VERSION, expired=expired)
                if not _rebinds(lock, expected_version):
                    return Decision(allowed=True, kind=kind, reuse=lock, expired=expired)
                rebinds = lock
        live = [lock for lock in live if lock is not rebinds]

    converts = None
    if kind in (Kind.PAYMENT, Kind.PRESETTLE):
        converts = next((l for l in live if l.kind is Kind.ORDER and l.holder == actor), None)

    conflicting = sorted(
        (lock for lock in live if _conflict(action, lock, actor) is not None),
        key=lambda lock: REPORT_ORDER.index(lock.kind),
    )
    granted = Decision(
        allowed=True, kind=kind, rebinds=rebinds, converts=converts, expired=expired, version=binds
    )
    if conflicting:
        first = conflicting[0]
        erp = actor.role is Role.ERP
        completing = any(lock.completing for lock in conflicting)
        if not (erp and force and not completing and kind is not None):
            return Decision(
                allowed=False,
                kind=kind,
                code=_conflict(action, first, actor),
                force_allowed=erp and not completing,
                reported=first,
                expired=expired,
            )
        granted = replace(granted, breaks=tuple(conflicting))
    # Version binding is checked once the conflicts are known and before anything is broken.
    if stale:
        return Decision(allowed=False, kind=kind, code=Code.STALE_VERSION, expired=expired)
    return granted


def lua_rules_table() -> str:
    """Render ``CONFLICTS``, ``REPORT_ORDER`` and the H5 restrictions as Lua source.

    The acquire script is loaded with this text in place of its ``--@@RULES@@`` line, so the
    Lua never carries a hand-written copy of the table.
    """
    rows = []
    for action, by_kind in CONFLICTS.items():
        cells = ", ".join(
            f'["{k.value}"] = {("%s" % chr(34) + c.value + chr(34)) if c else "false"}'
            for k, c in by_kind.items()
        )
        rows.append(f'  ["{action.value}"] = {{{cells}}},')
    kinds = ", ".join(f'["{a.value}"] = "{k.value}"' for a, k in ACTION_KIND.items())
    slots = ", ".join(f'["{k.value}"] = "{s}"' for k, s in SLOT.items())
    report = ", ".join(f'"{k.value}"' for k in REPORT_ORDER)
    h5 = ", ".join(f'["{a.value}"] = true' for a in sorted(H5_ACTIONS))
    return "\n".join(
        [
            "local CONFLICTS = {",
            *rows,
            "}",
            f"local ACTION_KIND = {{{kinds}}}",
            f"local SLOT = {{{slots}}}",
            f"local REPORT_ORDER = {{{report}}}",
            f"local H5_ACTIONS = {{{h5}}}",
        ]
    )
