"""Issue 15 finding 5: websocket connections are capped per H5 session, per terminal and per client
address, and connects are rate limited per address — counted in Redis, so the caps hold across
coordinator processes, and the sockets of a killed process stop counting once their lease lapses;
one ``since`` replays a bounded number of events (further behind: a snapshot).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from coordinator.core.models import OrderIn
from coordinator.realtime.messages import CloseCode
from coordinator.store import keys
from coordinator.store.auth import Authenticator
from coordinator.store.directory import Directory
from tests.support.app import ADMIN_TOKEN, SYSTEM, make_engine, order_body, services
from tests.support.processes import SECRET_KEY
from tests.support.ws_socket import open_socket

pytestmark = pytest.mark.security

ADDRESS = "127.0.0.1"  # every socket of these tests comes from loopback


async def _seed(redis_client: Any, uid: str) -> tuple[str, str, Authenticator, Any]:
    """A store with a master terminal and table T1: (store_id, terminal token, authenticator, engine)."""
    engine = make_engine(redis_client)
    directory = Directory(engine, "http://tablelock.test")
    store_id = f"wscap-{uid}"
    await directory.put_store(store_id, "店", SYSTEM)
    terminal = await directory.register_terminal(store_id, "A", True, SYSTEM)
    await directory.put_table(store_id, "T1", "一号桌", SYSTEM)
    await engine.put_order(store_id, OrderIn.model_validate(order_body()), SYSTEM)
    auth = Authenticator(redis_client, admin_token=ADMIN_TOKEN, secret_key=SECRET_KEY, session_ttl_ms=3_600_000)
    # Other tests' sockets and connects from loopback share these counters: start from zero.
    await redis_client.delete(keys.ws_address(ADDRESS), keys.rate_ws_address(ADDRESS))
    return store_id, terminal.token, auth, engine


async def _attempt(http: aiohttp.ClientSession, url: str, kept: list) -> int | None:
    """Open a socket: None when it was admitted (hello received; kept open), else the server's close code."""
    ws = await http.ws_connect(url, autoclose=False)
    msg = await ws.receive(timeout=5)
    if msg.type == WSMsgType.TEXT:
        kept.append(ws)
        return None
    assert msg.type == WSMsgType.CLOSE, msg
    await ws.close()
    return msg.data


async def test_socket_caps_hold_across_two_processes(coordinators, redis_client, uid):
    """With 2 sockets per H5 session and per terminal, a third on the other process is closed 1008."""
    procs = coordinators(2, env={"TABLELOCK_WS_PER_H5_SESSION": "2", "TABLELOCK_WS_PER_TERMINAL": "2"})
    store_id, terminal, auth, engine = await _seed(redis_client, uid)
    session, _, _ = auth.new_session(store_id, "T1", await engine.now())
    kept: list = []
    async with aiohttp.ClientSession() as http:
        for token in (session, terminal):
            assert await _attempt(http, f"{procs[0].ws_url}?token={token}", kept) is None
            assert await _attempt(http, f"{procs[1].ws_url}?token={token}", kept) is None
            assert await _attempt(http, f"{procs[1].ws_url}?token={token}", kept) == CloseCode.POLICY_VIOLATION
            assert await _attempt(http, f"{procs[0].ws_url}?token={token}", kept) == CloseCode.POLICY_VIOLATION
        # Another session of the same table has its own cap.
        other, _, _ = auth.new_session(store_id, "T1", await engine.now())
        assert await _attempt(http, f"{procs[1].ws_url}?token={other}", kept) is None
        # A closed socket gives its place back at once.
        await kept[0].close()
        async def admitted() -> bool:
            code = await _attempt(http, f"{procs[1].ws_url}?token={session}", kept)
            return code is None
        for _ in range(50):
            if await admitted():
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("a closed socket's place was not given back")
        for ws in kept:
            await ws.close()


async def test_per_address_cap_and_connect_rate_hold_across_two_processes(coordinators, redis_client, uid):
    """Sockets from one address past ws_per_address are closed 1008; connects past the per-minute rate, 4429."""
    procs = coordinators(2, env={"TABLELOCK_WS_PER_ADDRESS": "3", "TABLELOCK_WS_CONNECT_RATE_PER_MINUTE": "6"})
    store_id, terminal, auth, engine = await _seed(redis_client, uid)
    kept: list = []
    async with aiohttp.ClientSession() as http:
        tokens = [auth.new_session(store_id, "T1", await engine.now())[0] for _ in range(4)]
        results = [await _attempt(http, f"{procs[i % 2].ws_url}?token={t}", kept) for i, t in enumerate(tokens)]
        assert results == [None, None, None, CloseCode.POLICY_VIOLATION]  # 4 connects, 3 sockets
        await kept.pop().close()
        await asyncio.sleep(0.2)
        assert await _attempt(http, f"{procs[1].ws_url}?token={tokens[3]}", kept) is None  # connect 5
        await kept.pop().close()
        await asyncio.sleep(0.2)
        assert await _attempt(http, f"{procs[0].ws_url}?token={tokens[3]}", kept) is None  # connect 6
        # The 7th connect within the minute is refused, whichever process it reaches, before auth.
        assert await _attempt(http, f"{procs[1].ws_url}?token={tokens[3]}", kept) == CloseCode.RATE_LIMITED
        assert await _attempt(http, f"{procs[0].ws_url}?token=garbage", kept) == CloseCode.RATE_LIMITED
        for ws in kept:
            await ws.close()
    await redis_client.delete(keys.rate_ws_address(ADDRESS))


async def test_a_killed_process_sockets_stop_counting_after_their_lease(coordinators, redis_client, uid):
    """A process SIGKILLed with a session's only allowed socket open: its place lapses within the lease."""
    env = {"TABLELOCK_WS_PER_H5_SESSION": "1", "TABLELOCK_WS_SLOT_TTL_SECONDS": "2"}
    doomed, survivor = coordinators(2, env=env)
    store_id, _, auth, engine = await _seed(redis_client, uid)
    session, _, _ = auth.new_session(store_id, "T1", await engine.now())
    kept: list = []
    async with aiohttp.ClientSession() as http:
        assert await _attempt(http, f"{doomed.ws_url}?token={session}", kept) is None
        doomed.kill()
        assert await _attempt(http, f"{survivor.ws_url}?token={session}", []) == CloseCode.POLICY_VIOLATION
        await asyncio.sleep(2.5)
        assert await _attempt(http, f"{survivor.ws_url}?token={session}", kept) is None
        for ws in kept:
            await ws.close()


@pytest.fixture
def settings(settings):
    """This module's in-process coordinator replays at most 5 events per ``since``."""
    return settings.model_copy(update={"ws_replay_max_events": 5})


async def test_a_since_further_behind_than_the_replay_bound_gets_a_snapshot(client, shop):
    """Within ws_replay_max_events the missed events are replayed; further behind, a snapshot instead."""
    svc = services(client)
    start = await svc.engine.seq(shop.store_id)
    for version in range(2, 10):
        await svc.engine.put_order(shop.store_id, OrderIn.model_validate(order_body(version=version)), SYSTEM)
    seq = await svc.engine.seq(shop.store_id)
    assert seq - start == 8
    # An H5 socket (a terminal's own connect would add a terminal.status event).
    token, _, _ = svc.auth.new_session(shop.store_id, "T1", await svc.engine.now())
    sock, _, first = await open_socket(client, f"/api/v1/ws?token={token}&since={seq - 5}")
    assert first["type"] == "event" and first["seq"] == seq - 4
    await sock.ws.close()
    sock, hello, first = await open_socket(client, f"/api/v1/ws?token={token}&since={start}")
    assert first["type"] == "snapshot" and hello["seq"] == seq
    await sock.ws.close()
