"""The in-process cache of terminal records (store/auth_cache.py): a cached record never outlives
a revocation, in any process, and lock requests re-check the token in their script."""

from __future__ import annotations

import asyncio
import time

import pytest

from coordinator.app import build_app
from coordinator.core.errors import Unauthenticated
from coordinator.settings import Settings
from coordinator.store import keys
from coordinator.store.auth_cache import TerminalCache
from tests.support.app import ADMIN_TOKEN, bearer, services

RECORD = {"name": "收银台", "master": True, "token_hash": "h"}


class Link:
    """A stand-in for the pub/sub subscription: its number, or None while it is down."""

    def __init__(self) -> None:
        self.value: int | None = 1

    def __call__(self) -> int | None:
        return self.value


def linked_cache(ttl: float = 60.0) -> tuple[TerminalCache, Link, list[float]]:
    """A cache on a settable link and a settable clock."""
    now = [0.0]
    cache = TerminalCache(ttl_seconds=ttl, clock=lambda: now[0])
    link = Link()
    cache.link = link
    return cache, link, now


def test_cache_is_never_used_without_a_subscription():
    """Until a subscription links it (and while it is down) the cache neither keeps nor answers."""
    cache = TerminalCache()
    cache.put("s", "T1", RECORD, cache.begin())
    assert cache.get("s", "T1") is None
    cache, link, _ = linked_cache()
    cache.put("s", "T1", RECORD, cache.begin())
    link.value = None
    assert cache.get("s", "T1") is None


def test_a_new_subscription_empties_the_cache():
    """After a reconnect (messages may have been missed) nothing cached before is answered."""
    cache, link, _ = linked_cache()
    cache.put("s", "T1", RECORD, cache.begin())
    assert cache.get("s", "T1") == RECORD
    link.value = 2
    assert cache.get("s", "T1") is None
    link.value = 2
    cache.put("s", "T1", RECORD, cache.begin())
    assert cache.get("s", "T1") == RECORD


def test_a_read_that_began_before_an_invalidation_is_not_kept():
    """A record fetched across a revocation's message (or a reconnect) is dropped, not cached."""
    cache, link, _ = linked_cache()
    ticket = cache.begin()
    cache.invalidate("s", "T9")
    cache.put("s", "T1", RECORD, ticket)
    assert cache.get("s", "T1") is None
    ticket = cache.begin()
    link.value = 2
    cache.put("s", "T1", RECORD, ticket)
    assert cache.get("s", "T1") is None


def test_entries_end_at_their_ttl_and_on_invalidate():
    """An entry is answered until ttl_seconds, and never after invalidate."""
    cache, _, now = linked_cache(ttl=5.0)
    cache.put("s", "T1", RECORD, cache.begin())
    now[0] = 4.9
    assert cache.get("s", "T1") == RECORD
    now[0] = 5.0
    assert cache.get("s", "T1") is None
    cache.put("s", "T1", RECORD, cache.begin())
    cache.invalidate("s", "T1")
    assert cache.get("s", "T1") is None


async def test_revocation_in_one_process_ends_the_cached_record_in_another(client, aiohttp_client, settings, shop):
    """Revoking through process 1 makes process 2 refuse the token at once, by its control message (not the TTL)."""
    other = await aiohttp_client(build_app(settings))
    cache = services(other).auth.cache
    cache.ttl_seconds = 3600
    path = f"/api/v1/stores/{shop.store_id}/locks"
    assert (await other.get(path, headers=bearer(shop.b))).status == 200
    assert cache.get(shop.store_id, shop.b_id) is not None
    resp = await client.delete(f"/api/v1/admin/stores/{shop.store_id}/terminals/{shop.b_id}",
                               headers=bearer(ADMIN_TOKEN))
    assert resp.status == 204
    deadline = time.monotonic() + 2
    while (status := (await other.get(path, headers=bearer(shop.b))).status) == 200:
        assert time.monotonic() < deadline, "process 2 still accepts the revoked token"
        await asyncio.sleep(0.01)
    assert status == 401


async def test_a_lock_request_is_refused_by_its_script_even_while_the_record_is_cached(client, shop):
    """Behind the cache's back (no control message yet), a revoked terminal still takes no lock."""
    svc = services(client)
    base = f"/api/v1/stores/{shop.store_id}/orders/{shop.order_id}"
    resp = await client.post(f"{base}/locks", json={"kind": "order"}, headers=bearer(shop.b))
    assert resp.status == 201
    token = (await resp.json())["lock"]["token"]
    await svc.redis.hdel(keys.terminals(shop.store_id), shop.b_id)
    assert svc.auth.cache.get(shop.store_id, shop.b_id) is not None  # the request passes the cache
    for path, body in [("/locks", {"kind": "payment"}), ("/locks/order/renew", {"token": token}),
                       ("/locks/order/release", {"token": token}), ("/check", {"action": "modify"})]:
        resp = await client.post(base + path, json=body, headers=bearer(shop.b))
        assert resp.status == 401, (path, await resp.text())
        assert (await resp.json())["error"]["code"] == "UNAUTHENTICATED"


async def test_an_h5_session_is_checked_on_the_local_redis_clock_without_a_time_round_trip(client, shop):
    """With the runtime's clock set, an H5 token's expiry needs no TIME, and an expired one is still refused."""
    svc = services(client)
    assert svc.auth.clock is not None

    async def no_time() -> int:
        raise AssertionError("a Redis TIME round trip was asked for")

    now = await svc.engine.now()
    token, session_id, _ = svc.auth.new_session(shop.store_id, "T1", now)
    assert (await svc.auth.authenticate(token, no_time)).session_id == session_id
    expired, _, _ = svc.auth.new_session(shop.store_id, "T1", now - svc.auth.session_ttl_ms - 1)
    with pytest.raises(Unauthenticated):
        await svc.auth.authenticate(expired, no_time)


async def test_a_resubscription_empties_the_cache_of_a_running_process(aiohttp_client, tmp_path, redis_single_url, uid):
    """When its pub/sub link is cut and comes back, a process answers no terminal from what it cached before."""
    settings = Settings(redis_url=redis_single_url, data_dir=tmp_path, admin_token=ADMIN_TOKEN,
                        secret_key="test-secret-key-0123456789", public_url="http://tablelock.test")
    app = await aiohttp_client(build_app(settings))
    svc = services(app)
    await svc.directory.put_store(f"s-{uid}", "店", {"role": "admin"})
    terminal = await svc.directory.register_terminal(f"s-{uid}", "收银台", True, {"role": "admin"})
    assert (await app.get(f"/api/v1/stores/s-{uid}/locks", headers=bearer(terminal.token))).status == 200
    assert svc.auth.cache.get(f"s-{uid}", terminal.terminal_id) is not None
    before = svc.realtime.subscriber.subscriptions
    await svc.redis.client_kill_filter(_type="pubsub")
    deadline = time.monotonic() + 5
    while not (svc.realtime.subscriber.subscriptions > before and svc.realtime.subscriber.subscribed.is_set()):
        assert time.monotonic() < deadline, "the subscription did not come back"
        await asyncio.sleep(0.02)
    assert svc.auth.cache.get(f"s-{uid}", terminal.terminal_id) is None
