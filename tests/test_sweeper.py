"""The expiry sweeper: exactly once and on time with several sweepers, the due-index race, and
terminals whose process died. Runs against the single Redis and the 3-master cluster."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from coordinator.core.models import OrderIn, StoreConfigPatch
from coordinator.core.rules import Kind
from coordinator.realtime import liveness as presence
from coordinator.realtime.liveness import Liveness, MasterRegistry
from coordinator.realtime.sweeper import RedisClock, Sweeper
from coordinator.store import keys
from coordinator.store.directory import Directory
from coordinator.store.engine import LockEngine
from coordinator.store.redis_conn import open_redis
from tests.support.app import SYSTEM, make_engine, order_body, services


async def seed(engine: LockEngine, store_id: str, orders: int, h5_seconds: int = 1) -> list[str]:
    """A store with ``orders`` open orders on table T1 and 1 s H5 payment locks; returns the order ids."""
    directory = Directory(engine, "http://tablelock.test")
    await directory.put_store(store_id, "店", SYSTEM)
    await directory.patch_config(store_id, StoreConfigPatch(h5_payment_lock_seconds=h5_seconds), SYSTEM)
    ids = [f"o{i}" for i in range(orders)]
    for order_id in ids:
        await engine.put_order(store_id, OrderIn.model_validate(order_body(order_id=order_id)), SYSTEM)
    return ids


async def stream_events(redis: Any, store_id: str, name: str) -> list[dict[str, Any]]:
    """Every event called ``name`` in the store's stream."""
    entries = await redis.xrange(keys.events(store_id), "-", "+")
    events = [json.loads(fields[b"e"]) for _, fields in entries]
    return [e for e in events if e["name"] == name]


async def wait_for(check, timeout: float, what: str) -> Any:
    """Poll an async ``check`` until truthy, bounded."""
    deadline = time.monotonic() + timeout
    while not (value := await check()):
        assert time.monotonic() < deadline, f"{what} not within {timeout}s"
        await asyncio.sleep(0.02)
    return value


@pytest.fixture
async def sweepers(redis_url):
    """Factory of started sweepers, each on its own Redis client (like separate processes)."""
    started: list[tuple[Sweeper, Any]] = []

    async def start(n: int) -> list[Sweeper]:
        for _ in range(n):
            redis = await open_redis(redis_url)
            sweeper = Sweeper(make_engine(redis))
            await sweeper.start()
            started.append((sweeper, redis))
        return [s for s, _ in started[-n:]]

    yield start
    for sweeper, redis in started:
        await sweeper.stop()
        await redis.aclose()


async def test_in_app_sweeper_announces_expiry_within_250ms(client, shop):
    """The app's sweeper ends every 1 s H5 payment lock with one lock.expired stamped < 250 ms after expires_at."""
    svc = services(client)
    store = shop.store_id
    ids = await seed(svc.engine, store, 12)
    grants = []
    for i, order_id in enumerate(ids):
        lock, _ = await svc.engine.acquire(store, order_id, {"role": "h5", "session_id": f"d{i}"}, Kind.PAYMENT)
        grants.append(lock)
        await asyncio.sleep(0.03)
    expired = await wait_for(
        lambda: _all_expired(svc.redis, store, len(ids)), timeout=4, what="every lock.expired")
    by_order = {e["order_id"]: e for e in expired}
    assert len(expired) == len(by_order) == len(ids)
    for lock in grants:
        event = by_order[lock["order_id"]]
        assert event["data"]["lock"]["fence"] == lock["fence"]
        assert 0 <= event["ts"] - lock["expires_at"] < 250


async def _all_expired(redis: Any, store: str, n: int) -> list[dict[str, Any]] | None:
    events = await stream_events(redis, store, "lock.expired")
    return events if len(events) >= n else None


async def test_three_sweepers_expire_each_lock_exactly_once(redis_client, sweepers, uid):
    """With three sweepers racing, every lock gets exactly one lock.expired and none is early."""
    engine = make_engine(redis_client)
    stores = [f"sw-{uid}-{i}" for i in range(3)]
    grants = []
    for store in stores:
        for order_id in await seed(engine, store, 10):
            lock, _ = await engine.acquire(store, order_id, {"role": "h5", "session_id": "d"}, Kind.PAYMENT)
            grants.append((store, lock))
    await sweepers(3)

    async def done() -> bool:
        counts = [len(await stream_events(redis_client, s, "lock.expired")) for s in stores]
        return sum(counts) >= len(grants)

    await wait_for(done, timeout=5, what="every lock.expired")
    await asyncio.sleep(0.2)  # room for a duplicate to show up
    for store in stores:
        events = await stream_events(redis_client, store, "lock.expired")
        fences = sorted((e["order_id"], e["data"]["lock"]["fence"]) for e in events)
        assert fences == sorted((l["order_id"], l["fence"]) for s, l in grants if s == store)
        for event in events:
            assert event["ts"] >= event["data"]["lock"]["expires_at"]
        assert await redis_client.zscore(keys.DUE, store) is None


class RacingRedis:
    """A Redis proxy that runs ``meanwhile`` right after the sweeper's first look at the active set."""

    def __init__(self, redis: Any, meanwhile) -> None:
        self._redis, self._meanwhile, self._fired = redis, meanwhile, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._redis, name)

    async def zrange(self, *args: Any, **kwargs: Any) -> Any:
        """ZRANGE, then (once) the concurrent acquire."""
        result = await self._redis.zrange(*args, **kwargs)
        if not self._fired:
            self._fired = True
            await self._meanwhile()
        return result


async def test_reindex_keeps_an_earlier_due_time_written_during_the_race(redis_client, uid):
    """An acquire that lands between the sweeper's read and its ZREM still leaves its due time in tl:due."""
    store = f"race-{uid}"
    engine = make_engine(redis_client)
    due = await engine.now() + 60_000

    async def acquire_meanwhile() -> None:
        await redis_client.zadd(keys.active(store), {"o1": due})
        await redis_client.zadd(keys.DUE, {store: due}, lt=True)

    sweeper = Sweeper(engine)
    sweeper.redis = RacingRedis(redis_client, acquire_meanwhile)
    await sweeper.reindex(store)  # first look: empty → ZREM; the race re-adds; ZADD LT restores
    assert await redis_client.zscore(keys.DUE, store) == due
    await redis_client.zadd(keys.DUE, {store: due + 5_000})
    await sweeper.reindex(store)  # a due time that is too late is set back to the truth
    assert await redis_client.zscore(keys.DUE, store) == due
    await redis_client.zrem(keys.active(store), "o1")
    await sweeper.reindex(store)
    assert await redis_client.zscore(keys.DUE, store) is None


async def test_a_lock_that_does_not_move_its_store_earlier_skips_tl_due_and_still_expires_once(
        redis_client, sweepers, uid):
    """A lock later than its store's earliest one leaves tl:due at the earlier time, and it still expires exactly once after that one is released."""
    engine = make_engine(redis_client)
    store = f"late-{uid}"
    first_id, second_id = await seed(engine, store, 2)
    first, _ = await engine.acquire(store, first_id, {"role": "h5", "session_id": "d0"}, Kind.PAYMENT)
    assert await redis_client.zscore(keys.DUE, store) == first["expires_at"]
    await asyncio.sleep(0.05)
    second, _ = await engine.acquire(store, second_id, {"role": "h5", "session_id": "d1"}, Kind.PAYMENT)
    assert second["expires_at"] > first["expires_at"]
    assert await redis_client.zscore(keys.DUE, store) == first["expires_at"]  # not written again
    assert await engine.release(store, first_id, Kind.PAYMENT, first["token"], {"role": "h5", "session_id": "d0"})
    await sweepers(2)

    async def expired() -> list[dict[str, Any]]:
        return await stream_events(redis_client, store, "lock.expired")

    await wait_for(expired, timeout=4, what="the second lock's lock.expired")
    await asyncio.sleep(0.2)  # room for a duplicate to show up
    events = await expired()
    assert [(e["order_id"], e["data"]["lock"]["fence"]) for e in events] == [(second_id, second["fence"])]
    assert events[0]["ts"] >= second["expires_at"]
    assert await redis_client.zscore(keys.DUE, store) is None


async def test_reconcile_puts_back_a_store_whose_due_write_was_lost(redis_client, uid):
    """A store missing from tl:due (its process died between the script and the ZADD) is put back by reconcile, and expires once."""
    engine = make_engine(redis_client)
    store = f"lost-{uid}"
    (order_id,) = await seed(engine, store, 1)
    lock, _ = await engine.acquire(store, order_id, {"role": "h5", "session_id": "d"}, Kind.PAYMENT)
    await redis_client.zrem(keys.DUE, store)
    sweeper = Sweeper(engine, reconcile_interval=0.05, reconcile_batch=10_000)
    await sweeper.start()
    try:
        events = await wait_for(lambda: stream_events(redis_client, store, "lock.expired"), timeout=4,
                                what="lock.expired after reconcile")
        await asyncio.sleep(0.1)
        assert [e["data"]["lock"]["fence"] for e in await stream_events(redis_client, store, "lock.expired")] \
            == [lock["fence"]]
        assert events[0]["ts"] >= lock["expires_at"]
    finally:
        await sweeper.stop()


async def _full_pass(liveness: Liveness, now: int) -> int:
    """Run presence checks until the store list has been walked once."""
    found = await liveness.check_stale(now)
    while liveness._cursor != 0:
        found += await liveness.check_stale(now)
    return found


async def test_terminal_of_a_dead_process_goes_offline_once_with_capped_locks(redis_client, redis_url, uid):
    """A terminal whose presence aged out (its process died) is announced offline once and its locks capped at last heartbeat + grace."""
    engine = make_engine(redis_client)
    store = f"dead-{uid}"
    [order_id] = await seed(engine, store, 1)
    await Directory(engine, "http://t").patch_config(store, StoreConfigPatch(erp_disconnect_grace_seconds=60), SYSTEM)
    ghost = {"role": "erp", "terminal_id": "Tghost", "name": "收银台"}
    lock, _ = await engine.acquire(store, order_id, ghost, Kind.ORDER)
    now = await engine.now()
    seen = now - presence.STALE_MS - 1_000
    await redis_client.zadd(keys.presence(store), {"Tghost|c1": seen, "Tghost|c2": seen - 500, "Tlive|c3": now})
    other = await open_redis(redis_url)
    try:
        other_engine = make_engine(other)
        first = Liveness(engine, MasterRegistry(redis_client, engine.now))
        second = Liveness(other_engine, MasterRegistry(other, other_engine.now))
        found = await asyncio.gather(_full_pass(first, now), _full_pass(second, now))
    finally:
        await other.aclose()
    assert sum(found) >= 1
    statuses = await stream_events(redis_client, store, "terminal.status")
    assert [e["data"] for e in statuses] == [{"terminal_id": "Tghost", "online": False}]
    [capped] = await stream_events(redis_client, store, "lock.renewed")
    assert capped["data"]["reason"] == "holder_offline"
    assert abs(capped["data"]["lock"]["expires_at"] - (seen + 60_000)) < 1_000 < lock["expires_at"] - capped["data"]["lock"]["expires_at"]
    assert await presence.online(redis_client, store, await engine.now()) == {"Tlive"}


async def test_redis_clock_follows_the_server_clock(redis_client):
    """The sweeper's local reading of the Redis clock stays within a few ms of TIME."""
    clock = RedisClock(redis_client)
    await clock.sync()
    engine = make_engine(redis_client)
    before = await engine.now()
    local = clock.now()
    after = await engine.now()
    assert before - 5 <= local <= after + 5
