"""Fan-out that scales with stores: a process hears only the live events of stores it serves.

Each store publishes on its own channel (``keys.live``); a process subscribes it when the store's
first socket arrives here and unsubscribes it after the last one left (``ws_store_linger_seconds``).
Every test runs against the single Redis and the 3-master cluster (``redis_url`` is parametrized);
messages are counted at the process's pub/sub client (``Subscriber.messages``).
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest
from redis.asyncio import Redis

from coordinator.core.models import OrderIn
from coordinator.store import keys
from tests.support.app import SYSTEM, order_body, services
from tests.support.restaurant import eventually
from tests.support.ws_socket import Socket, open_socket

LINGER = 0.3


@pytest.fixture
def settings(settings):
    """The usual test settings with a short linger, so unsubscribing is seen within a test."""
    return settings.model_copy(update={"ws_store_linger_seconds": LINGER})


async def connect(client: Any, token: str, since: int | None = None) -> tuple[Socket, dict, dict]:
    """Open a socket on the in-process app."""
    url = f"/api/v1/ws?token={token}" + (f"&since={since}" if since is not None else "")
    return await open_socket(client, url)


async def other_store(svc: Any, store_id: str) -> str:
    """Seed a second store (order o1 on T1) and return its master terminal's token."""
    await svc.directory.put_store(store_id, "别家店", SYSTEM)
    master = await svc.directory.register_terminal(store_id, "收银台", True, SYSTEM)
    await svc.directory.put_table(store_id, "T1", "一号桌", SYSTEM)
    await svc.engine.put_order(store_id, OrderIn.model_validate(order_body()), SYSTEM)
    return master.token


async def bump(svc: Any, store_id: str, version: int) -> int:
    """Push a new version of order o1 (one event); the store's seq after it."""
    await svc.engine.put_order(store_id, OrderIn.model_validate(order_body(version=version)), SYSTEM)
    return await svc.engine.seq(store_id)


async def stream_events(redis: Any, store_id: str, after: int, upto: int) -> list[tuple[int, str]]:
    """(seq, name) of the store's recorded events after < seq <= upto, read from its stream."""
    entries = await redis.xrange(keys.events(store_id), min=f"(0-{after}", max=f"0-{upto}")
    return [(e["seq"], e["name"]) for e in (json.loads(fields[b"e"]) for _, fields in entries)]


async def test_a_process_receives_no_event_of_a_store_without_a_local_socket(client, shop, uid):
    """Twenty events of a store with no socket here reach the process's pub/sub client zero times; one of the served store once."""
    svc = services(client)
    other = f"o-{uid}"
    await other_store(svc, other)
    sock, _, _ = await connect(client, shop.a)
    subscriber = svc.realtime.subscriber
    assert subscriber.watched == {keys.live(shop.store_id).encode()}
    await sock.events_until(await bump(svc, shop.store_id, 2))  # the socket's own events are in
    before = subscriber.messages
    for version in range(2, 22):
        await bump(svc, other, version)
    seq = await bump(svc, shop.store_id, 3)
    await sock.events_until(seq)
    await asyncio.sleep(0.2)  # anything of the other store would have arrived by now
    assert subscriber.messages - before == 1
    await sock.ws.close()


async def test_the_last_socket_leaving_unsubscribes_after_the_linger(client, shop):
    """After the store's last socket closes, its channel stays subscribed for the linger, then is dropped and its events stop arriving."""
    svc = services(client)
    subscriber, channel = svc.realtime.subscriber, keys.live(shop.store_id).encode()
    sock, _, _ = await connect(client, shop.a)
    await sock.ws.close()
    await eventually(lambda: not svc.hub.wants(shop.store_id))
    assert channel in subscriber.watched  # lingering: a reconnect would not resubscribe
    again, _, _ = await connect(client, shop.a)
    await again.ws.close()
    await eventually(lambda: channel not in subscriber.watched, timeout=LINGER + 3)
    await asyncio.sleep(0.1)  # the UNSUBSCRIBE has been sent; give Redis its turn
    before = subscriber.messages
    await bump(svc, shop.store_id, 2)
    await asyncio.sleep(0.3)
    assert subscriber.messages == before


async def test_connect_disconnect_storm_loses_no_event(client, shop, uid):
    """Sockets opening and closing while events are published each get every event after their snapshot, as the stream recorded it."""
    svc = services(client)
    svc.realtime.stream.linger = 0  # unsubscribe at once: the most SUBSCRIBE/UNSUBSCRIBE races
    store, rng = shop.store_id, random.Random(uid)
    pushed = 0

    async def writer() -> None:
        nonlocal pushed
        await asyncio.sleep(rng.uniform(0, 0.01))
        pushed += 1  # a new order each time: concurrent writers never race on one order's version
        order = OrderIn.model_validate(order_body(order_id=f"w{pushed}", table_id="T2"))
        await svc.engine.put_order(store, order, SYSTEM)

    async def one_socket() -> None:
        sock, _, snapshot = await connect(client, shop.a)
        start = snapshot["seq"]
        upto = await svc.engine.seq(store)
        # Nothing is published after this read, so a lost event could not be filled in by a later one.
        received = [(e["seq"], e["name"]) for e in await sock.events_until(upto)] if upto > start else []
        assert received == await stream_events(svc.redis, store, start, upto)
        await sock.ws.close()

    for _ in range(25):
        await asyncio.gather(one_socket(), writer(), writer())
        await asyncio.gather(one_socket(), one_socket(), writer())


async def test_a_lost_subscription_resubscribes_every_served_store(client, shop, uid, redis_url):
    """After the pub/sub connection is killed, every store with a socket here is subscribed again and its new events arrive live."""
    svc = services(client)
    other = f"o-{uid}"
    other_token = await other_store(svc, other)
    first, _, _ = await connect(client, shop.a)
    second, _, _ = await connect(client, other_token)
    subscriber = svc.realtime.subscriber
    before = subscriber.subscriptions
    killer = Redis.from_url(redis_url)  # the node the listener subscribed to (a cluster's first node)
    try:
        await killer.client_kill_filter(_type="pubsub")
    finally:
        await killer.aclose()
    await eventually(lambda: subscriber.subscriptions > before and subscriber.subscribed.is_set(), timeout=10)
    assert subscriber.watched == {keys.live(shop.store_id).encode(), keys.live(other).encode()}
    for sock, store in ((first, shop.store_id), (second, other)):
        seq = await bump(svc, store, 5)
        [event] = [e for e in await sock.events_until(seq) if e["seq"] == seq]
        assert event["name"] == "order.updated"
        await sock.ws.close()


async def test_watch_returns_only_once_redis_counts_the_subscription(client, shop, redis_url):
    """When ``watch`` returns, the node the process subscribes on already counts it on the channel (PUBSUB NUMSUB)."""
    svc = services(client)
    store = f"{shop.store_id}-w"
    channel = keys.live(store)
    await svc.realtime.stream.watch(store)
    node = Redis.from_url(redis_url)  # the configured URL: the subscription's first choice
    try:
        [(_, count)] = await node.pubsub_numsub(channel)
    finally:
        await node.aclose()
    assert count == 1
