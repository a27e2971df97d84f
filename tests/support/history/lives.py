"""The locks of a recorded history as the event stream tells them, and the checker's Violation.

A lock is known by (order_id, fence). Its interval is [acquired_at, end) on the Redis clock, where
end is the ts of its release or force, the expires_at it had when it expired, or — still live at
the end — the expires_at the final lock board shows. Touching intervals (one ends at the ms the
next starts, as in a force or a conversion) do not overlap. Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.support.history.recorder import Op

INF = float("inf")
END_EVENTS = ("lock.released", "lock.expired", "lock.forced")


@dataclass
class Violation:
    """One broken invariant, with what shows it."""

    invariant: str
    detail: str

    def __str__(self) -> str:
        return f"{self.invariant}: {self.detail}"


@dataclass
class LockLife:
    """One lock from its grant to its end, as the stream tells it."""

    order_id: str
    fence: int
    kind: str
    holder: dict[str, Any]
    acquired_at: int
    expires_at: int
    grant_seq: int
    ends: list[dict[str, Any]] = field(default_factory=list)
    #: A split-bill share's lock (SPEC §10): its share ({kind, ..., amount_cents}), else None.
    share: dict[str, Any] | None = None

    @property
    def slot(self) -> str:
        """edit (order, presettle) or pay (payment)."""
        return "pay" if self.kind == "payment" else "edit"

    def end(self, final: dict[tuple[str, int], dict[str, Any]]) -> float:
        """The end of the lock's interval on the Redis clock (see the module docstring)."""
        if self.ends:
            first = self.ends[0]
            if first["name"] == "lock.expired":
                return int(first["data"]["lock"]["expires_at"])
            return int(first["ts"])
        live = final.get((self.order_id, self.fence))
        return int(live["expires_at"]) if live else self.expires_at



def lock_key(event: dict[str, Any]) -> tuple[str, int] | None:
    lock = (event.get("data") or {}).get("lock")
    if not isinstance(lock, dict) or "fence" not in lock:
        return None
    return str(lock.get("order_id") or event.get("order_id")), int(lock["fence"])


def reconstruct(stream: list[dict[str, Any]], out: list[Violation]) -> dict[tuple[str, int], LockLife]:
    lives: dict[tuple[str, int], LockLife] = {}
    for event in stream:
        name, key = event["name"], lock_key(event)
        if key is None:
            continue
        lock = event["data"]["lock"]
        if name == "lock.acquired":
            if key in lives:
                out.append(Violation("I3", f"fence {key[1]} of order {key[0]} granted twice (seq {event['seq']})"))
                continue
            lives[key] = LockLife(key[0], key[1], lock["kind"], lock.get("holder") or {}, int(lock["acquired_at"]),
                                  int(lock["expires_at"]), event["seq"], share=lock.get("share"))
        elif key not in lives:
            out.append(Violation("I5", f"{name} (seq {event['seq']}) for lock {key} that was never granted"))
        elif name == "lock.renewed":
            if lives[key].ends:
                out.append(Violation("I5", f"lock {key} renewed (seq {event['seq']}) after it ended"))
            lives[key].expires_at = int(lock["expires_at"])
        elif name in END_EVENTS:
            lives[key].ends.append(event)
    return lives


def grant_locks(op: Op) -> list[dict[str, Any]]:
    """Locks an answer says were granted to its caller (LockGrant, renew, Checkout)."""
    if op.status not in (200, 201) or not isinstance(op.resp, dict):
        return []
    lock = op.resp.get("lock")
    return [lock] if isinstance(lock, dict) and lock.get("token") else []
