"""Split bill (SPEC §10) as one pure rule: may this share of an order be claimed now?

A **share** is part of one order's amount due that one payer pays under its own payment lock:

- ``lines``: the given ``line_id``s; it pays each line's amount (qty * unit price plus the
  adjustments bound to that line). A line is in at most one live or paid share.
- ``parts``: part ``part`` of ``parts`` equal parts of the order's total: ``total // parts`` each,
  the last part (``part == parts``) takes the rounding. Every parts share of an order uses the
  same ``parts``; each part is claimed once.
- ``amount``: the given amount.
- ``rest``: whatever remains due (total - paid - claimed), when it is above zero.

Order-wide adjustments (a service charge, 抹零, a discount without ``line_id``) belong to no line:
they are paid by parts, amounts and the rest. ``docs/protocol.md`` A13 explains why.

``claim_share`` is the pure twin of ``store/lua/share_claim.lua``; ``tests/test_shares.py`` pins
it row by row and ``tests/test_lua_agrees_with_shares.py`` runs both over generated cases.
No I/O, no clock: ``now`` is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Iterable, Mapping

from coordinator.core.rules import Actor, HeldLock, Kind

#: Equal parts: at least 2, at most this many.
MAX_PARTS = 50


class ShareKind(StrEnum):
    """How a share is chosen."""

    LINES = "lines"
    PARTS = "parts"
    AMOUNT = "amount"
    REST = "rest"


class ShareCode(StrEnum):
    """Why a share claim is refused (SPEC §5 codes and the split-bill ones)."""

    ORDER_LOCKED = "ORDER_LOCKED"        # an ``order`` lock held by another client
    PAYMENT_LOCKED = "PAYMENT_LOCKED"    # a whole-order payment lock is held
    STALE_VERSION = "STALE_VERSION"      # the payer saw an older version
    INVALID = "VALIDATION_ERROR"         # unknown line, part out of range, amount < 1
    TAKEN = "SHARE_TAKEN"                # a line or part already claimed or paid; parts of another N
    EXCEEDS = "SHARE_EXCEEDS"            # more than what remains due


@dataclass(frozen=True)
class ShareSpec:
    """What a payer asks for; only the fields of its kind are set."""

    kind: ShareKind
    line_ids: tuple[str, ...] = ()
    parts: int = 0
    part: int = 0
    amount_cents: int = 0


@dataclass(frozen=True)
class HeldShare:
    """A share already claimed (live lock) or paid, with the amount it was resolved to."""

    spec: ShareSpec
    amount_cents: int
    holder: Actor
    expires_at: int
    paid: bool = False

    def counts(self, now: int) -> bool:
        """A paid share counts forever; a claimed one while its lock is live."""
        return self.paid or now < self.expires_at


@dataclass(frozen=True)
class OrderDue:
    """The part of an order the share rule looks at."""

    total_cents: int
    version: int
    #: line_id -> the line's amount (qty * unit price + the adjustments bound to it), in order.
    lines: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ShareDecision:
    """Granted with the share's ``amount_cents`` (or the actor's own live share, ``reuse``), or denied."""

    allowed: bool
    amount_cents: int = 0
    code: ShareCode | None = None
    reuse: HeldShare | None = None
    reported: HeldLock | None = None
    #: The asker's own ``order`` lock, ended (reason converted) when the share lock is granted:
    #: a payment lock never coexists with an order lock (SPEC §3 invariant 2).
    converts: HeldLock | None = None
    detail: str = ""


def line_amounts(items: Iterable[Mapping], adjustments: Iterable[Mapping] = ()) -> dict[str, int]:
    """line_id -> qty * unit_price_cents plus the adjustments bound to that line."""
    out = {item["line_id"]: item["qty"] * item["unit_price_cents"] for item in items}
    for adjustment in adjustments:
        if adjustment.get("line_id") in out:
            out[adjustment["line_id"]] += adjustment["amount_cents"]
    return out


def part_amount(total: int, parts: int, part: int) -> int:
    """One of ``parts`` equal parts of ``total``; the last part takes the rounding."""
    each = total // parts
    return total - each * (parts - 1) if part == parts else each


def paid_cents(shares: Iterable[HeldShare]) -> int:
    """What the paid shares add up to."""
    return sum(s.amount_cents for s in shares if s.paid)


def claim_share(
    order: OrderDue,
    spec: ShareSpec,
    actor: Actor,
    *,
    locks: Iterable[HeldLock],
    shares: Iterable[HeldShare],
    now: int,
    expected_version: int | None = None,
) -> ShareDecision:
    """Decide whether ``actor`` may claim ``spec`` of ``order`` at ``now``.

    ``locks`` are the order's edit-slot and whole-order payment locks (not shares); ``shares``
    every share claimed (live or not) or paid. Checks, in this order (the Lua keeps it): an
    ``order`` lock of another client, a whole-order payment lock, the version, the actor's own
    live share (handed back), the share itself, and what remains due.
    """
    live_locks = [lock for lock in locks if lock.live(now)]
    for kind, code in ((Kind.ORDER, ShareCode.ORDER_LOCKED), (Kind.PAYMENT, ShareCode.PAYMENT_LOCKED)):
        for lock in live_locks:
            if lock.kind is kind and not (kind is Kind.ORDER and lock.holder == actor):
                return ShareDecision(False, code=code, reported=lock)
    if expected_version is not None and order.version > expected_version:
        return ShareDecision(False, code=ShareCode.STALE_VERSION)

    counted = [s for s in shares if s.counts(now)]
    for share in counted:
        if not share.paid and share.holder == actor:
            return ShareDecision(True, amount_cents=share.amount_cents, reuse=share)

    due = order.total_cents - sum(s.amount_cents for s in counted)
    amount, refusal = _resolve(order, spec, counted, due)
    if refusal is not None:
        return refusal
    if amount < 1:
        return ShareDecision(False, code=ShareCode.INVALID, detail="the share is empty")
    if amount > due:
        return ShareDecision(False, code=ShareCode.EXCEEDS, detail=f"{amount} > {due} due")
    converts = next((lock for lock in live_locks if lock.kind is Kind.ORDER), None)  # the asker's own
    return ShareDecision(True, amount_cents=amount, converts=converts)


def _resolve(order: OrderDue, spec: ShareSpec, counted: list[HeldShare], due: int) -> tuple[int, ShareDecision | None]:
    """The share's amount, or the refusal of its own rule (unknown or taken lines, parts)."""
    if spec.kind is ShareKind.LINES:
        unknown = [line for line in spec.line_ids if line not in order.lines]
        if not spec.line_ids or unknown or len(set(spec.line_ids)) != len(spec.line_ids):
            return 0, ShareDecision(False, code=ShareCode.INVALID, detail="unknown or repeated line_id")
        taken = {line for s in counted if s.spec.kind is ShareKind.LINES for line in s.spec.line_ids}
        if taken & set(spec.line_ids):
            return 0, ShareDecision(False, code=ShareCode.TAKEN, detail="line already claimed or paid")
        return sum(order.lines[line] for line in spec.line_ids), None
    if spec.kind is ShareKind.PARTS:
        if not (2 <= spec.parts <= MAX_PARTS and 1 <= spec.part <= spec.parts):
            return 0, ShareDecision(False, code=ShareCode.INVALID, detail="part out of range")
        for s in counted:
            if s.spec.kind is ShareKind.PARTS and (s.spec.parts != spec.parts or s.spec.part == spec.part):
                return 0, ShareDecision(False, code=ShareCode.TAKEN, detail="part already claimed or paid")
        return part_amount(order.total_cents, spec.parts, spec.part), None
    if spec.kind is ShareKind.AMOUNT:
        return spec.amount_cents, None
    if due < 1:
        return 0, ShareDecision(False, code=ShareCode.EXCEEDS, detail="nothing remains due")
    return due, None
