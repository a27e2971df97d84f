"""``tablelock serve --workers 2``: two coordinator processes on one port (SO_REUSEPORT) sharing only
Redis: connections land on both, a lock taken through one is seen and pushed through the other,
and SIGTERM to the parent leaves no process behind.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from coordinator.core.models import OrderIn
from coordinator.store import keys
from coordinator.store.directory import Directory
from tests.support.app import SYSTEM, make_engine, order_body
from tests.support.processes import start_coordinator
from tests.support.ws_socket import Socket, open_socket


def children(pid: int) -> set[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def served(redis_url: str, tmp_path: Path):
    """``tablelock serve`` with two workers on the test Redis; sockets per terminal raised for the test."""
    proc = start_coordinator(redis_url, tmp_path / "workers", env={
        "TABLELOCK_WORKERS": "2", "TABLELOCK_WS_PER_TERMINAL": "64"})
    yield proc
    proc.stop()


@pytest.fixture
async def shop(redis_client, uid) -> dict[str, Any]:
    """A store seeded straight into Redis: master terminal A, terminal B, table T1, order o1."""
    engine = make_engine(redis_client)
    directory = Directory(engine, "http://tablelock.test")
    store_id = f"wk-{uid}"
    await directory.put_store(store_id, "店", SYSTEM)
    a = await directory.register_terminal(store_id, "A", True, SYSTEM)
    b = await directory.register_terminal(store_id, "B", False, SYSTEM)
    await directory.put_table(store_id, "T1", "一号桌", SYSTEM)
    await engine.put_order(store_id, OrderIn.model_validate(order_body()), SYSTEM)
    return {"store_id": store_id, "a": a.token, "b": b.token}


async def pinned(url: str, want: set[str], timeout: float = 20.0) -> dict[str, aiohttp.ClientSession]:
    """One keep-alive HTTP session per worker process id in ``want`` (new connections until each is hit)."""
    sessions: dict[str, aiohttp.ClientSession] = {}
    deadline = time.monotonic() + timeout
    while len(sessions) < len(want) and time.monotonic() < deadline:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
        async with session.get(f"{url}/healthz") as response:
            process = (await response.json())["process"]
        if process in sessions or process not in want:
            await session.close()
        else:
            sessions[process] = session
    return sessions


async def worker_ids(url: str, timeout: float = 20.0) -> set[str]:
    """The process ids that answer /healthz over fresh connections, until two are seen (bounded)."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        while len(seen) < 2 and time.monotonic() < deadline:
            async with session.get(f"{url}/healthz") as response:
                seen.add((await response.json())["process"])
            await asyncio.sleep(0.01)
    return seen


async def test_connections_land_on_both_workers(served):
    """New connections to the one port are answered by two different coordinator processes."""
    assert len(await worker_ids(served.url)) == 2


async def test_a_lock_taken_through_one_worker_is_seen_and_pushed_through_the_other(served, shop, redis_client):
    """A lock acquired over HTTP on worker 1 shows on worker 2's GET and reaches sockets held by both workers."""
    ids = await worker_ids(served.url)
    assert len(ids) == 2
    store = shop["store_id"]
    masters = keys.erp_masters(store)
    socks: dict[str, Socket] = {}
    async with aiohttp.ClientSession() as http:
        for _ in range(40):  # open master sockets until one is held by each worker
            before = set(await redis_client.zrange(masters, 0, -1))
            sock, hello, _ = await open_socket(http, f"{served.ws_url}?token={shop['a']}")
            assert hello["type"] == "hello"
            new: set[bytes] = set()
            for _ in range(50):
                new = set(await redis_client.zrange(masters, 0, -1)) - before
                if new:
                    break
                await asyncio.sleep(0.02)
            process = new.pop().decode().split("|", 1)[0]
            socks.setdefault(process, sock)
            if len(socks) == 2:
                break
        assert set(socks) == ids
        sessions = await pinned(served.url, ids)
        try:
            one, two = sorted(ids)
            url = f"{served.url}/api/v1/stores/{store}/orders/o1"
            auth = {"Authorization": f"Bearer {shop['b']}"}
            async with sessions[one].post(f"{url}/locks", json={"kind": "order"}, headers=auth) as response:
                assert response.status == 201, await response.text()
                lock = (await response.json())["lock"]
            async with sessions[two].get(url, headers=auth) as response:
                assert response.status == 200
                assert [x["fence"] for x in (await response.json())["locks"]] == [lock["fence"]]
            for sock in socks.values():
                event = await sock.event("lock.acquired")
                assert event["data"]["lock"]["fence"] == lock["fence"]
        finally:
            for session in sessions.values():
                await session.close()


def test_sigterm_stops_every_worker(served):
    """SIGTERM to the parent ends both workers and the parent itself; the process group is empty."""
    workers = children(served.pid)
    assert len(workers) == 2
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(timeout=30) == 0
    assert not [pid for pid in workers if alive(pid)]
    with pytest.raises(ProcessLookupError):
        os.killpg(served.pid, 0)


def test_a_killed_worker_is_replaced(served):
    """A SIGKILLed worker is restarted by the parent: two workers again, the new one serving on the same port."""
    before = children(served.pid)
    assert len(before) == 2
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    now = before
    while time.monotonic() < deadline:
        now = children(served.pid)
        if len(now) == 2 and victim not in now:
            break
        time.sleep(0.1)
    assert len(now) == 2 and victim not in now and now & before == before - {victim}
    (new,) = now - before
    seen: set[str] = set()
    while time.monotonic() < deadline and not any(p.startswith(f"{new}-") for p in seen):
        seen |= asyncio.run(worker_ids(served.url, timeout=2))
    assert any(p.startswith(f"{new}-") for p in seen), f"worker {new} never answered: {seen}"


def test_workers_below_one_are_refused(tmp_path):
    """``serve --workers 0`` is an invalid setting (exit 2), before anything starts."""
    from coordinator.cli import main

    assert main(["serve", "--workers", "0", "--data-dir", str(tmp_path)]) == 2
