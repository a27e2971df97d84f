"""LockEngine on a real Redis (single node and cluster): fencing, expiry, payments, orders, events.

No sweeper runs here: whatever must happen at expiry has to happen in the scripts themselves.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable

import pytest

from coordinator.core.errors import (
    LockConflict,
    NotFound,
    OrderClosed,
    StaleVersion,
    TablelockError,
)
from coordinator.core.models import OrderIn, StoreConfig
from coordinator.core.rules import Kind
from coordinator.store import keys
from coordinator.store.engine import LockEngine
from coordinator.store.redis_conn import AnyRedis
from tests.support.app import order_body

A = {"role": "erp", "terminal_id": "TA", "name": "收银台"}
B = {"role": "erp", "terminal_id": "TB", "name": "服务员B"}
H = {"role": "h5", "session_id": "h1"}
TOTAL = 3800  # order_body()'s total


def erp(n: int) -> dict[str, Any]:
    """ERP terminal number ``n``."""
    return {"role": "erp", "terminal_id": f"T{n}", "name": f"终端{n}"}


def h5(n: int) -> dict[str, Any]:
    """H5 session number ``n``."""
    return {"role": "h5", "session_id": f"h{n}"}


@pytest.fixture
def engine(redis_client: AnyRedis) -> LockEngine:
    """A lock engine on the test Redis with the default store configuration."""
    return LockEngine(redis_client, defaults=StoreConfig())


@pytest.fixture
def store(uid: str) -> str:
    """A store id of this test alone."""
    return f"s-{uid}"


async def put(engine: LockEngine, store: str, order_id: str = "o1", **fields: Any) -> tuple[dict, bool]:
    """Push an order as the ERP would (order_body() with ``fields`` changed)."""
    return await engine.put_order(store, OrderIn.model_validate(order_body(order_id, **fields)), A)


async def set_config(engine: LockEngine, store: str, **values: Any) -> None:
    """Store configuration values the way the admin's PATCH does (JSON per key)."""
    await engine.redis.hset(keys.config(store), mapping={k: json.dumps(v) for k, v in values.items()})


async def events(engine: LockEngine, store: str, after: int = 0) -> list[dict[str, Any]]:
    """The store's events with seq > ``after``, read back from its stream."""
    entries = await engine.redis.xrange(keys.events(store), min=f"0-{after + 1}")
    return [json.loads(fields[b"e"]) for _, fields in entries]


async def names(engine: LockEngine, store: str, after: int = 0) -> list[str]:
    """Event names with a lock.released reason attached: ``lock.released{paid}``."""
    out = []
    for e in await events(engine, store, after):
        reason = e["data"].get("reason") if e["name"] in ("lock.released", "lock.renewed") else None
        out.append(f"{e['name']}{{{reason}}}" if reason else e["name"])
    return out


async def stored_locks(engine: LockEngine, store: str, order_id: str = "o1") -> dict[str, dict]:
    """slot -> the lock JSON stored there (expired or not)."""
    raw = await engine.redis.hgetall(keys.locks(store, order_id))
    return {slot.decode(): json.loads(value) for slot, value in raw.items()}


async def sleep_until(engine: LockEngine, at_ms: int) -> None:
    """Wait until the Redis clock has reached ``at_ms``."""
    while (now := await engine.now()) < at_ms:
        await asyncio.sleep((at_ms - now) / 1000 + 0.005)


async def outcome(call: Awaitable[Any]) -> Any:
    """The result of ``call``, or the TablelockError it raised."""
    try:
        return await call
    except TablelockError as error:
        return error


async def pay(engine: LockEngine, store: str, lock: dict, actor: dict, *, order_id: str = "o1",
              amount: int = TOTAL, version: int = 1, ref: str = "ref-1", token: str | None = None) -> dict:
    """Complete a terminal's own payment against ``lock`` (its token unless another is given)."""
    return await engine.complete(
        store, order_id, actor, token=lock["token"] if token is None else token, amount_cents=amount,
        version=version, payment_ref=ref,
    )


async def mark_completing(engine: LockEngine, store: str, order_id: str = "o1", *,
                          expires_at: int | None = None) -> dict:
    """Mark the order's payment lock completing as pay_capture.lua does when a provider's money arrives
    (its lock JSON: completing, phase, payment_ref, amount; the deadline a year out unless given)."""
    lock = (await stored_locks(engine, store, order_id))["pay"]
    lock.update(completing=True, phase="completing", payment_ref="wechatpay:tx-1", amount_cents=TOTAL,
                expires_at=expires_at if expires_at is not None else await engine.now() + 365 * 86_400_000)
    await engine.redis.hset(keys.locks(store, order_id), "pay", json.dumps(lock, separators=(",", ":")))
    return lock


# --- fencing --------------------------------------------------------------------------------


async def test_fence_strictly_increases_across_kinds_and_forced_breaks(engine: LockEngine, store: str) -> None:
    """Every grant on an order, of any kind, converted or forcing, carries a larger fence than the last."""
    await put(engine, store)
    fences = []

    async def grant(actor: dict, kind: Kind, force: bool = False) -> dict:
        lock, _ = await engine.acquire(store, "o1", actor, kind, force=force)
        fences.append(lock["fence"])
        return lock

    for _ in range(15):
        mine = await grant(A, Kind.ORDER)
        await grant(B, Kind.ORDER, force=True)               # breaks A's order lock
        await grant(B, Kind.PRESETTLE)                       # converts B's order lock
        await grant(H, Kind.PAYMENT)                         # coexists with the presettle lock
        paying = await grant(A, Kind.PAYMENT, force=True)    # breaks H's payment lock
        again, _ = await engine.acquire(store, "o1", A, Kind.PAYMENT)
        assert again["fence"] == paying["fence"] and again["token"] == paying["token"]
        last = await grant(A, Kind.ORDER, force=True)        # breaks B's presettle and its own payment
        assert not await engine.release(store, "o1", Kind.ORDER, mine["token"], A)
        assert await engine.release(store, "o1", Kind.ORDER, last["token"], A)
    assert fences == sorted(set(fences)) and len(fences) == 90
    forced = [e for e in await events(engine, store) if e["name"] == "lock.forced"]
    assert len(forced) == 15 * 4


# --- expiry ---------------------------------------------------------------------------------


async def test_expired_lock_never_blocks_without_a_sweeper(engine: LockEngine, store: str) -> None:
    """An H5 payment lock past expires_at lets the next payer in at once, announced by one lock.expired."""
    await set_config(engine, store, h5_payment_lock_seconds=1)
    await put(engine, store)
    diner, _ = await engine.acquire(store, "o1", H, Kind.PAYMENT)
    assert diner["expires_at"] - diner["acquired_at"] == 1000
    denied = await outcome(engine.acquire(store, "o1", A, Kind.PAYMENT))
    assert isinstance(denied, LockConflict) and denied.code == "PAYMENT_LOCKED"

    await sleep_until(engine, diner["expires_at"])
    before = await engine.seq(store)
    lock, _ = await engine.acquire(store, "o1", A, Kind.PAYMENT)
    assert lock["holder"] == A
    assert await names(engine, store, before) == ["lock.expired", "lock.acquired"]
    assert (await events(engine, store, before))[0]["data"]["lock"]["fence"] == diner["fence"]


async def test_a_lock_expiring_now_does_not_block(engine: LockEngine, store: str) -> None:
    """A lock whose expires_at is the Redis time already is past: it is reaped, not obeyed."""
    await put(engine, store)
    lock, _ = await engine.acquire(store, "o1", B, Kind.ORDER)
    lock["expires_at"] = await engine.now()
    await engine.redis.hset(keys.locks(store, "o1"), "edit", json.dumps(lock))
    mine, _ = await engine.acquire(store, "o1", A, Kind.ORDER)
    assert mine["holder"] == A


@pytest.mark.parametrize("racers", [2, 20])
async def test_racing_acquires_reap_an_expired_lock_exactly_once(engine: LockEngine, store: str, racers: int) -> None:
    """Payers racing for an order whose payment lock just expired: one wins, one lock.expired."""
    await set_config(engine, store, h5_payment_lock_seconds=1)
    await put(engine, store)
    diner, _ = await engine.acquire(store, "o1", H, Kind.PAYMENT)
    await sleep_until(engine, diner["expires_at"])
    before = await engine.seq(store)

    results = await asyncio.gather(
        *(outcome(engine.acquire(store, "o1", erp(n), Kind.PAYMENT)) for n in range(racers)),
        engine.expire(store, "o1"),
    )
    grants = [r for r in results[:-1] if isinstance(r, tuple)]
    denied = [r for r in results[:-1] if isinstance(r, LockConflict) and r.code == "PAYMENT_LOCKED"]
    assert len(grants) == 1 and len(denied) == racers - 1
    assert (await names(engine, store, before)).count("lock.expired") == 1


# --- payment completion ---------------------------------------------------------------------


async def test_self_completion_marks_paid_once_and_is_idempotent_on_payment_ref(engine: LockEngine, store: str) -> None:
    """An ERP's own completion pays the order in one step; the same payment_ref again is a replay."""
    await put(engine, store)
    lock, _ = await engine.acquire(store, "o1", A, Kind.PAYMENT)
    before = await engine.seq(store)

    first = await pay(engine, store, lock, A)
    assert first["paid"] and first["order"]["status"] == "paid" and not first.get("replay")
    assert await names(engine, store, before) == ["lock.released{paid}", "order.paid"]
    assert await stored_locks(engine, store) == {}

    after_paid = await engine.seq(store)
    replay = await pay(engine, store, lock, A)
    assert replay["replay"] and replay["order"] == first["order"]
    assert await engine.seq(store) == after_paid

    other_ref = await outcome(pay(engine, store, lock, A, ref="ref-2"))
    assert isinstance(other_ref, OrderClosed)
    assert await names(engine, store, after_paid) == ["payment.rejected"]
    closed = await outcome(engine.acquire(store, "o1", B, Kind.PAYMENT))
    assert isinstance(closed, OrderClosed)


# Each scenario sets up a completion that must be refused: (the lock presented, who presents it,
# what else is wrong with the completion).
Refusal = tuple[dict, dict, dict]


async def _stale_token(engine: LockEngine, store: str) -> Refusal:
    lock, _ = await engine.acquire(store, "o1", A, Kind.PAYMENT)
    assert await engine.release(store, "o1", Kind.PAYMENT, lock["token"], A)
    await engine.acquire(store, "o1", A, Kind.PAYMENT)  # A holds the order again, under a new token
    return lock, A, {}


async def _forced_token(engine: LockEngine, store: str) -> Refusal:
    lock, _ = await engine.acquire(store, "o1", A, Kind.PAYMENT)
    await engine.acquire(store, "o1", B, Kind.PAYMENT, force=True)
    return lock, A, {}


async def _foreign_token(engine: LockEngine, store: str) -> Refusal:
    lock, _ = await engine.acquire(store, "o1", B, Kind.PAYMENT)
    return lock, A, {}  # B's live token, presented by A


async def _expired_token(engine: LockEngine, store: str) -> Refusal:
    await set_config(engine, store, h5_payment_lock_seconds=1)
    lock, _ = await engine.acquire(store, "o1", H, Kind.PAYMENT)
    await sleep_until(engine, lock["expires_at"])
    return lock, H, {}


async def _wrong_version(engine: LockEngine, store: str) -> Refusal:
    lock, _ = await engine.acquire(store, "o1", A, Kind.PAYMENT)
    return lock, A, {"version": 2}


async def _order_changed(engine: LockEngine, store: str) -> Refusal:
    lock, _ = await engine.acquire(store, "o1", A, Kind.PAYMENT)
    await put(engine, store, version=2)  # same total, newer version: the lock is bound to v1
    return lock, A, {"version": 2}


async def _wrong_amount(engine: LockEngine, store: str) -> Refusal:
    lock, _ = await engine.acquire(store, "o1", A, Kind.PAYMENT)
    return lock, A, {"amount": TOTAL - 1}


@pytest.mark.parametrize(
    ("scenario", "code"),
    [
        (_stale_token, "LOCK_LOST"), (_forced_token, "LOCK_LOST"), (_foreign_token, "LOCK_LOST"),
        (_expired_token, "LOCK_LOST"), (_wrong_version, "STALE_VERSION"), (_order_changed, "STALE_VERSION"),
        (_wrong_amount, "AMOUNT_MISMATCH"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else v,
)
async def test_refused_completion_is_recorded_once(engine: LockEngine, store: str, scenario: Any, code: str) -> None:
    """A completion with a stale, forced-away, foreign or expired token, wrong version or amount is refused and recorded."""
    await put(engine, store)
    lock, payer, wrong = await scenario(engine, store)
    before = await engine.seq(store)
    refused = await outcome(pay(engine, store, lock, payer, **wrong))
    assert isinstance(refused, TablelockError) and refused.code == code
    rejected = [e for e in await events(engine, store, before) if e["name"] == "payment.rejected"]
    assert len(rejected) == 1 and rejected[0]["data"]["code"] == code
    assert "order.paid" not in await names(engine, store, before)
    order, _ = await engine.get_order(store, "o1")
    assert order["status"] == "open"


async def test_completing_payment_cannot_be_forced_or_released(engine: LockEngine, store: str) -> None:
    """A payment whose money arrived (completing, until the ERP confirms) refuses force (force_allowed
    false), its holder's release and a completion against it (PAYMENT_LOCKED)."""
    await put(engine, store)
    diner, _ = await engine.acquire(store, "o1", H, Kind.PAYMENT)
    await mark_completing(engine, store)

    for kind in (Kind.PAYMENT, Kind.ORDER, Kind.PRESETTLE):
        refused = await outcome(engine.acquire(store, "o1", B, kind, force=True))
        assert isinstance(refused, LockConflict) and refused.code == "PAYMENT_LOCKED"
        assert refused.force_allowed is False
    assert not await engine.release(store, "o1", Kind.PAYMENT, diner["token"], H)
    twice = await outcome(pay(engine, store, diner, H))
    assert isinstance(twice, LockConflict) and twice.code == "PAYMENT_LOCKED"
    assert (await stored_locks(engine, store))["pay"]["completing"] is True
    order, _ = await engine.get_order(store, "o1")
    assert order["status"] == "open"


# --- orders ---------------------------------------------------------------------------------


async def test_put_order_versions(engine: LockEngine, store: str) -> None:
    """A lower version or the same version with other content is refused; the same push again changes nothing."""
    await put(engine, store, version=2)
    before = await engine.seq(store)

    same, changed = await put(engine, store, version=2)
    assert changed is False and same["version"] == 2
    assert await engine.seq(store) == before

    lower = await outcome(put(engine, store, version=1))
    assert isinstance(lower, StaleVersion) and lower.order["version"] == 2
    other = [{"line_id": "l9", "sku": "beer", "name": "啤酒", "qty": 1, "unit_price_cents": 1500, "source": "erp"}]
    conflicting = await outcome(put(engine, store, version=2, items=other))
    assert isinstance(conflicting, StaleVersion) and conflicting.order == same
    assert await engine.seq(store) == before

    newer, changed = await put(engine, store, version=3, items=other)
    assert changed and newer["total_cents"] == 1500
    assert await names(engine, store, before) == ["order.updated"]


@pytest.mark.parametrize("status", ["paid", "cancelled"])
async def test_closing_an_order_releases_its_locks_first(engine: LockEngine, store: str, status: str) -> None:
    """An order the ERP closes ends every lock (order_closed) before order.updated, and takes no more locks."""
    await put(engine, store)
    await engine.acquire(store, "o1", B, Kind.PRESETTLE)
    await engine.acquire(store, "o1", H, Kind.PAYMENT)
    before = await engine.seq(store)
    order, _ = await put(engine, store, version=2, status=status)
    assert order["status"] == status
    assert await names(engine, store, before) == [
        "lock.released{order_closed}", "lock.released{order_closed}", "order.updated",
    ]
    assert await stored_locks(engine, store) == {}
    assert await engine.open_orders(store) == {}
    closed = await outcome(engine.acquire(store, "o1", A, Kind.ORDER))
    assert isinstance(closed, OrderClosed) and closed.order["status"] == status


async def test_a_closed_order_is_never_reopened_so_it_cannot_be_paid_twice(engine: LockEngine, store: str) -> None:
    """A newer version pushed as open on a paid order is ORDER_CLOSED, so no second payment lock can be taken."""
    await put(engine, store)
    lock, _ = await engine.acquire(store, "o1", A, Kind.PAYMENT)
    await engine.complete(store, "o1", A, token=lock["token"], amount_cents=TOTAL, version=1, payment_ref="p1")
    reopened = await outcome(put(engine, store, version=2))
    assert isinstance(reopened, OrderClosed) and reopened.order["status"] == "paid"
    assert isinstance(await outcome(engine.acquire(store, "o1", B, Kind.PAYMENT)), OrderClosed)
    order, changed = await put(engine, store, version=2, status="paid")
    assert changed and order["status"] == "paid" and order["version"] == 2
    assert [e["name"] for e in await events(engine, store)].count("order.paid") == 1


async def test_unknown_order_is_not_found(engine: LockEngine, store: str) -> None:
    """A lock request on an order the ERP never reported is NOT_FOUND."""
    missing = await outcome(engine.acquire(store, "nope", A, Kind.ORDER))
    assert isinstance(missing, NotFound)


async def test_own_lock_with_a_stale_expected_version_is_refused(engine: LockEngine, store: str) -> None:
    """Asking again for one's own lock with an expected_version older than the order's is STALE_VERSION; the lock stays."""
    await put(engine, store)
    await engine.acquire(store, "o1", A, Kind.PAYMENT, expected_version=1)
    await put(engine, store, version=2)
    held = await stored_locks(engine, store)
    stale = await outcome(engine.acquire(store, "o1", A, Kind.PAYMENT, expected_version=1))
    assert isinstance(stale, StaleVersion) and stale.order["version"] == 2
    assert await stored_locks(engine, store) == held


async def test_own_lock_rebinds_to_a_newer_pulled_version(engine: LockEngine, store: str) -> None:
    """A holder asking again with the newer version it just pulled gets a fresh lock bound to it."""
    await put(engine, store)
    old, _ = await engine.acquire(store, "o1", H, Kind.PAYMENT, expected_version=1)
    same, _ = await engine.acquire(store, "o1", H, Kind.PAYMENT, expected_version=1)
    assert same == old
    await put(engine, store, version=2)
    seq = int(await engine.redis.get(keys.seq(store)))
    new, _ = await engine.acquire(store, "o1", H, Kind.PAYMENT, expected_version=2)
    assert new["version"] == 2 and new["fence"] > old["fence"] and new["token"] != old["token"]
    assert await names(engine, store, seq) == ["lock.released{released}", "lock.acquired"]
    paid = await engine.complete(store, "o1", H, token=new["token"], amount_cents=TOTAL, version=2,
                                 payment_ref="p-rebind")
    assert paid["order"]["status"] == "paid"


# --- terminals ------------------------------------------------------------------------------


async def test_revoke_terminal_releases_only_its_locks(engine: LockEngine, store: str) -> None:
    """Revoking a terminal ends each of its locks with reason revoked and leaves everyone else's."""
    for order_id in ("o1", "o2", "o3"):
        await put(engine, store, order_id)
    await engine.acquire(store, "o1", A, Kind.ORDER)
    await engine.acquire(store, "o2", A, Kind.PRESETTLE)
    await engine.acquire(store, "o2", H, Kind.PAYMENT)
    await engine.acquire(store, "o3", B, Kind.ORDER)
    before = await engine.seq(store)

    assert await engine.revoke_terminal(store, "TA") == 2
    ended = await events(engine, store, before)
    assert sorted((e["name"], e["data"]["reason"], e["order_id"], e["data"]["lock"]["kind"]) for e in ended) == [
        ("lock.released", "revoked", "o1", "order"), ("lock.released", "revoked", "o2", "presettle"),
    ]
    assert {(l["order_id"], l["holder"].get("terminal_id", "h5")) for l in await engine.locks(store)} == {
        ("o2", "h5"), ("o3", "TB"),
    }
    assert await engine.revoke_terminal(store, "TA") == 0


async def test_terminal_offline_caps_expiry_at_the_grace(engine: LockEngine, store: str) -> None:
    """When a terminal goes offline its locks end by now + grace; shorter ones, completing ones and others' are kept."""
    await set_config(engine, store, erp_payment_lock_seconds=5)
    for order_id in ("o1", "o2", "o3", "o4"):
        await put(engine, store, order_id)
    editing, _ = await engine.acquire(store, "o1", A, Kind.ORDER)               # 300 s: capped
    paying, _ = await engine.acquire(store, "o2", A, Kind.PAYMENT)              # 5 s: kept
    await engine.acquire(store, "o3", A, Kind.PAYMENT)
    completing = await mark_completing(engine, store, "o3", expires_at=await engine.now() + 60_000)
    other, _ = await engine.acquire(store, "o4", B, Kind.ORDER)
    before = await engine.seq(store)

    now = await engine.now()
    assert await engine.terminal_offline(store, "TA", 10_000) == 1
    after = {l["order_id"]: l for l in await engine.locks(store)}
    assert now + 10_000 <= after["o1"]["expires_at"] <= await engine.now() + 10_000 < editing["expires_at"]
    assert after["o2"]["expires_at"] == paying["expires_at"]
    assert after["o3"]["expires_at"] == completing["expires_at"]
    assert after["o4"]["expires_at"] == other["expires_at"]
    assert await names(engine, store, before) == ["lock.renewed{holder_offline}"]


async def test_terminal_offline_with_no_grace_frees_its_orders_at_once(engine: LockEngine, store: str) -> None:
    """A grace of 0 ends the offline terminal's lock now: another terminal takes the order immediately."""
    await put(engine, store)
    await engine.acquire(store, "o1", A, Kind.ORDER)
    assert await engine.terminal_offline(store, "TA", 0) == 1
    before = await engine.seq(store)
    taken, _ = await engine.acquire(store, "o1", B, Kind.ORDER)
    assert taken["holder"] == B
    assert await names(engine, store, before) == ["lock.expired", "lock.acquired"]


# --- events ---------------------------------------------------------------------------------


async def test_event_seq_is_contiguous_over_a_mixed_workload(engine: LockEngine, store: str) -> None:
    """Every event of a store gets the next seq and is in the stream under id 0-<seq>, nothing skipped."""
    orders = [f"o{n}" for n in range(6)]
    for order_id in orders:
        await put(engine, store, order_id)

    async def workload(order_id: str, n: int) -> None:
        diner, _ = await engine.acquire(store, order_id, h5(n), Kind.PAYMENT)
        await outcome(engine.acquire(store, order_id, erp(n), Kind.ORDER))      # denied: no event
        await engine.acquire(store, order_id, erp(n), Kind.PAYMENT, force=True)
        await engine.acquire(store, order_id, erp(n), Kind.ORDER, force=True)
        lock, _ = await engine.acquire(store, order_id, erp(n), Kind.PRESETTLE)  # converts
        await outcome(pay(engine, store, diner, h5(n), order_id=order_id))       # rejected
        await engine.release(store, order_id, Kind.PRESETTLE, lock["token"], erp(n))
        paying, _ = await engine.acquire(store, order_id, erp(n), Kind.PAYMENT)
        if n % 2:
            await pay(engine, store, paying, erp(n), order_id=order_id, ref=f"r{n}")
        else:
            await put(engine, store, order_id, version=2, status="cancelled")

    await asyncio.gather(*(workload(o, n) for n, o in enumerate(orders)),
                         engine.emit(store, "config.updated", {"config": {}}, A))
    stream = await engine.redis.xrange(keys.events(store))
    seqs = [json.loads(fields[b"e"])["seq"] for _, fields in stream]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) > 6 * 8
    assert [entry_id.decode() for entry_id, _ in stream] == [f"0-{s}" for s in seqs]
    assert await engine.seq(store) == len(seqs)


# --- contention -----------------------------------------------------------------------------


async def test_two_hundred_concurrent_payers_get_one_lock(engine: LockEngine, store: str) -> None:
    """200 terminals and diners asking to pay at once: exactly one grant, every other PAYMENT_LOCKED."""
    await put(engine, store)
    payers = [erp(n) if n % 2 else h5(n) for n in range(200)]
    results = await asyncio.gather(*(outcome(engine.acquire(store, "o1", p, Kind.PAYMENT)) for p in payers))
    grants = [r for r in results if isinstance(r, tuple)]
    assert len(grants) == 1
    denied = [r for r in results if isinstance(r, LockConflict) and r.code == "PAYMENT_LOCKED"]
    assert len(denied) == 199
    assert [lock["fence"] for lock in (await stored_locks(engine, store)).values()] == [grants[0][0]["fence"]]
    assert (await names(engine, store)).count("lock.acquired") == 1


# --- the order JSON the scripts store -------------------------------------------------------

AWKWARD_ITEMS = [
    {"line_id": "l1", "sku": "pork", "name": '红烧肉 "status":"open" a/b \\ 🍜', "qty": 1,
     "unit_price_cents": 4200, "source": "erp"},
]


@pytest.mark.parametrize(
    ("items", "version"),
    [([], 1), (AWKWARD_ITEMS, 1), (AWKWARD_ITEMS, 2**53)],
    ids=["zero items", "non-ascii, quotes and slashes in a name", "version 2^53"],
)
async def test_order_json_survives_storing_and_paying(
    engine: LockEngine, store: str, items: list[dict[str, Any]], version: int
) -> None:
    """An order with no items, or awkward names, or the largest version, comes back intact when stored and when paid."""
    body = order_body(items=items, version=version)
    stored, _ = await put(engine, store, items=items, version=version)
    assert stored == {**body, "updated_at": stored["updated_at"]}
    assert (await engine.get_order(store, "o1"))[0] == stored
    lock, _ = await engine.acquire(store, "o1", A, Kind.PAYMENT, expected_version=version)
    before = await engine.seq(store)
    paid = await pay(engine, store, lock, A, amount=body["total_cents"], version=version)
    assert paid["order"] == {**body, "status": "paid", "updated_at": paid["order"]["updated_at"]}
    assert paid["order"]["updated_at"] >= stored["updated_at"]
    assert (await engine.get_order(store, "o1"))[0] == paid["order"]
    [event] = [e for e in await events(engine, store, before) if e["name"] == "order.paid"]
    assert event["data"]["order"] == paid["order"] and event["data"]["order"]["items"] == items
