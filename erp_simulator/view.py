"""A terminal's local view of its store, built only from websocket messages (SPEC §7). Pure.

``StoreView.apply(message)`` takes one decoded server message (``hello``, ``snapshot`` or
``event``) and returns what happened that a terminal must act on (a lock of its own forced
away, expired, released…). No I/O and no clock: callers pass ``now`` where time matters.

Locks are kept per order and slot (``edit`` holds ``order`` or ``presettle``, ``pay`` holds
``payment``); a lock is identified by its ``fence``, unique per order, so an end event only
removes the lock it names, never a newer one that replaced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SLOT = {"order": "edit", "presettle": "edit", "payment": "pay"}


def slot_of(lock: dict[str, Any]) -> str:
    """Where a lock lives: its kind's slot, or ``share:<fence>`` for a split-bill share's payment lock."""
    return f"share:{lock['fence']}" if lock.get("share") else SLOT[lock["kind"]]

#: Events that end a lock, with the data of the lock that ended in ``data.lock``.
LOCK_ENDS = frozenset({"lock.released", "lock.expired", "lock.forced"})


@dataclass(frozen=True)
class LockEnded:
    """A lock ended: ``how`` is the event name, ``data`` its data (``reason``, ``by``)."""

    lock: dict[str, Any]
    how: str
    data: dict[str, Any]

    @property
    def by(self) -> dict[str, Any] | None:
        """Who forced the lock away (``lock.forced``), else None."""
        return self.data.get("by")


@dataclass(frozen=True)
class Resynced:
    """A snapshot replaced the view: every lock not in it has ended, without an event."""

    locks: tuple[dict[str, Any], ...]


@dataclass
class StoreView:
    """Orders and live locks of one store as the coordinator last told this client."""

    seq: int = 0
    client_id: str | None = None
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    locks: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    online: dict[str, bool] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    #: Highest fence seen per order (grants, renewals and ends all carry one).
    fences: dict[str, int] = field(default_factory=dict)
    #: Diners' service requests by id (SPEC §11), from service.requested / service.taken.
    service_requests: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Estimate of (coordinator clock - local clock) in ms, from event timestamps.
    clock_offset_ms: int | None = None

    def apply(self, message: dict[str, Any], local_ms: int | None = None) -> list[Any]:
        """Apply one server message; return the LockEnded / Resynced happenings it caused."""
        kind = message.get("type")
        if kind == "hello":
            self.client_id = message.get("client_id")
            return []
        if kind == "snapshot":
            return self._snapshot(message)
        if kind != "event":
            return []
        seq = int(message.get("seq") or 0)
        if seq and seq <= self.seq:
            return []  # already applied (a resume may repeat the edge of the window)
        if seq:
            self.seq = seq
        if local_ms is not None and message.get("ts"):
            self._clock(int(message["ts"]), local_ms)
        return self._event(message)

    def _snapshot(self, message: dict[str, Any]) -> list[Any]:
        before = [lock for slots in self.locks.values() for lock in slots.values()]
        self.seq = int(message.get("seq") or 0)
        orders = message.get("orders") or []
        if isinstance(orders, dict):
            orders = list(orders.values())
        self.orders = {o["order_id"]: o for o in orders}
        self.locks = {}
        for lock in message.get("locks") or []:
            self._put_lock(lock)
            holder = lock.get("holder") or {}
            if holder.get("role") == "erp" and "online" in holder:
                self.online[holder["terminal_id"]] = bool(holder["online"])
        kept = {(l["order_id"], l["fence"]) for slots in self.locks.values() for l in slots.values()}
        gone = tuple(l for l in before if (l["order_id"], l["fence"]) not in kept)
        return [Resynced(gone)] if gone else []

    def _event(self, event: dict[str, Any]) -> list[Any]:
        name, data = event.get("name"), event.get("data") or {}
        lock = data.get("lock")
        if name in ("lock.acquired", "lock.renewed") and lock:
            self._put_lock(lock)
            return []
        if name in LOCK_ENDS and lock:
            self._see_fence(lock)
            ended = self._drop_lock(lock)
            return [LockEnded(ended or lock, name, data)]
        if name in ("order.updated", "order.paid", "share.paid") and data.get("order"):
            order = data["order"]
            self.orders[order["order_id"]] = order
            if order.get("status") != "open":
                self.locks.pop(order["order_id"], None)
            return []
        if name == "terminal.status" and data.get("terminal_id"):
            self.online[data["terminal_id"]] = bool(data.get("online"))
            return []
        if name in ("service.requested", "service.taken") and data.get("request"):
            request = {**self.service_requests.get(data["request"]["id"], {}), **data["request"]}
            if name == "service.taken":
                request["taken_by"] = data.get("by")
            self.service_requests[request["id"]] = request
            return []
        if name == "config.updated" and data.get("config"):
            self.config = dict(data["config"])
        return []

    def _put_lock(self, lock: dict[str, Any]) -> None:
        self._see_fence(lock)
        slots = self.locks.setdefault(lock["order_id"], {})
        current = slots.get(slot_of(lock))
        if current is None or current["fence"] <= lock["fence"]:
            slots[slot_of(lock)] = lock

    def _drop_lock(self, lock: dict[str, Any]) -> dict[str, Any] | None:
        slots = self.locks.get(lock["order_id"], {})
        current = slots.get(slot_of(lock))
        if current is not None and current["fence"] == lock["fence"]:
            del slots[slot_of(lock)]
            if not slots:
                self.locks.pop(lock["order_id"], None)
            return current
        return None

    def _see_fence(self, lock: dict[str, Any]) -> None:
        order_id = lock["order_id"]
        self.fences[order_id] = max(self.fences.get(order_id, 0), int(lock["fence"]))

    def _clock(self, server_ts: int, local_ms: int) -> None:
        # An event is received after it was stamped, so server_ts - local_ms underestimates the
        # offset by the delivery delay; the largest sample is the closest.
        sample = server_ts - local_ms
        if self.clock_offset_ms is None or sample > self.clock_offset_ms:
            self.clock_offset_ms = sample

    # --- reading ---------------------------------------------------------------------------

    def live_locks(self, order_id: str, now: int) -> list[dict[str, Any]]:
        """The order's locks that have not expired at ``now`` (coordinator ms), with ``online`` fresh."""
        out = []
        held = self.locks.get(order_id, {})
        shares = sorted((s for s in held if s.startswith("share:")), key=lambda s: int(s.split(":")[1]))
        for slot in ("edit", "pay", *shares):
            lock = held.get(slot)
            if lock is None or int(lock["expires_at"]) <= now:
                continue
            holder = dict(lock.get("holder") or {})
            if holder.get("role") == "erp" and holder.get("terminal_id") in self.online:
                holder["online"] = self.online[holder["terminal_id"]]
            out.append({**lock, "holder": holder})
        return out

    def lock_of(self, order_id: str, kind: str, now: int) -> dict[str, Any] | None:
        """The live lock of ``kind`` on the order, or None."""
        # A share lock is not "the" payment lock of the order (several may be held at once).
        return next((l for l in self.live_locks(order_id, now) if l["kind"] == kind and not l.get("share")), None)
