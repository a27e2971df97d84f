"""share_claim.lua on a real Redis (single node and cluster) decides exactly as the pure ``shares.claim_share``.

Cases are generated (seeded, so a failure repeats): an order with lines, a line discount and a
service charge; an edit-slot lock or none, a whole-order payment lock or none; up to three share
locks (live or expired, among four holders) and up to two paid shares; an actor; a share asked
for (lines, parts, amount, rest — valid or not); an expected version or none. Each case is
written into Redis as the scripts store it, ``ShareBook.claim`` runs, and the reply, the locks
left and the events emitted must be what ``claim_share`` prescribes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from dataclasses import dataclass
from typing import Any

from coordinator.core.errors import LockConflict, TablelockError
from coordinator.core.models import OrderIn, StoreConfig
from coordinator.core.rules import Kind
from coordinator.core.shares import HeldShare, OrderDue, ShareKind, ShareSpec, claim_share, line_amounts
from coordinator.store import keys
from coordinator.store.engine import LockEngine, compact, held_lock, rules_actor
from coordinator.store.redis_conn import AnyRedis
from coordinator.store.share_book import ShareBook, spec_json
from tests.support.app import order_body

HOLDERS: tuple[dict[str, Any], ...] = (
    {"role": "erp", "terminal_id": "TA", "name": "收银台"},
    {"role": "erp", "terminal_id": "TB", "name": "服务员B"},
    {"role": "h5", "session_id": "h1"},
    {"role": "h5", "session_id": "h2"},
)
MARGIN_MS = 600_000
START_FENCE = 9_000_000_000_000
NEW_FENCE = START_FENCE + 1
STORED = 5
CASES = 3000
CONCURRENCY = 8  # cases in flight; more only opens more connections, which time out on a loaded 2-core machine
DEFAULTS = StoreConfig()
ITEMS = [
    {"line_id": "l1", "sku": "tea", "name": "茶", "qty": 2, "unit_price_cents": 900, "source": "erp"},
    {"line_id": "l2", "sku": "fish", "name": "鱼", "qty": 1, "unit_price_cents": 2000, "source": "h5"},
    {"line_id": "l3", "sku": "rice", "name": "饭", "qty": 1, "unit_price_cents": 1001, "source": "erp"},
]
ADJUSTMENTS = [{"kind": "discount", "amount_cents": -100, "line_id": "l2"},
               {"kind": "service_charge", "amount_cents": 500}]
ORDER = OrderIn.model_validate(order_body(version=STORED, items=ITEMS)
                               | {"adjustments": ADJUSTMENTS, "total_cents": 5201})
DUE = OrderDue(ORDER.total_cents, STORED, line_amounts(ITEMS, ADJUSTMENTS))
ORDER_ID = ORDER.order_id


def random_spec(rng: random.Random) -> ShareSpec:
    """A share to ask for: mostly valid, sometimes not."""
    kind = rng.choice(list(ShareKind))
    if kind is ShareKind.LINES:
        ids = rng.sample(["l1", "l2", "l3", "l9"], rng.choice([1, 1, 2, 3]))
        return ShareSpec(kind, line_ids=tuple(ids + (ids[:1] if rng.random() < 0.05 else [])))
    if kind is ShareKind.PARTS:
        n = rng.choice([2, 3, 4, 4, 4])
        return ShareSpec(kind, parts=n, part=rng.randint(1, n + (1 if rng.random() < 0.1 else 0)))
    if kind is ShareKind.AMOUNT:
        return ShareSpec(kind, amount_cents=rng.choice([1, 500, 1300, 2600, 5201, 6000]))
    return ShareSpec(kind)


@dataclass(frozen=True)
class Case:
    """One generated case."""

    edit: tuple[str, int, bool] | None        # (kind, holder index, expired)
    pay: tuple[int, bool] | None              # (holder index, expired) of a whole-order payment lock
    shares: tuple[tuple[ShareSpec, int, bool, bool], ...]  # (spec, holder index, expired, paid)
    actor: int
    spec: ShareSpec
    expected_version: int | None


def cases() -> list[Case]:
    """CASES generated cases (seed 13)."""
    rng = random.Random(13)
    out = []
    for _ in range(CASES):
        edit = rng.choice([None, None, None, ("order", 0, False), ("order", 1, False), ("order", 1, True),
                           ("presettle", 1, False)])
        pay = rng.choice([None] * 6 + [(0, False), (2, False), (3, True)])
        shares = tuple((random_spec(rng), rng.randrange(4), rng.random() < 0.2, rng.random() < 0.3)
                       for _ in range(rng.choice([0, 1, 1, 2, 2, 3])))
        out.append(Case(edit, pay, shares, rng.randrange(4), random_spec(rng),
                        rng.choice([None, None, STORED - 1, STORED])))
    return out


@dataclass
class Seeded:
    """The case written as the scripts store it: locks by slot, paid shares, amounts of the shares."""

    locks: dict[str, dict[str, Any]]
    paid: list[dict[str, Any]]


def amount_of(spec: ShareSpec) -> int:
    """A seeded share's amount (what it was resolved to when claimed): the pure rule on a free order."""
    d = claim_share(DUE, spec, rules_actor(HOLDERS[0]), locks=[], shares=[], now=0)
    return d.amount_cents if d.allowed else 100


def seeded(case: Case, now: int) -> Seeded:
    """The locks (slot -> lock JSON) and paid shares of ``case`` at Redis time ``now``."""
    def lock(kind: str, holder: int, expired: bool, fence: int, share: dict | None = None) -> dict[str, Any]:
        expires_at = now - MARGIN_MS if expired else now + MARGIN_MS
        out = {"kind": kind, "order_id": ORDER_ID, "table_id": "T1", "holder": HOLDERS[holder], "fence": fence,
               "version": STORED, "acquired_at": expires_at - 2 * MARGIN_MS, "expires_at": expires_at,
               "token": f"token-{fence}", "completing": False}
        return out | ({"share": share} if share else {})

    locks: dict[str, dict[str, Any]] = {}
    if case.edit:
        locks["edit"] = lock(case.edit[0], case.edit[1], case.edit[2], 1)
    if case.pay:
        locks["pay"] = lock("payment", case.pay[0], case.pay[1], 2)
    paid = []
    for i, (spec, holder, expired, is_paid) in enumerate(case.shares):
        share = json.loads(spec_json(spec)) | {"amount_cents": amount_of(spec)}
        if is_paid:
            paid.append(share | {"fence": 10 + i})
        else:
            locks[f"share:{10 + i}"] = lock("payment", holder, expired, 10 + i, share)
    return Seeded(locks, paid)


def slot_order(slots: list[str]) -> list[str]:
    """Slots in the scripts' cause order: edit, pay, then shares by fence."""
    rank = {"edit": 0, "pay": 1}
    return sorted(slots, key=lambda s: (rank.get(s, 2), int(s.split(":")[1]) if ":" in s else 0))


def spec_of(share: dict[str, Any]) -> ShareSpec:
    """A stored share's spec."""
    return ShareSpec(ShareKind(share["kind"]), line_ids=tuple(share.get("line_ids", ())),
                     parts=share.get("parts", 0), part=share.get("part", 0),
                     amount_cents=share["amount_cents"] if share["kind"] == "amount" else 0)


def expected(case: Case, now: int) -> tuple[Any, dict[str, int], list[tuple[str, int, str]]]:
    """(reply, slot -> fence left, events) as ``claim_share`` prescribes."""
    seed = seeded(case, now)
    locks = [held_lock(seed.locks[s]) for s in ("edit", "pay") if s in seed.locks]
    shares = [HeldShare(spec_of(l["share"]), l["share"]["amount_cents"], rules_actor(l["holder"]), l["expires_at"])
              for s, l in seed.locks.items() if s.startswith("share:")]
    shares += [HeldShare(spec_of(p), p["amount_cents"], rules_actor(HOLDERS[0]), 0, paid=True) for p in seed.paid]
    d = claim_share(DUE, case.spec, rules_actor(HOLDERS[case.actor]), locks=locks, shares=shares, now=now,
                    expected_version=case.expected_version)
    events = [("lock.expired", seed.locks[s]["fence"], "") for s in slot_order(list(seed.locks))
              if seed.locks[s]["expires_at"] <= now]
    remaining = {s: l["fence"] for s, l in seed.locks.items() if l["expires_at"] > now}
    if not d.allowed:
        reported = None
        if d.reported is not None:
            reported = next(l["fence"] for s, l in seed.locks.items() if s in ("edit", "pay") and held_lock(l) == d.reported)
        return ("denied", d.code.value, reported), remaining, events
    if d.reuse is not None:
        fence = next(l["fence"] for s, l in seed.locks.items()
                     if s.startswith("share:") and l["expires_at"] > now and rules_actor(l["holder"]) == d.reuse.holder)
        return ("granted", fence, d.amount_cents), remaining, events
    if d.converts is not None:
        events.append(("lock.released", 1, "converted"))
        del remaining["edit"]
    events.append(("lock.acquired", NEW_FENCE, ""))
    remaining[f"share:{NEW_FENCE}"] = NEW_FENCE
    return ("granted", NEW_FENCE, d.amount_cents), remaining, events


async def seed_redis(engine: LockEngine, store_id: str, case: Case, now: int) -> None:
    """Write the case's order, paid shares and locks straight into Redis."""
    await engine.put_order(store_id, ORDER, HOLDERS[0])
    seed = seeded(case, now)
    fields: dict[str, Any] = {"fence": START_FENCE}
    if seed.paid:
        fields |= {"shares": compact(seed.paid), "paid_cents": sum(p["amount_cents"] for p in seed.paid)}
    await engine.redis.hset(keys.order(store_id, ORDER_ID), mapping=fields)
    if seed.locks:
        await engine.redis.hset(keys.locks(store_id, ORDER_ID),
                                mapping={s: compact(l) for s, l in seed.locks.items()})


async def observed(book: ShareBook, store_id: str, case: Case) -> tuple[Any, dict[str, int], list]:
    """Run the claim and describe what happened."""
    redis = book.engine.redis
    before = await book.engine.seq(store_id)
    try:
        lock, _ = await book.claim(store_id, ORDER_ID, HOLDERS[case.actor], case.spec,
                                   expected_version=case.expected_version)
        assert lock["holder"] == HOLDERS[case.actor] and lock["token"] and lock["kind"] == "payment"
        reply: tuple[Any, ...] = ("granted", lock["fence"], lock["share"]["amount_cents"])
    except LockConflict as denied:
        assert denied.lock is not None and "token" not in denied.lock and not denied.force_allowed
        reply = ("denied", denied.code, denied.lock["fence"])
    except TablelockError as denied:
        reply = ("denied", denied.code, None)
    raw = await redis.hgetall(keys.locks(store_id, ORDER_ID))
    remaining = {s.decode(): json.loads(v)["fence"] for s, v in raw.items()}
    entries = await redis.xrange(keys.events(store_id), min=f"0-{before + 1}")
    events = []
    for _, fields in entries:
        e = json.loads(fields[b"e"])
        events.append((e["name"], e["data"]["lock"]["fence"], e["data"].get("reason", "")))
    return reply, remaining, events


async def test_share_claim_agrees_with_claim_share(redis_client: AnyRedis, uid: str) -> None:
    """For every generated case share_claim.lua grants, refuses, reaps and converts as claim_share does."""
    engine = LockEngine(redis_client, defaults=DEFAULTS, token_source=lambda: "new-token")
    book = ShareBook(engine)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def disagreement(n: int, case: Case) -> str | None:
        async with gate:
            store_id = f"{uid}-{n}"
            now = await engine.now()
            await seed_redis(engine, store_id, case, now)
            want, got = expected(case, now), await observed(book, store_id, case)
        return None if want == got else f"case {n}: {case}\n  pure:  {want}\n  redis: {got}"

    all_cases = cases()
    failures = [f for f in await asyncio.gather(*map(disagreement, itertools.count(), all_cases)) if f]
    assert not failures, f"{len(failures)} of {len(all_cases)} disagree:\n" + "\n".join(failures[:10])


def test_the_cases_cover_every_outcome() -> None:
    """The generated cases reach every refusal code, reuse, conversion and a fresh grant of every kind."""
    now = 1_700_000_000_000
    seen = set()
    for case in cases():
        reply, _, events = expected(case, now)
        seen.add(reply[1] if reply[0] == "denied" else ("new-" + case.spec.kind if reply[1] == NEW_FENCE else "reuse"))
        seen.update(reason for _, _, reason in events if reason)
    assert seen >= {"ORDER_LOCKED", "PAYMENT_LOCKED", "STALE_VERSION", "VALIDATION_ERROR", "SHARE_TAKEN",
                    "SHARE_EXCEEDS", "reuse", "converted", "new-lines", "new-parts", "new-amount", "new-rest"}
