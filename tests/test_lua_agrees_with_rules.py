"""acquire.lua on a real Redis (single node and cluster) decides exactly as the pure ``rules.decide``.

The cases come from the pure side: every lock state the two slots can hold (each lock live or
expired, payment locks completing or not, holders among two ERP terminals and two H5 sessions),
every actor, every lock-taking action, with and without force, strong linking on and off. Then
version binding: live states whose locks are bound to an older, the same or a newer version than
the stored order, asked with no, an older, the same or a newer ``expected_version``. Each case
is written straight into Redis in the shape acquire.lua stores, ``LockEngine.acquire`` runs on
it, and the reply (with the version a lock is bound to), the locks left and the events emitted
must be what ``decide`` says.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass
from typing import Any

from coordinator.core.errors import LockConflict, TablelockError
from coordinator.core.models import OrderIn, StoreConfig
from coordinator.core.rules import (
    ACTION_KIND,
    SLOT,
    Action,
    Code,
    Decision,
    Kind,
    decide,
)
from coordinator.store import keys
from coordinator.store.engine import LockEngine, compact, held_lock, rules_actor
from coordinator.store.redis_conn import AnyRedis
from tests.support.app import order_body

HOLDERS: tuple[dict[str, Any], ...] = (
    {"role": "erp", "terminal_id": "TA", "name": "收银台"},
    {"role": "erp", "terminal_id": "TB", "name": "服务员B"},
    {"role": "h5", "session_id": "h1"},
    {"role": "h5", "session_id": "h2"},
)
ERP_HOLDERS = HOLDERS[:2]
LOCK_ACTIONS = (Action.MODIFY, Action.PRESETTLE, Action.PAY)
#: Far enough from the Redis clock that a case can never straddle an expiry.
MARGIN_MS = 600_000
#: Fences of the seeded locks, and the order's fence counter (a new grant gets START_FENCE + 1):
#: ahead of the Redis clock (ms, year 2255), so next_fence's max(last + 1, now) is last + 1.
FENCE = {"edit": 1, "pay": 2}
START_FENCE = 9_000_000_000_000
NEW_TOKEN = "new-token"
#: Cases run side by side (each on its own store) to keep the ~10,000 cases to seconds.
CONCURRENCY = 8  # cases in flight; more only opens more connections, which time out on a loaded 2-core machine
DEFAULTS = StoreConfig()
#: The stored order's version; seeded locks are bound to it unless a case says otherwise.
STORED = 5
#: expected_version of the version cases: none, older, the same, newer than STORED.
EXPECTED = (None, STORED - 1, STORED, STORED + 1)
ORDER = OrderIn.model_validate(order_body(version=STORED))
ORDER_ID = ORDER.order_id


@dataclass(frozen=True)
class SeedLock:
    """A lock to seed: its kind, holder, whether it is past expiry, whether it is completing."""

    kind: Kind
    holder: dict[str, Any]
    expired: bool
    completing: bool = False
    version: int = STORED

    @property
    def slot(self) -> str:
        """The slot it lives in."""
        return SLOT[self.kind]

    def stored(self, order_id: str, now: int) -> dict[str, Any]:
        """The lock JSON exactly as acquire.lua (and pay_capture.lua, when completing) stores it."""
        expires_at = now - MARGIN_MS if self.expired else now + MARGIN_MS
        lock = {
            "kind": self.kind.value, "order_id": order_id, "table_id": "T1", "holder": self.holder,
            "fence": FENCE[self.slot], "version": self.version, "acquired_at": expires_at - 2 * MARGIN_MS,
            "expires_at": expires_at, "token": f"token-{self.slot}", "completing": self.completing,
        }
        if self.completing:
            lock |= {"payment_ref": "ref-1", "amount_cents": 3800}
        return lock


@dataclass(frozen=True)
class Case:
    """One generated case: the seeded locks (edit slot first), who asks what, force, strong linking."""

    locks: tuple[SeedLock, ...]
    actor: dict[str, Any]
    action: Action
    force: bool
    enforced: bool
    expected_version: int | None = None

    def __str__(self) -> str:
        def who(h: dict[str, Any]) -> str:
            return f"{h['role']}:{h.get('terminal_id') or h.get('session_id')}"

        held = ", ".join(
            f"{l.kind}@{who(l.holder)} v{l.version}{' expired' if l.expired else ''}"
            f"{' completing' if l.completing else ''}"
            for l in self.locks
        ) or "free"
        mode = "" if self.enforced else " (legacy)"
        asked = "" if self.expected_version is None else f" expecting v{self.expected_version}"
        return f"[{held}] {who(self.actor)} {self.action}{asked}{' force' if self.force else ''}{mode}"


def all_cases() -> list[Case]:
    """The lock-state cases, then the version cases."""
    return lock_cases() + version_cases()


def lock_cases() -> list[Case]:
    """Every state the slots hold × every actor, lock action, force and strong-link setting."""
    edits = [None] + [
        SeedLock(kind, holder, expired)
        for kind in (Kind.ORDER, Kind.PRESETTLE) for holder in ERP_HOLDERS for expired in (False, True)
    ]
    pays = [None] + [
        SeedLock(Kind.PAYMENT, holder, expired, completing)
        for holder in HOLDERS for expired in (False, True) for completing in (False, True)
    ]
    return [
        Case(tuple(l for l in (edit, pay) if l), actor, action, force, enforced)
        for edit, pay, actor, action, force, enforced
        in itertools.product(edits, pays, HOLDERS, LOCK_ACTIONS, (False, True), (True, False))
    ]


def version_cases() -> list[Case]:
    """Live states bound to an older / the same / a newer version × every expected_version.

    Actors are one ERP terminal and one H5 session (the others' cases mirror them); legacy mode
    is asked on a free order only (it reads no lock).
    """
    terminal, session = HOLDERS[0], HOLDERS[2]
    cases = []
    for bound in (STORED - 1, STORED, STORED + 1):
        edits = [None] + [SeedLock(kind, holder, False, version=bound)
                          for kind, holder in ((Kind.ORDER, terminal), (Kind.ORDER, HOLDERS[1]),
                                               (Kind.PRESETTLE, terminal))]
        pays = [None] + [SeedLock(Kind.PAYMENT, holder, False, completing, version=bound)
                         for holder, completing in ((terminal, False), (session, False), (session, True),
                                                    (HOLDERS[1], False))]
        cases += [
            Case(tuple(l for l in (edit, pay) if l), actor, action, force, True, expected)
            for edit, pay, actor, action, force, expected
            in itertools.product(edits, pays, (terminal, session), LOCK_ACTIONS, (False, True), EXPECTED)
        ]
    cases += [Case((), actor, action, False, False, expected)
              for actor, action, expected in itertools.product(HOLDERS, LOCK_ACTIONS, EXPECTED)]
    return cases


# --- what the pure rules say ----------------------------------------------------------------


@dataclass
class Outcome:
    """What one acquire did, in terms both sides can state: reply, locks left, events."""

    # ("granted", kind, fence, enforced, ms, version) | ("denied", code, force_allowed, fence)
    reply: tuple[Any, ...]
    remaining: dict[str, int]               # slot -> fence of the lock stored there
    events: list[tuple[str, int, str]]      # (name, fence of data.lock, reason | forcer | "")


def holder_key(holder: dict[str, Any]) -> str:
    """The identity the rules compare holders by."""
    actor = rules_actor(holder)
    return f"{actor.role}:{actor.id}"


def expected(case: Case, now: int) -> Outcome:
    """The outcome ``rules.decide`` prescribes for ``case`` at Redis time ``now``."""
    stored = {seed.slot: seed.stored(ORDER_ID, now) for seed in case.locks}
    views = [(slot, held_lock(lock)) for slot, lock in stored.items()]
    d: Decision = decide([v for _, v in views], rules_actor(case.actor), case.action,
                         now=now, force=case.force, enforced=case.enforced,
                         version=STORED, expected_version=case.expected_version)
    fence_of = {id(v): stored[slot]["fence"] for slot, v in views}
    slot_of = {id(v): slot for slot, v in views}
    untouched = {slot: lock["fence"] for slot, lock in stored.items()}
    new_grant = ("granted", d.kind.value if d.kind else None, START_FENCE + 1, d.enforced,
                 DEFAULTS.lock_seconds(d.kind, case.actor["role"]) * 1000 if d.kind else None, d.version)

    if not d.allowed and d.code is Code.FORBIDDEN:
        return Outcome(("denied", Code.FORBIDDEN.value, False, None), untouched, [])
    if not d.enforced:
        return Outcome(new_grant, untouched, [])

    events = [("lock.expired", fence_of[id(l)], "") for l in d.expired]
    expired = {id(l) for l in d.expired}
    remaining = {slot: fence_of[id(v)] for slot, v in views if id(v) not in expired}
    if not d.allowed:
        reported = fence_of[id(d.reported)] if d.reported is not None else None
        return Outcome(("denied", d.code.value, d.force_allowed, reported), remaining, events)
    if d.reuse is not None:
        return Outcome(("granted", d.kind.value, fence_of[id(d.reuse)], True, 2 * MARGIN_MS, d.reuse.version),
                       remaining, events)
    if d.rebinds is not None:
        events.append(("lock.released", fence_of[id(d.rebinds)], "released"))
        del remaining[slot_of[id(d.rebinds)]]
    if d.converts is not None:
        events.append(("lock.released", fence_of[id(d.converts)], "converted"))
        del remaining[slot_of[id(d.converts)]]
    for broken in d.breaks:
        events.append(("lock.forced", fence_of[id(broken)], holder_key(case.actor)))
        del remaining[slot_of[id(broken)]]
    events.append(("lock.acquired", START_FENCE + 1, ""))
    remaining[SLOT[d.kind]] = START_FENCE + 1
    return Outcome(new_grant, remaining, events)


# --- what Redis does ------------------------------------------------------------------------


async def seed(engine: LockEngine, store_id: str, case: Case, now: int) -> None:
    """Write the case's order, config and locks straight into Redis."""
    await engine.put_order(store_id, ORDER, HOLDERS[0])
    await engine.redis.hset(keys.order(store_id, ORDER_ID), "fence", START_FENCE)
    if not case.enforced:
        await engine.redis.hset(keys.config(store_id), "strong_link_enabled", "false")
    if case.locks:
        await engine.redis.hset(keys.locks(store_id, ORDER_ID), mapping={
            seed.slot: compact(seed.stored(ORDER_ID, now)) for seed in case.locks
        })


async def events_after(redis: AnyRedis, store_id: str, seq: int) -> list[dict[str, Any]]:
    """The store's events with seq > ``seq``, from its stream."""
    entries = await redis.xrange(keys.events(store_id), min=f"0-{seq + 1}")
    return [json.loads(fields[b"e"]) for _, fields in entries]


def event_summary(event: dict[str, Any]) -> tuple[str, int, str]:
    """(name, fence of data.lock, reason | forcer | "") of one event."""
    data = event["data"]
    extra = data.get("reason") or (holder_key(data["by"]) if "by" in data else "")
    return event["name"], data["lock"]["fence"], extra


async def observed(engine: LockEngine, store_id: str, case: Case) -> Outcome:
    """Run acquire for ``case`` on the seeded store and describe what happened."""
    before = await engine.seq(store_id)
    kind = ACTION_KIND[case.action]
    try:
        lock, enforced = await engine.acquire(store_id, ORDER_ID, case.actor, kind, force=case.force,
                                              expected_version=case.expected_version)
        assert lock["holder"] == case.actor and lock["token"]
        duration = lock["expires_at"] - lock["acquired_at"]
        reply: tuple[Any, ...] = ("granted", lock["kind"], lock["fence"], enforced, duration, lock["version"])
    except LockConflict as denied:
        assert denied.lock is not None and "token" not in denied.lock
        reply = ("denied", denied.code, denied.force_allowed, denied.lock["fence"])
    except TablelockError as denied:  # FORBIDDEN, STALE_VERSION: no lock to report
        assert denied.lock is None
        reply = ("denied", denied.code, denied.force_allowed, None)
    raw = await engine.redis.hgetall(keys.locks(store_id, ORDER_ID))
    remaining = {slot.decode(): json.loads(value)["fence"] for slot, value in raw.items()}
    events = [event_summary(e) for e in await events_after(engine.redis, store_id, before)]
    return Outcome(reply, remaining, events)


async def test_acquire_agrees_with_decide_on_every_state(redis_client: AnyRedis, uid: str) -> None:
    """For every generated case acquire.lua grants, denies, reaps, converts and forces as decide does."""
    engine = LockEngine(redis_client, defaults=DEFAULTS, token_source=lambda: NEW_TOKEN)
    cases = all_cases()
    gate = asyncio.Semaphore(CONCURRENCY)

    async def disagreement(n: int, case: Case) -> str | None:
        async with gate:  # each case has its own store, so cases may run side by side
            store_id = f"{uid}-{n}"
            now = await engine.now()
            await seed(engine, store_id, case, now)
            want, got = expected(case, now), await observed(engine, store_id, case)
        return None if want == got else f"case {n}: {case}\n  rules: {want}\n  redis: {got}"

    failures = [f for f in await asyncio.gather(*map(disagreement, itertools.count(), cases)) if f]
    assert not failures, f"{len(failures)} of {len(cases)} cases disagree:\n" + "\n".join(failures[:20])


def test_the_cases_cover_every_decision() -> None:
    """The generated cases reach every kind of outcome, so agreement is not agreement on a corner."""
    now = 1_700_000_000_000
    seen = set()
    for case in all_cases():
        d = expected(case, now)
        reply = d.reply
        names = frozenset(reason if name == "lock.released" else name for name, _, reason in d.events)
        seen.add(reply[0])
        seen.add(reply[1] if reply[0] == "denied" else ("reuse" if reply[2] != START_FENCE + 1 else "new"))
        seen |= names
        if reply[0] == "denied" and reply[1] not in ("FORBIDDEN", "STALE_VERSION"):
            seen.add(("force_allowed", reply[2]))
        if reply[0] == "granted":
            seen.add(("bound to", reply[5] - STORED))
    assert seen >= {
        "granted", "denied", "new", "reuse", "ORDER_LOCKED", "PAYMENT_LOCKED", "PRESETTLED", "FORBIDDEN",
        "STALE_VERSION", "lock.expired", "converted", "released", "lock.forced", "lock.acquired",
        ("force_allowed", True), ("force_allowed", False),
        ("bound to", -1), ("bound to", 0), ("bound to", 1),
    }
