"""What each viewer may see of a lock or an event (SPEC §4 Holder, invariant 6).

Staff (ERP terminals, admins) see holders with ids, names and ``online``; an H5 viewer sees
only ``{role, is_me}``; nobody but the holder's own grant response ever carries a token.
Pure functions: the hub calls them once per audience, not once per socket; an error's lock is
put in its viewer's form once, on the way out (api/routing.py).
"""

from __future__ import annotations

from typing import Any

#: Events an H5 session never receives.
STAFF_ONLY_EVENTS = frozenset({"payment.rejected", "terminal.status", "order.addon_refused"})
#: SPEC §11: a refund task opened by a forced table operation is for the staff's eyes.
STAFF_ONLY_EVENTS |= {"refund.needed"}
#: SPEC §10: a forced change of a partly paid order opens a refund task (staff only).
STAFF_ONLY_EVENTS |= {"share.refund_due"}


def _without_token(lock: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in lock.items() if k not in ("token", "payment_ref", "amount_cents")}


def staff_holder(holder: dict[str, Any], online: set[str] | frozenset[str]) -> dict[str, Any]:
    """A holder as ERP viewers and admins see it; an ``online`` stored with it (events, lock replies) is kept."""
    if holder.get("role") == "erp":
        # An event's holders carry ``online`` as it was when the event happened (lib.lua emit), so
        # the event reads the same live and replayed; ``online`` fills in only for the rest.
        is_online = holder["online"] if isinstance(holder.get("online"), bool) else holder["terminal_id"] in online
        return {"role": "erp", "terminal_id": holder["terminal_id"], "name": holder.get("name") or "",
                "online": is_online}
    if holder.get("role") == "h5":
        return {"role": "h5", "session_id": holder["session_id"]}
    return dict(holder)


def h5_holder(holder: dict[str, Any], session_id: str | None) -> dict[str, Any]:
    """A holder as an H5 viewer sees it: no ids (a holder already in that form is kept as it is)."""
    if "is_me" in holder and "terminal_id" not in holder and "session_id" not in holder:
        return {"role": holder.get("role"), "is_me": holder["is_me"]}
    role = "h5" if holder.get("role") == "h5" else "erp"
    return {"role": role, "is_me": role == "h5" and holder.get("session_id") == session_id}


def staff_lock(lock: dict[str, Any], online: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """A lock for ERP viewers and admins (no token)."""
    view = _without_token(lock)
    view["holder"] = staff_holder(lock["holder"], online)
    return view


def h5_lock(lock: dict[str, Any], session_id: str | None) -> dict[str, Any]:
    """A lock for an H5 viewer (no token, no ids); idempotent, so applying it twice is harmless."""
    view = _without_token(lock)
    view["holder"] = h5_holder(lock["holder"], session_id)
    return view


def own_lock(lock: dict[str, Any], online: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """A lock for its holder's own grant response: with the token."""
    view = staff_lock(lock, online)
    view["token"] = lock["token"]
    return view


def staff_event(event: dict[str, Any], online: set[str] | frozenset[str]) -> dict[str, Any]:
    """An event for ERP terminals: holders get names and ``online``."""
    data = dict(event.get("data") or {})
    if "lock" in data and data["lock"]:
        data["lock"] = staff_lock(data["lock"], online)
    if "by" in data:
        data["by"] = staff_holder(data["by"], online)
    return {**event, "data": data}


def h5_event(event: dict[str, Any], session_id: str | None) -> dict[str, Any] | None:
    """An event for an H5 session, or None if it must not see it."""
    if event["name"] in STAFF_ONLY_EVENTS:
        return None
    data = dict(event.get("data") or {})
    if "lock" in data and data["lock"]:
        data["lock"] = h5_lock(data["lock"], session_id)
    if "by" in data:
        data["by"] = h5_holder(data["by"], session_id)
    if event["name"] == "config.updated":
        config = data.get("config", {})
        data = {"config": {k: config.get(k) for k in ("strong_link_enabled", "h5_payment_lock_seconds")}}
    return {**event, "data": data}


def h5_visible(event: dict[str, Any], table_id: str | None) -> bool:
    """Whether an H5 session on ``table_id`` receives ``event`` at all (invariant 6)."""
    if event["name"] in STAFF_ONLY_EVENTS:
        return False
    if event.get("table_id") is None:
        return event["name"] == "config.updated"
    return event["table_id"] == table_id


def h5_sessions(event: dict[str, Any]) -> set[str]:
    """Session ids the event names (the lock holder, the forcer): they see ``is_me: true``."""
    data = event.get("data") or {}
    out = set()
    for holder in ((data.get("lock") or {}).get("holder"), data.get("by")):
        if isinstance(holder, dict) and holder.get("role") == "h5" and holder.get("session_id"):
            out.add(holder["session_id"])
    return out
