"""Per-store channels through a Redis Cluster failover (the wheel's Redis 6.2, 3 masters + 3 replicas).

The process's one pub/sub connection is on node 0 (the configured URL). Node 0 is SIGKILLed: the
connection moves to another node, the store's channel is subscribed there again, what was published
meanwhile is filled from the store's stream, and the socket misses nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from coordinator.core.models import OrderIn
from coordinator.realtime import pubsub
from coordinator.store import keys
from tests.support.app import SYSTEM, order_body, services
from tests.support.cluster_replicas import ReplicatedCluster
from tests.support.ws_socket import open_socket

#: The subscriber waits this long before reconnecting, so the events pushed right after the kill
#: are certainly published while no subscription exists (they must come from the stream).
RECONNECT_AFTER = 0.5


@pytest.fixture(autouse=True)
def slow_reconnect(monkeypatch: pytest.MonkeyPatch) -> None:
    """The subscriber's first retry waits RECONNECT_AFTER (set before the app starts)."""
    monkeypatch.setattr(pubsub, "_BACKOFF_MIN", RECONNECT_AFTER)


@pytest.fixture
def redis_url(cluster_replicas: ReplicatedCluster) -> str:
    """The app fixtures (`settings`, `client`, `shop`) run on the replicated cluster in this module."""
    return cluster_replicas.url


@pytest.fixture
def uid(cluster_replicas: ReplicatedCluster) -> str:
    """A unique id whose store lives on another master than node 0, so it is written while node 0 is dead."""
    while True:
        candidate = uuid.uuid4().hex[:12]
        if cluster_replicas.shard_of(f"s-{candidate}").master != 0:
            return candidate


async def _bump(svc: Any, store_id: str, version: int, timeout: float = 30) -> int:
    """Push order o1 at ``version``, retrying while the cluster is down; the store's seq after it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await svc.engine.put_order(store_id, OrderIn.model_validate(order_body(version=version)), SYSTEM)
            return await svc.engine.seq(store_id)
        except (RedisError, OSError):
            assert asyncio.get_running_loop().time() < deadline, "the store was not served again"
            await asyncio.sleep(0.1)


async def _subscribers(cluster: ReplicatedCluster, channel: str) -> dict[int, int]:
    """PUBSUB NUMSUB of ``channel`` on every live node, by node index."""
    counts = {}
    for index, node in enumerate(cluster.nodes):
        if node.pid is None:
            continue
        client = Redis(host="127.0.0.1", port=cluster.ports[index])
        try:
            [(_, counts[index])] = await client.pubsub_numsub(channel)
        finally:
            await client.aclose()
    return counts


async def test_the_store_channel_survives_the_subscriber_node_and_the_socket_misses_nothing(
        cluster_replicas: ReplicatedCluster, client, shop, caplog: pytest.LogCaptureFixture):
    """After the subscription's node dies, the store's channel is subscribed on a live node and every event reaches the socket, those published in between filled from the stream."""
    caplog.set_level(logging.INFO, logger="coordinator.realtime.stream")
    svc = services(client)
    subscriber, channel = svc.realtime.subscriber, keys.live(shop.store_id)
    sock, _, snapshot = await open_socket(client, f"/api/v1/ws?token={shop.a}")
    assert (await _subscribers(cluster_replicas, channel))[0] == 1
    before = subscriber.subscriptions
    await _bump(svc, shop.store_id, 2)
    shard = next(s for s in cluster_replicas.shards() if s.master == 0)
    cluster_replicas.kill_master_of(shop.store_id, shard)
    last = 0
    for version in range(3, 6):  # published while the process has no subscription
        last = await _bump(svc, shop.store_id, version)
    await asyncio.to_thread(cluster_replicas.wait_promotion, shard)
    for version in range(6, 9):
        last = await _bump(svc, shop.store_id, version)
    events = await sock.events_until(last, timeout=20)
    entries = await svc.redis.xrange(keys.events(shop.store_id), min=f"(0-{snapshot['seq']}", max=f"0-{last}")
    recorded = [json.loads(fields[b"e"])["seq"] for _, fields in entries]
    assert [e["seq"] for e in events] == recorded == list(range(snapshot["seq"] + 1, last + 1))
    assert subscriber.subscriptions > before and subscriber.subscribed.is_set()
    assert sum((await _subscribers(cluster_replicas, channel)).values()) == 1  # on a surviving node
    assert f"store {shop.store_id}: filled events" in caplog.text
    await sock.ws.close()
