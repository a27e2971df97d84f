"""Sharded pub/sub through a Redis 7 Cluster failover: the store's primary is SIGKILLed, its replica
promoted; the process places the store's shard channel on the new primary and its socket misses nothing."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from redis.exceptions import RedisError

from coordinator.core.models import OrderIn
from coordinator.store import keys
from tests.support.app import SYSTEM, order_body, services
from tests.support.cluster_replicas import ReplicatedCluster
from tests.support.ws_socket import open_socket


@pytest.fixture
def redis_url(cluster7_replicas: ReplicatedCluster) -> str:
    """The app fixtures (`settings`, `client`, `shop`) run on the replicated Redis 7 cluster in this module."""
    return cluster7_replicas.url


@pytest.fixture
def uid(cluster7_replicas: ReplicatedCluster) -> str:
    """A unique id whose store lives on another master than the process's plain subscription (node 0)."""
    while True:
        candidate = uuid.uuid4().hex[:12]
        if cluster7_replicas.shard_of(f"s-{candidate}").master != 0:
            return candidate


async def _bump(svc: Any, store_id: str, version: int, timeout: float = 30) -> int:
    """Push order o1 at ``version``, retrying while the shard has no primary; the store's seq after it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await svc.engine.put_order(store_id, OrderIn.model_validate(order_body(version=version)), SYSTEM)
            return await svc.engine.seq(store_id)
        except (RedisError, OSError):
            assert asyncio.get_running_loop().time() < deadline, "the store was not served again"
            await asyncio.sleep(0.1)


async def test_a_promoted_primary_gets_the_store_channel_and_the_socket_misses_nothing(
        cluster7_replicas: ReplicatedCluster, client, shop):
    """After its primary dies, the store's channel is subscribed on the promoted replica and every event reaches the socket."""
    svc = services(client)
    subscriber = svc.realtime.subscriber
    assert subscriber.shards is not None
    sock, _, snapshot = await open_socket(client, f"/api/v1/ws?token={shop.a}")
    before = subscriber.subscriptions
    await _bump(svc, shop.store_id, 2)
    await asyncio.to_thread(cluster7_replicas.wait_replicated, shop.store_id)
    shard, _ = cluster7_replicas.kill_master_of(shop.store_id)
    await asyncio.to_thread(cluster7_replicas.wait_promotion, shard)
    last = 0
    for version in range(3, 8):
        last = await _bump(svc, shop.store_id, version)
    events = await sock.events_until(last, timeout=20)
    entries = await svc.redis.xrange(keys.events(shop.store_id), min=f"(0-{snapshot['seq']}", max=f"0-{last}")
    recorded = [json.loads(fields[b"e"])["seq"] for _, fields in entries]
    assert [e["seq"] for e in events] == recorded == list(range(snapshot["seq"] + 1, last + 1))
    assert subscriber.subscriptions > before  # placed again, and the readers caught up
    promoted = f":{cluster7_replicas.ports[shard.replica]}"
    assert [url for url in subscriber.shards.nodes if url.endswith(promoted)]
    await sock.ws.close()
