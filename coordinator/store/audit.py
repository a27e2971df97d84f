"""Reading a store's audit log: filtered pages for the admin, and the reconciliation report.

The log is the stream ``keys.audit(store_id)``, appended by the Lua scripts in the same atomic
step as the change they record. Each entry has two fields: ``e``, the event JSON (``{type, seq,
ts, name, store_id, table_id, order_id, data}``; audit-only entries have ``type: "audit"``), and
``actor``, the JSON of whoever caused it. Entry ids are Redis time ids (``<ms>-<n>``), so the
log is oldest first and an id is a stable cursor.

Time windows are applied to each entry's ``ts`` exactly. The id's millisecond part is a few
ms off ``ts`` at most (XADD stamps the id, TIME stamps ``ts``, in the same script), so the window
is first widened by ``CLOCK_SLACK_MS`` into an XRANGE and then filtered: no entry at a window
edge is ever missed, and ranges far from the window are never read.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from coordinator.core.models import AuditEntry, AuditPage, ReconciliationCase
from coordinator.store import keys

#: Entries one XRANGE reads while filtering by order or lock kind.
SCAN_BATCH = 500
#: Entries one audit page may examine; past this it answers with what it has and a ``next``.
SCAN_BUDGET = 20_000
#: How far an entry's id time may stray from its ``ts`` (see the module docstring).
CLOCK_SLACK_MS = 5_000

#: Why an order needs a human look, by payment.rejected ``data.code``; other codes: payment_rejected.
_REJECTION_REASONS = {"AMOUNT_MISMATCH": "amount_mismatch", "STALE_VERSION": "version_mismatch"}
#: Codes of H5 requests refused because a lock is held (an add-on during a payment): counted in an
#: ``h5.refused_counted`` entry, they are no money problem and flag no order.
_LOCK_HELD_CODES = frozenset({"ORDER_LOCKED", "PAYMENT_LOCKED", "PRESETTLED"})
#: The order reasons are reported in.
_REASON_ORDER = ("forced_during_payment", "payment_rejected", "amount_mismatch", "version_mismatch",
                 "refund_needed", "reopened", "share_refund_due")
#: Event names that can flag an order; a cheap byte test before any JSON is decoded.
_FLAGGING = (b'"name":"lock.forced"', b'"name":"payment.rejected"', b'"name":"h5.refused_counted"',
             b'"name":"refund.needed"', b'"name":"order.reopened"',
             b'"name":"share.refund_due"')
#: Above this many flagged orders, the trail pass decodes every entry instead of byte-testing.
_MAX_BYTE_TESTS = 32


@dataclass(frozen=True)
class AuditFilter:
    """Which entries a reader wants: by order, by lock kind (``data.lock.kind``), by time (ms, inclusive)."""

    order_id: str | None = None
    kind: str | None = None
    from_ms: int | None = None
    to_ms: int | None = None

    def narrows(self) -> bool:
        """True when entries inside the time window may still be skipped."""
        return self.order_id is not None or self.kind is not None

    def matches(self, entry: AuditEntry) -> bool:
        """Whether ``entry`` passes every filter."""
        if self.from_ms is not None and entry.ts < self.from_ms:
            return False
        if self.to_ms is not None and entry.ts > self.to_ms:
            return False
        if self.order_id is not None and entry.order_id != self.order_id:
            return False
        if self.kind is not None:
            lock = entry.data.get("lock")
            if not isinstance(lock, dict) or lock.get("kind") != self.kind:
                return False
        return True


def parse_entry(stream_id: bytes | str, fields: dict[bytes, bytes]) -> AuditEntry:
    """An audit stream entry as the admin sees it."""
    event = json.loads(fields[b"e"])
    actor = json.loads(fields[b"actor"]) if b"actor" in fields else None
    data = event.get("data")
    return AuditEntry(
        id=stream_id.decode() if isinstance(stream_id, bytes) else stream_id,
        ts=event["ts"],
        name=event["name"],
        actor=actor if isinstance(actor, dict) else None,
        order_id=event.get("order_id"),
        table_id=event.get("table_id"),
        # cjson writes an empty Lua table as {} or [] alike; both mean "no data".
        data=data if isinstance(data, dict) else {},
    )


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, n = stream_id.partition("-")
    return int(ms), int(n or 0)


def xrange_bounds(after: str | None, from_ms: int | None, to_ms: int | None) -> tuple[str, str]:
    """XRANGE ``min``/``max`` covering entries after ``after`` whose ``ts`` may lie in the window."""
    start = "-"
    if from_ms is not None:
        start = f"{max(from_ms - CLOCK_SLACK_MS, 0)}-0"
    if after is not None and (start == "-" or _id_key(after) >= _id_key(start)):
        start = f"({after}"
    end = "+" if to_ms is None else str(to_ms + CLOCK_SLACK_MS)  # "<ms>" as max means <ms>-<max seq>
    return start, end


async def _rows(
    redis: Any, store_id: str, start: str, end: str, batch: int
) -> AsyncIterator[tuple[str, dict[bytes, bytes]]]:
    """Every raw entry between the XRANGE bounds, oldest first, read ``batch`` at a time."""
    key = keys.audit(store_id)
    while True:
        rows = await redis.xrange(key, min=start, max=end, count=batch)
        for stream_id, fields in rows:
            yield stream_id.decode(), fields
        if len(rows) < batch:
            return
        start = "(" + rows[-1][0].decode()


async def read_page(
    redis: Any,
    store_id: str,
    *,
    after: str | None = None,
    limit: int = 100,
    where: AuditFilter = AuditFilter(),
    batch: int = SCAN_BATCH,
    budget: int = SCAN_BUDGET,
) -> AuditPage:
    """One page of matching entries after the cursor ``after``, oldest first.

    ``next`` is the id to pass as ``after`` for the following page: the last entry returned
    when the page is full, or the last entry examined when ``budget`` entries were examined
    first (the page may then hold fewer than ``limit``); it is None once the log (or the
    window) is exhausted.
    """
    start, end = xrange_bounds(after, where.from_ms, where.to_ms)
    count = max(limit, batch) if where.narrows() else limit
    entries: list[AuditEntry] = []
    examined = 0
    async for stream_id, fields in _rows(redis, store_id, start, end, count):
        examined += 1
        entry = parse_entry(stream_id, fields)
        if where.matches(entry):
            entries.append(entry)
            if len(entries) == limit:
                return AuditPage(entries=entries, next=stream_id)
        if examined >= budget:
            return AuditPage(entries=entries, next=stream_id)
    return AuditPage(entries=entries, next=None)


def flag_reasons(entry: AuditEntry) -> list[str]:
    """Why this entry puts its order on the reconciliation report (empty: it does not)."""
    if entry.name == "lock.forced":
        lock = entry.data.get("lock")
        return ["forced_during_payment"] if isinstance(lock, dict) and lock.get("kind") == "payment" else []
    if entry.name == "payment.rejected":
        return [_REJECTION_REASONS.get(str(entry.data.get("code")), "payment_rejected")]
    if entry.name == "h5.refused_counted":  # refusals counted, not written one by one (lib.lua)
        codes = entry.data.get("codes")
        if not isinstance(codes, dict):
            return []
        return sorted({_REJECTION_REASONS.get(str(c), "payment_rejected") for c in codes if c not in _LOCK_HELD_CODES})
    if entry.name == "refund.needed":  # SPEC §11: a forced move/merge stranded money (a share paid, or in flight)
        return ["refund_needed"]
    if entry.name == "order.reopened":  # 反结账: the earlier payment stays in the trail for the books
        return ["reopened"]
    if entry.name == "share.refund_due":  # a forced change of a partly paid order (SPEC §10)
        return ["share_refund_due"]
    return []


def build_cases(flags: Iterable[AuditEntry], trails: dict[str, list[AuditEntry]]) -> list[ReconciliationCase]:
    """Group flagging entries by order (in the order first flagged) with each order's trail."""
    reasons: dict[str, set[str]] = {}
    for entry in flags:
        found = flag_reasons(entry)
        if found and entry.order_id is not None:
            reasons.setdefault(entry.order_id, set()).update(found)
    cases = []
    for order_id, why in reasons.items():
        trail = trails.get(order_id, [])
        table_id = next((e.table_id for e in reversed(trail) if e.table_id), None)
        cases.append(ReconciliationCase(
            order_id=order_id, table_id=table_id,
            reasons=[r for r in _REASON_ORDER if r in why], trail=trail,
        ))
    return cases


async def reconcile(redis: Any, store_id: str, from_ms: int, to_ms: int) -> list[ReconciliationCase]:
    """The orders that need a human look in the window, each with its audit trail in the window.

    Two passes over the window: the first finds the flagging entries (decoding only those whose
    bytes can be one), the second gathers the trails of the flagged orders only, so memory
    follows the number of cases, not the size of the log.
    """
    start, end = xrange_bounds(None, from_ms, to_ms)
    window = AuditFilter(from_ms=from_ms, to_ms=to_ms)
    flags = []
    async for stream_id, fields in _rows(redis, store_id, start, end, SCAN_BATCH):
        raw = fields.get(b"e", b"")
        if any(marker in raw for marker in _FLAGGING):
            entry = parse_entry(stream_id, fields)
            if window.matches(entry) and flag_reasons(entry):
                flags.append(entry)
    flagged = {e.order_id for e in flags if e.order_id is not None}
    if not flagged:
        return []
    markers = [f'"order_id":"{o}"'.encode() for o in flagged] if len(flagged) <= _MAX_BYTE_TESTS else None
    trails: dict[str, list[AuditEntry]] = {}
    async for stream_id, fields in _rows(redis, store_id, start, end, SCAN_BATCH):
        if markers is not None and not any(m in fields.get(b"e", b"") for m in markers):
            continue
        entry = parse_entry(stream_id, fields)
        if entry.order_id in flagged and window.matches(entry):
            trails.setdefault(entry.order_id, []).append(entry)
    return build_cases(flags, trails)
