"""Websockets across real coordinator processes (``tablelock serve`` subprocesses) sharing one Redis
or one Redis Cluster: expiry exactly once everywhere, one seq order everywhere, revocation and
dead-process liveness reaching the other processes. The test drives locks with its own engine on
the same Redis, as another coordinator would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from coordinator.core.models import OrderIn, StoreConfigPatch
from coordinator.core.rules import Kind
from coordinator.realtime import liveness as presence
from coordinator.store import keys
from coordinator.store.auth import Authenticator
from coordinator.store.directory import Directory
from tests.support.app import ADMIN_TOKEN, SYSTEM, make_engine, order_body
from tests.support.processes import SECRET_KEY
from tests.support.ws_socket import Socket, open_socket


@dataclass
class Store:
    """A store seeded straight into Redis: terminals A (master) and B, table T1, order o1."""

    store_id: str
    a: str
    a_id: str
    b: str
    b_id: str
    engine: Any
    auth: Authenticator

    def holder(self, which: str) -> dict[str, Any]:
        """The holder dict of terminal A or B."""
        return {"role": "erp", "terminal_id": getattr(self, f"{which}_id"), "name": which.upper()}

    async def session(self, table_id: str = "T1") -> tuple[str, dict[str, Any]]:
        """An H5 session token every process accepts, and its holder dict."""
        token, session_id, _ = self.auth.new_session(self.store_id, table_id, await self.engine.now())
        return token, {"role": "h5", "session_id": session_id}


@pytest.fixture
async def store(redis_client, uid) -> Store:
    """A seeded store whose H5 payment locks last 1 s."""
    engine = make_engine(redis_client)
    directory = Directory(engine, "http://tablelock.test")
    store_id = f"mp-{uid}"
    await directory.put_store(store_id, "店", SYSTEM)
    await directory.patch_config(store_id, StoreConfigPatch(h5_payment_lock_seconds=1), SYSTEM)
    a = await directory.register_terminal(store_id, "A", True, SYSTEM)
    b = await directory.register_terminal(store_id, "B", False, SYSTEM)
    await directory.put_table(store_id, "T1", "一号桌", SYSTEM)
    await engine.put_order(store_id, OrderIn.model_validate(order_body()), SYSTEM)
    auth = Authenticator(redis_client, admin_token=ADMIN_TOKEN, secret_key=SECRET_KEY, session_ttl_ms=3_600_000)
    return Store(store_id, a.token, a.terminal_id, b.token, b.terminal_id, engine, auth)


@pytest.fixture
async def http():
    """A client session for the sockets and HTTP calls of a test."""
    async with aiohttp.ClientSession() as session:
        yield session


async def ws(http: aiohttp.ClientSession, proc: Any, token: str) -> tuple[Socket, dict, dict]:
    """A socket on one coordinator process."""
    return await open_socket(http, f"{proc.ws_url}?token={token}")


async def test_expiry_reaches_every_process_exactly_once(coordinators, http, store):
    """An H5 payment lock expiring gives exactly one lock.expired to ERP and H5 sockets on two different processes."""
    procs = coordinators(2)
    erp, _, _ = await ws(http, procs[0], store.a)
    erp2, _, _ = await ws(http, procs[1], store.b)
    token, diner = await store.session()
    h5, _, _ = await ws(http, procs[1], token)
    lock, _ = await store.engine.acquire(store.store_id, "o1", diner, Kind.PAYMENT)
    for sock in (erp, erp2, h5):
        expired = await sock.event("lock.expired", timeout=3)
        assert expired["data"]["lock"]["fence"] == lock["fence"]
        assert 0 <= expired["ts"] - lock["expires_at"] < 250
    for sock in (erp, erp2, h5):
        await sock.quiet(0.3)
        assert sum('"lock.expired"' in t for t in sock.texts) == 1
        await sock.ws.close()


async def test_every_process_streams_the_same_contiguous_seq(coordinators, http, store):
    """ERP sockets on two processes receive the same events in the same strictly increasing, gapless seq."""
    procs = coordinators(2)
    socks = [await ws(http, proc, store.a) for proc in procs]
    b = store.holder("b")
    for _ in range(10):
        lock, _ = await store.engine.acquire(store.store_id, "o1", b, Kind.ORDER)
        await store.engine.release(store.store_id, "o1", Kind.ORDER, lock["token"], b)
    last = await store.engine.seq(store.store_id)
    streams = [[e["seq"] for e in await sock.events_until(last)] for sock, _, _ in socks]
    for (sock, _, snap), seqs in zip(socks, streams):
        assert seqs == list(range(snap["seq"] + 1, last + 1))
        await sock.ws.close()
    assert streams[0][-1] == streams[1][-1] == last


async def test_revocation_on_one_process_closes_the_socket_on_another(coordinators, http, store):
    """DELETE of a terminal on process 0 closes its socket held by process 1 with 4401."""
    procs = coordinators(2)
    sock, _, _ = await ws(http, procs[1], store.b)
    response = await http.delete(f"{procs[0].url}/api/v1/admin/stores/{store.store_id}/terminals/{store.b_id}",
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status == 204
    assert await sock.close_code() == 4401


async def test_terminal_of_a_killed_process_goes_offline_with_capped_locks(coordinators, http, store, redis_client):
    """When the process holding a terminal's socket dies, another process announces it offline and caps its locks."""
    procs = coordinators(2)
    ghost, _, _ = await ws(http, procs[0], store.b)
    watcher, _, _ = await ws(http, procs[1], store.a)
    lock, _ = await store.engine.acquire(store.store_id, "o1", store.holder("b"), Kind.ORDER)
    await watcher.event("lock.acquired")
    procs[0].kill()
    # Age B's presence past STALE_MS instead of waiting 30 s for it.
    key = keys.presence(store.store_id)
    old = await store.engine.now() - presence.STALE_MS - 1_000
    members = [m for m in await redis_client.zrange(key, 0, -1) if m.decode().startswith(f"{store.b_id}|")]
    assert members, "B's socket was in presence"
    await redis_client.zadd(key, {m: old for m in members})
    down = await watcher.event("terminal.status", timeout=20)
    assert down["data"] == {"terminal_id": store.b_id, "online": False}
    capped = await watcher.event("lock.renewed", timeout=5)
    assert capped["data"]["reason"] == "holder_offline"
    assert capped["data"]["lock"]["expires_at"] < lock["expires_at"]
    await watcher.ws.close()
