"""pytest plugin: a running restaurant for the H5 tests: the real coordinator on a real port, real Redis, the
ERP simulator's master (cashier) and secondary (waiter) terminals on their websockets.

``restaurant`` seeds, through the admin API, a store with both terminals and table T1, and opens
order ``o1`` in the ERP database (龙井茶 ×2 + 清蒸鲈鱼 = ¥104.00, version 1), pushed by the master.
Its fixtures reach every test module through ``tests/conftest.py``; ``Restaurant``, ``eventually`` and
the menu constants are plain helpers to import.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from coordinator.app import build_app
from erp_simulator.db import ErpDatabase
from erp_simulator.terminal import Terminal
from h5_client.client import H5Client
from tests.support.app import ADMIN_TOKEN

MENU = [("tea", "龙井茶", 1800), ("fish", "清蒸鲈鱼", 6800), ("rice", "米饭", 300), ("greens", "蒜蓉菜心", 2800)]
FIRST_ORDER = [{"sku": "tea", "qty": 2}, {"sku": "fish", "qty": 1}]
FIRST_TOTAL = 2 * 1800 + 6800


async def eventually(check: Callable[[], Any | Awaitable[Any]], *, timeout: float = 5.0,
                     interval: float = 0.05, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy (bounded); return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(interval)


@dataclass
class Restaurant:
    """A seeded store with its coordinator, ERP database and terminals."""

    base_url: str
    store_id: str
    table_id: str
    qr: str
    order_id: str
    db: ErpDatabase
    master: Terminal
    waiter: Terminal
    admin: aiohttp.ClientSession
    diners: list[H5Client] = field(default_factory=list)

    @property
    def page_url(self) -> str:
        """The H5 page of table T1, as its QR code links it (on this test's coordinator)."""
        return f"{self.base_url}/h5/?qr={self.qr}"

    async def patch_config(self, **changes: Any) -> dict[str, Any]:
        """Change the store's configuration as the admin does (PATCH .../config)."""
        url = f"{self.base_url}/api/v1/admin/stores/{self.store_id}/config"
        async with self.admin.patch(url, json=changes) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def diner(self) -> H5Client:
        """A new diner who scanned table T1's QR code (closed after the test)."""
        client = await H5Client.open(self.base_url, self.qr)
        self.diners.append(client)
        return client

    def erp_order(self) -> dict[str, Any]:
        """The order as the ERP database has it."""
        return self.db.order(self.order_id)


async def _json(response_cm: Any, status: int) -> Any:
    async with response_cm as response:
        assert response.status == status, await response.text()
        return await response.json()


@pytest.fixture
async def coordinator_server(aiohttp_server, settings) -> Any:
    """The coordinator app listening on a real loopback port (the browser needs one) that is also its
    public URL, so the sandbox payment provider's notifications reach it (tests/support/payments.py)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Every diner of every test comes from 127.0.0.1 and the session's Redis keeps the counts:
    # lift the per-address session limit so these tests never meet it (test_ratelimit covers it).
    settings = settings.model_copy(update={
        "session_rate_per_minute": 100_000, "h5_rate_per_minute": 100_000,
        "public_url": f"http://127.0.0.1:{port}",
        # Payments: the poller's first query soon (lost-notification tests), provider calls bounded.
        "payment_first_query_ms": 2_500, "payment_provider_timeout_seconds": 1.0,
    })
    return await aiohttp_server(build_app(settings), host="127.0.0.1", port=port)


@pytest.fixture
async def coordinator_url(coordinator_server: Any) -> str:
    """The URL of ``coordinator_server``."""
    return str(coordinator_server.make_url("")).rstrip("/")


@pytest.fixture
async def restaurant(coordinator_url: str, uid: str, tmp_path: Path) -> AsyncIterator[Restaurant]:
    """Store + master and waiter terminals + table T1 + open order o1, all live."""
    base = coordinator_url
    admin = aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    store_id = f"s-{uid}"
    api = f"{base}/api/v1/admin/stores/{store_id}"
    await _json(admin.put(api, json={"name": "湖畔小馆"}), 200)
    cashier = await _json(admin.post(f"{api}/terminals", json={"name": "收银台", "master": True}), 201)
    waiter = await _json(admin.post(f"{api}/terminals", json={"name": "服务员小王", "master": False}), 201)
    table = await _json(admin.put(f"{api}/tables/T1", json={"name": "一号桌"}), 200)
    qr = table["qr_url"].split("qr=", 1)[1]

    db = ErpDatabase(tmp_path / "erp.sqlite")
    db.put_table("T1", "一号桌")
    for sku, name, price in MENU:
        db.put_dish(sku, name, price)
    master = Terminal(base, store_id, cashier["token"], db, name="收银台", master=True)
    second = Terminal(base, store_id, waiter["token"], db, name="服务员小王")
    for terminal in (master, second):
        await terminal.start()
        await terminal.wait_connected(10)
    order = await master.open_order("T1", FIRST_ORDER)
    shop = Restaurant(base, store_id, "T1", qr, order["order_id"], db, master, second, admin)
    try:
        yield shop
    finally:
        for diner in shop.diners:
            await diner.close()
        await asyncio.wait_for(second.stop(), 10)
        await asyncio.wait_for(master.stop(), 10)
        await admin.close()
        db.close()
