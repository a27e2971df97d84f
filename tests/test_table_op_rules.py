"""table_op.lua "begin" on a real Redis (single node and cluster) decides a move or merge exactly as
the pure ``core.table_ops.decide_table_op``, over generated cases: one or two orders, each with its
edit slot (free, an order lock by the asker or another terminal, a presettle lock) and pay slot
(free, a terminal's or a diner's payment lock, phase claimed / in_flight / completing or marked
completing), live or expired, a share paid or not, split-bill share locks (slots ``share:<fence>``,
claimed / in_flight / completing, a diner's or a terminal's, live or expired) instead of the
whole-order payment lock, with and without force. Each case is written into Redis,
``TableOps.begin`` runs on it, and the reply (code, force_allowed, the lock reported), the locks
broken and the refunds opened must be what the twin says."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

from coordinator.core.errors import TablelockError
from coordinator.core.models import OrderIn, StoreConfig
from coordinator.core.rules import Kind
from coordinator.core.table_ops import OrderState, ShareHold, TableOpDecision, decide_table_op
from coordinator.store import keys
from coordinator.store.engine import LockEngine, compact, held_lock, rules_actor
from coordinator.store.tableops import TableOps
from tests.support.app import order_body

A = {"role": "erp", "terminal_id": "TA", "name": "收银台"}
B = {"role": "erp", "terminal_id": "TB", "name": "服务员B"}
H = {"role": "h5", "session_id": "h1"}
H2 = {"role": "h5", "session_id": "h2"}
MARGIN_MS = 600_000
EDITS = (None, ("order", A), ("order", B), ("presettle", A), ("presettle", B))
PAYS = (None, (B, None, False), (H, "claimed", False), (H, "in_flight", False), (H, "completing", True),
        (B, None, True))
#: A share lock: (holder, phase, completing); its phase as pay_start / pay_capture leave it.
SHARES = ((H, None, False), (H, "claimed", False), (H2, "in_flight", False), (H2, "completing", True),
          (A, None, False), (B, None, True))
CASES = 400


def order_cases(rng: random.Random) -> dict[str, Any]:
    """One order's generated state."""
    shares = [rng.choice(SHARES) for _ in range(rng.choice((0, 0, 1, 2, 3)))]
    # A whole-order payment excludes every share (SPEC §10): an order has one or the other.
    return {"edit": rng.choice(EDITS), "pay": None if shares else rng.choice(PAYS), "paid": rng.choice((0, 0, 500)),
            "expired": (rng.random() < 0.2, rng.random() < 0.2), "shares": shares,
            "shares_expired": [rng.random() < 0.2 for _ in shares]}


def stored_lock(kind: str, holder: dict, order_id: str, now: int, expired: bool, fence: int, **extra: Any) -> dict:
    """A lock in the shape the scripts store."""
    # Each lock expires at its own ms (+ fence), so the lock a denial reports is known by its expires_at.
    return {"kind": kind, "order_id": order_id, "table_id": "T1", "holder": holder, "fence": fence, "version": 1,
            "acquired_at": now - 1000, "expires_at": now + (-MARGIN_MS if expired else MARGIN_MS) + fence,
            "token": f"tok-{order_id}-{kind}", "completing": False, **extra}


async def seed(engine: LockEngine, store: str, order_id: str, case: dict, now: int) -> OrderState:
    """Write the order and its locks into Redis; the twin's view of it."""
    await engine.put_order(store, OrderIn.model_validate(order_body(order_id)), A)
    redis = engine.redis
    if case["paid"]:
        key = keys.order(store, order_id)
        body = json.loads(await redis.hget(key, "json"))
        await redis.hset(key, "json", compact({**body, "paid_cents": case["paid"]}))
    locks = []
    phase = None
    if case["edit"]:
        kind, holder = case["edit"]
        lock = stored_lock(kind, holder, order_id, now, case["expired"][0], 1)
        await redis.hset(keys.locks(store, order_id), "edit", compact(lock))
        locks.append(lock)
    if case["pay"]:
        holder, phase, completing = case["pay"]
        extra = {"completing": completing} | ({"phase": phase} if phase else {})
        lock = stored_lock("payment", holder, order_id, now, case["expired"][1], 2, **extra)
        await redis.hset(keys.locks(store, order_id), "pay", compact(lock))
        locks.append(lock)
    shares = []
    for n, ((who, share_phase, completing), expired) in enumerate(zip(case.get("shares", ()), case.get("shares_expired", ()))):
        fence = 3 + n
        extra = {"completing": completing, "share": {"kind": "amount", "amount_cents": 100 + n}}
        lock = stored_lock("payment", who, order_id, now, expired, fence, **extra,
                           **({"phase": share_phase} if share_phase else {}))
        lock["token"] += f"-share{fence}"
        await redis.hset(keys.locks(store, order_id), f"share:{fence}", compact(lock))
        shares.append(ShareHold(held_lock(lock), share_phase))
        locks.append(lock)
    if locks:
        await redis.zadd(keys.active(store), {order_id: min(l["expires_at"] for l in locks)})
    live_pay = case["pay"] and not case["expired"][1]
    whole = [held_lock(l) for l in locks if not l.get("share")]
    return OrderState(order_id, tuple(whole), phase if live_pay else None, case["paid"], tuple(shares))


async def run_case(engine: LockEngine, store: str, cases: list[dict], force: bool) -> None:
    """Seed, run begin, compare with the twin."""
    now = await engine.now()
    ids = [f"o{i + 1}" for i in range(len(cases))]
    states = [await seed(engine, store, order_id, case, now) for order_id, case in zip(ids, cases)]
    expected: TableOpDecision = decide_table_op(states, rules_actor(A), now=now, force=force)
    before = await engine.seq(store)
    try:
        reply = await TableOps(engine).begin(store, "move", ids, A, force=force)
    except TablelockError as error:
        assert not expected.allowed, (cases, force, error.code)
        assert (error.code, error.force_allowed) == (expected.code, expected.force_allowed), (cases, force)
        reported = None if expected.reported is None else expected.reported.kind.value
        assert (error.lock or {}).get("kind") == reported, (cases, force)
        if expected.reported is not None:
            assert error.lock["expires_at"] == expected.reported.expires_at, (cases, force)
        return
    assert expected.allowed, (cases, force, expected)
    events = [json.loads(f[b"e"]) for _, f in await engine.redis.xrange(keys.events(store), f"0-{before + 1}", "+")]
    forced = [(e["order_id"], e["data"]["lock"]["kind"], e["data"]["lock"]["expires_at"])
              for e in events if e["name"] == "lock.forced"]
    assert forced == [(o, l.kind.value, l.expires_at) for o, l in expected.breaks], (cases, force)
    refunds = [(r["order_id"], r["reason"]) for r in reply.get("refunds") or []]
    assert sorted(refunds) == sorted(expected.refunds), (cases, force)
    assert [o["order_id"] for o in reply["orders"] if o["reused"]] == list(expected.reuse)
    for order_id in ids:
        _, locks = await engine.get_order(store, order_id)
        edits = [l for l in locks if l["kind"] in (Kind.ORDER, Kind.PRESETTLE)]
        assert len(edits) == 1 and edits[0]["kind"] == "order" and edits[0]["holder"]["terminal_id"] == "TA"
        # Granted, no payment lock is left beside the operation's order lock: a claimed share was broken.
        assert [l for l in locks if l["kind"] == Kind.PAYMENT] == [], (cases, force)


async def test_begin_agrees_with_the_pure_twin(redis_client, uid):
    """Over generated one- and two-order cases, table_op.lua begin and decide_table_op agree on everything."""
    engine = LockEngine(redis_client, defaults=StoreConfig())
    rng = random.Random(11)
    jobs = []
    for n in range(CASES):
        cases = [order_cases(rng) for _ in range(rng.choice((1, 2)))]
        jobs.append((f"tw-{uid}-{n}", cases, rng.random() < 0.5))
    for start in range(0, len(jobs), 32):
        batch = jobs[start:start + 32]
        await asyncio.gather(*(run_case(engine, store, cases, force) for store, cases, force in batch))


def test_the_twin_by_hand():
    """A few cells pinned literally: free → allowed; share paid → SHARE_PAID forceable with a refund when forced."""
    actor = rules_actor(A)
    free = OrderState("o1", ())
    assert decide_table_op([free], actor, now=0).allowed
    paid = OrderState("o1", (), paid_cents=100)
    denied = decide_table_op([paid], actor, now=0)
    assert (denied.allowed, denied.code, denied.force_allowed) == (False, "SHARE_PAID", True)
    forced = decide_table_op([paid], actor, now=0, force=True)
    assert forced.allowed and forced.refunds == (("o1", "share_paid"),)
    assert decide_table_op([free], rules_actor(H), now=0).code == "FORBIDDEN"


def test_legacy_mode_ignores_locks_but_not_a_paid_share():
    """With strong linking off a lock refuses nothing, while a paid share still does."""
    actor = rules_actor(A)
    other = held_lock(stored_lock("order", B, "o1", 0, False, 1))
    assert decide_table_op([OrderState("o1", (other,))], actor, now=0, enforced=False).allowed
    assert not decide_table_op([OrderState("o1", (other,))], actor, now=0).allowed
    paid = decide_table_op([OrderState("o1", (other,), paid_cents=5)], actor, now=0, enforced=False)
    assert (paid.allowed, paid.code) == (False, "SHARE_PAID")
