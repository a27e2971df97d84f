"""Seeding stores with websocket clients, and subscriber processes that hold them (P2, P4).

A store here is: table T1 with one open order o1, one *driver* ERP terminal (HTTP only, takes
the locks), ``erp`` ERP terminals and ``h5`` H5 sessions at T1 that each keep a websocket.

``subscriber_main`` runs in a child process (``multiprocessing``, spawn): it opens its share of
the sockets (at most ``CONNECT_AT_ONCE`` handshakes at a time), reports how many it holds, then
records, until told to stop, the time (``time.monotonic``: one clock for every process on the
machine) at which each ``lock.acquired`` / ``lock.released`` event and each of the server's
heartbeat pings reached it (it answers the pings itself, as aiohttp's autoping would).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from common import Api, bounded_gather

CONNECT_AT_ONCE = 50


@dataclass
class StoreSeed:
    """One seeded store: who drives it and who listens."""

    store_id: str
    driver: str
    listeners: list[tuple[str, str]] = field(default_factory=list)  # (role, token)


async def seed_store(api: Api, store_id: str, erp: int, h5: int) -> StoreSeed:
    """Create the store, its table and order, its driver and its listeners, through the API."""
    await api.store(store_id)
    qr = await api.table(store_id, "T1")
    driver = await api.terminal(store_id, "driver", master=True)
    await api.order(store_id, "o1", driver)
    seed = StoreSeed(store_id, driver)
    for i in range(erp):
        seed.listeners.append(("erp", await api.terminal(store_id, f"pos-{i}")))
    for _ in range(h5):
        seed.listeners.append(("h5", await api.h5_session(qr)))
    return seed


async def seed_stores(base: str, stores: int, clients: int, erp_share: float, prefix: str) -> list[StoreSeed]:
    """``stores`` stores sharing ``clients`` listeners, ``erp_share`` of them ERP terminals."""
    per, extra = divmod(clients, stores)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        api = Api(base, session)

        def mix(i: int) -> tuple[int, int]:
            n = per + (1 if i < extra else 0)
            erp = min(n, round(n * erp_share))
            return erp, n - erp

        return await bounded_gather(
            (seed_store(api, f"{prefix}{i}", *mix(i)) for i in range(stores)), 16)


async def _subscribe(ws_url: str, listeners: list[tuple[str, str, str]], report: Any, stop: Any) -> None:
    receipts: list[tuple[str, str, int, float]] = []
    pings: list[float] = []
    failures = 0
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)
    timeout = aiohttp.ClientWSTimeout(ws_close=2)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def connect(store_id: str, token: str) -> None:
            nonlocal failures
            async with gate:
                try:
                    ws = await session.ws_connect(f"{ws_url}?token={token}", heartbeat=None, timeout=timeout,
                                                  max_msg_size=0, autoping=False)
                    # hello + snapshot: the socket is live once both are in (a close frame is a refusal).
                    for _ in range(2):
                        if (await asyncio.wait_for(ws.receive(), 30)).type != aiohttp.WSMsgType.TEXT:
                            raise aiohttp.ClientError(f"closed with {ws.close_code}")
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    failures += 1
                    return
            sockets.append(ws)
            try:
                async for msg in ws:
                    at = time.monotonic()
                    if msg.type == aiohttp.WSMsgType.PING:
                        # The server's heartbeat: answer it, and note when it reached us.
                        pings.append(at)
                        await ws.pong(msg.data)
                        continue
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    if '"lock.' not in msg.data:
                        continue
                    event = json.loads(msg.data)
                    if event.get("type") == "event" and event["name"] in ("lock.acquired", "lock.released"):
                        receipts.append((event["store_id"], event["name"], event["data"]["lock"]["fence"], at))
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                pass

        tasks = [asyncio.create_task(connect(store_id, token)) for store_id, _, token in listeners]
        deadline = time.monotonic() + 600
        while len(sockets) + failures < len(listeners) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        report.put(("connected", len(sockets), failures))
        while not stop.is_set() and time.monotonic() < deadline + 3600:
            await asyncio.sleep(0.1)
        for ws in sockets:
            await ws.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    report.put(("done", receipts, pings))


def subscriber_main(ws_url: str, listeners: list[tuple[str, str, str]], report: Any, stop: Any) -> None:
    """Child process entry: hold ``listeners`` (store_id, role, token) until ``stop`` is set."""
    asyncio.run(_subscribe(ws_url, listeners, report, stop))
