"""Redis Cluster failover (SPEC §12): a shard's master is SIGKILLed, its replica promoted; grants and fences follow."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from aiohttp import web
from redis.asyncio.connection import Connection as RedisConnection
from redis.exceptions import ClusterDownError, MasterDownError, RedisError, TryAgainError

from coordinator.api.middleware import errors_middleware
from coordinator.core.models import OrderIn
from coordinator.core.rules import Kind
from coordinator.store.redis_conn import open_redis
from tests.support.app import bearer, make_engine, order_body
from tests.support.cluster_replicas import ReplicatedCluster

A = {"role": "erp", "terminal_id": "TA", "name": "收银台"}
B = {"role": "erp", "terminal_id": "TB", "name": "服务员B"}


@pytest.fixture
def redis_url(cluster_replicas: ReplicatedCluster) -> str:
    """The app fixtures (`settings`, `client`, `shop`) run on the replicated cluster in this module."""
    return cluster_replicas.url


@pytest.fixture
def uid(cluster_replicas: ReplicatedCluster) -> str:
    """A unique id whose store lives on the master named in the coordinator's URL: the hardest node to lose."""
    while True:
        candidate = uuid.uuid4().hex[:12]
        if cluster_replicas.shard_of(f"s-{candidate}").master == 0:
            return candidate


async def _take(client: Any, store_id: str, token: str) -> tuple[int, dict]:
    resp = await client.post(f"/api/v1/stores/{store_id}/orders/o1/locks", json={"kind": "order"},
                             headers=bearer(token))
    return resp.status, await resp.json()


@pytest.mark.parametrize("error", [ClusterDownError("The cluster is down"), MasterDownError("MASTERDOWN"),
                                   TryAgainError("TRYAGAIN")])
async def test_a_cluster_in_transition_is_503_unavailable(aiohttp_client, error: RedisError):
    """CLUSTERDOWN / MASTERDOWN / TRYAGAIN from Redis is 503 UNAVAILABLE (it was a 500 INTERNAL mid-failover)."""
    async def handler(request: web.Request) -> web.Response:
        raise error

    app = web.Application(middlewares=[errors_middleware])
    app.router.add_get("/api/v1/thing", handler)
    resp = await (await aiohttp_client(app)).get("/api/v1/thing")
    assert resp.status == 503 and (await resp.json())["error"]["code"] == "UNAVAILABLE"


async def test_redis_py_losing_its_connection_mid_command_is_503_and_our_own_bug_is_500(aiohttp_client):
    """redis-py's connection layer failing mid-send (its writer torn away) is 503; an AttributeError of ours stays 500."""
    async def torn(request: web.Request) -> web.Response:
        # What a concurrent disconnect leaves behind during a failover: a connection with no writer.
        await RedisConnection()._send_packed_command([b"PING"])
        return web.Response()

    async def ours(request: web.Request) -> web.Response:
        return None.missing  # type: ignore[attr-defined]

    app = web.Application(middlewares=[errors_middleware])
    app.router.add_get("/api/v1/torn", torn)
    app.router.add_get("/api/v1/ours", ours)
    http = await aiohttp_client(app)
    torn_resp, ours_resp = await http.get("/api/v1/torn"), await http.get("/api/v1/ours")
    assert (torn_resp.status, (await torn_resp.json())["error"]["code"]) == (503, "UNAVAILABLE")
    assert (ours_resp.status, (await ours_resp.json())["error"]["code"]) == (500, "INTERNAL")


async def test_the_cluster_client_follows_a_promotion_by_itself(cluster_replicas: ReplicatedCluster, client, shop):
    """While the store's shard has no master a grant is 503 UNAVAILABLE; after the promotion it succeeds, no restart."""
    await asyncio.to_thread(cluster_replicas.wait_replicated, shop.store_id)
    shard, killed = cluster_replicas.kill_master_of(shop.store_id)
    promotion = asyncio.create_task(asyncio.to_thread(cluster_replicas.wait_promotion, shard))
    statuses: Counter[str] = Counter()
    deadline = time.monotonic() + 30
    while True:
        status, data = await _take(client, shop.store_id, shop.a)
        if status == 201:
            granted = time.monotonic()
            break
        statuses[f"{status}:{data.get('error', {}).get('code')}"] += 1
        assert time.monotonic() < deadline, f"no grant 30 s after the kill: {statuses}"
        await asyncio.sleep(0.05)
    promoted = await promotion
    print(f"\ncluster failover: kill -> promotion {promoted - killed:.2f}s, kill -> first grant "
          f"{granted - killed:.2f}s, promotion -> first grant {granted - promoted:+.2f}s, refused {dict(statuses)}")
    assert set(statuses) == {"503:UNAVAILABLE"}, statuses
    assert data["lock"]["holder"]["terminal_id"] == shop.a_id
    assert cluster_replicas.shard_of(shop.store_id).master == shard.replica


async def test_a_grant_lost_in_a_cluster_failover_is_never_repeated(cluster_replicas: ReplicatedCluster, uid: str):
    """A grant the shard's master acknowledged but never replicated dies with it; the next fence is still above it."""
    store = f"s-{uid}"
    redis = await open_redis(cluster_replicas.url)
    engine = make_engine(redis)
    try:
        await engine.put_order(store, OrderIn.model_validate(order_body("o1")), A)
        first, _ = await engine.acquire(store, "o1", A, Kind.ORDER)
        assert await engine.release(store, "o1", Kind.ORDER, first["token"], A)
        await asyncio.to_thread(cluster_replicas.wait_replicated, store)
        with cluster_replicas.pause_replication(store) as shard:
            lost, _ = await engine.acquire(store, "o1", B, Kind.ORDER)
            _, killed = cluster_replicas.kill_master_of(store, shard)
        assert lost["fence"] > first["fence"]
        promoted = await asyncio.to_thread(cluster_replicas.wait_promotion, shard)

        after = await _acquire_until_served(engine, store)
        print(f"\ncluster lost write: kill -> promotion {promoted - killed:.2f}s, "
              f"promotion -> first grant {time.monotonic() - promoted:.2f}s")
        # The lost-write case did happen: the promoted replica never saw B's lock (A was not denied) ...
        assert [lock["holder"] for lock in await engine.locks(store)] == [A]
        # ... and yet the fence it issued next is above every fence issued before.
        assert after["fence"] > lost["fence"] > first["fence"]
    finally:
        await redis.aclose()


async def _acquire_until_served(engine: Any, store: str) -> dict:
    """A's order lock, retried while the cluster client still sees the shard without a master."""
    deadline = time.monotonic() + 15
    while True:
        try:
            lock, _ = await engine.acquire(store, "o1", A, Kind.ORDER)
            return lock
        except (RedisError, OSError):  # connection refused / CLUSTERDOWN while the slot map settles
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
