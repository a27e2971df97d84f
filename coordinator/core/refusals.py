"""The audit bound on refused H5 requests (issue 15 finding 3): pure twin of ``bounded_refusal`` in
``store/lua/lib.lua``, which applies it atomically (``tests/test_refusal_bound_agrees.py`` runs
generated sequences through both).

Per table and window (``window_ms`` from the table's first refusal): the first refusal of a kind
(its code) per session is written, at most ``cap`` per table; later ones are counted per order and
code. The counts are written as one ``h5.refused_counted`` entry per order before the table's next
written refusal, when the window rolls, or on a flush (the admin reading the log).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RefusalWindow:
    """One table's current window: when it began, refusals written, who was written, what was counted."""

    since: int
    written: int = 0
    seen: set[str] = field(default_factory=set)
    #: order_id -> code -> refusals counted (not yet written)
    orders: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Counted:
    """An ``h5.refused_counted`` entry: refusals of one order counted instead of written."""

    order_id: str
    codes: dict[str, int]
    from_ms: int

    @property
    def count(self) -> int:
        """Refusals this entry stands for."""
        return sum(self.codes.values())


def _drain(window: RefusalWindow) -> list[Counted]:
    out = [Counted(order_id, dict(codes), window.since) for order_id, codes in window.orders.items()]
    window.orders = {}
    return out


def record(window: RefusalWindow | None, *, now: int, window_ms: int, cap: int, session_id: str,
           order_id: str, code: str) -> tuple[RefusalWindow, list[Counted], bool]:
    """One refusal: (the table's window after it, counted entries to write first, whether it is written)."""
    flushed: list[Counted] = []
    if window is not None and now >= window.since + window_ms:
        flushed = _drain(window)
        window = None
    if window is None:
        window = RefusalWindow(since=now)
    who = f"{session_id}|{code}"
    if who not in window.seen and window.written < cap:
        flushed += _drain(window)
        window.seen.add(who)
        window.written += 1
        return window, flushed, True
    per = window.orders.setdefault(order_id, {})
    per[code] = per.get(code, 0) + 1
    return window, flushed, False


def flush(window: RefusalWindow, *, now: int, window_ms: int) -> tuple[RefusalWindow | None, list[Counted]]:
    """The admin reads the log: write what is counted; a window that has ended is forgotten (None)."""
    counted = _drain(window)
    return (None if now >= window.since + window_ms else window), counted
