"""pytest plugin: fixtures that run the real coordinator app (in-process, real sockets) on a real Redis.

``client`` is an aiohttp test client of ``build_app``; ``shop`` seeds a store through the
coordinator's own Directory and LockEngine: two terminals (A is the master), a table, and an
open order ``o1`` of 2 lines, total 3,800 cents, version 1. The helpers (``bearer``, ``order_body``,
``services``, ``make_engine``, ``h5``, ``post``) are plain functions to import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from coordinator.app import build_app
from coordinator.core.models import OrderIn, StoreConfig
from coordinator.services import SERVICES, Services
from coordinator.settings import Settings, load_store_defaults
from coordinator.store.engine import LockEngine

ADMIN_TOKEN = "test-admin-token-0123456789"
SYSTEM = {"role": "admin"}


@pytest.fixture
def settings(redis_url: str, tmp_path) -> Settings:
    """Settings of a coordinator on the test Redis, with known secrets."""
    return Settings(
        redis_url=redis_url, data_dir=tmp_path, admin_token=ADMIN_TOKEN,
        secret_key="test-secret-key-0123456789", public_url="http://tablelock.test",
        # Every test opens sessions from 127.0.0.1 against the shared Redis: the rate limits
        # (counted across tests) are out of the way here; tests/test_ratelimit.py sets its own.
        session_rate_per_minute=1_000_000, h5_rate_per_minute=1_000_000,
        ws_connect_rate_per_minute=1_000_000, ws_per_address=1_000_000,
    )


@pytest.fixture
async def client(aiohttp_client, settings):
    """A test client of the coordinator app."""
    return await aiohttp_client(build_app(settings))


def services(client) -> Services:
    """The Services of the app behind ``client``."""
    return client.server.app[SERVICES]


def make_engine(redis: Any) -> LockEngine:
    """A LockEngine on ``redis`` with the default store configuration."""
    return LockEngine(redis, defaults=StoreConfig.model_validate(load_store_defaults()))


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for ``token``."""
    return {"Authorization": f"Bearer {token}"}


def order_body(order_id: str = "o1", table_id: str = "T1", version: int = 1, status: str = "open",
               items: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """An Order as the ERP pushes it; total_cents is the sum of the lines."""
    if items is None:
        items = [
            {"line_id": "l1", "sku": "tea", "name": "茶", "qty": 2, "unit_price_cents": 900, "source": "erp"},
            {"line_id": "l2", "sku": "rice", "name": "米饭", "qty": 1, "unit_price_cents": 2000, "source": "erp"},
        ]
    total = sum(i["qty"] * i["unit_price_cents"] for i in items)
    return {"order_id": order_id, "table_id": table_id, "version": version, "status": status,
            "items": items, "total_cents": total}


@dataclass
class Shop:
    """A seeded store: ids and tokens for its terminals, a table and an H5 session on it."""

    store_id: str
    a: str          # token of terminal A (master)
    a_id: str
    b: str          # token of terminal B
    b_id: str
    table_id: str
    qr: str         # QR token of the table
    order_id: str = "o1"


@pytest.fixture
async def shop(client, uid) -> Shop:
    """Seed a store with terminals A (master) and B, table T1 and open order o1."""
    svc = services(client)
    store_id = f"s-{uid}"
    await svc.directory.put_store(store_id, "测试店", SYSTEM)
    a = await svc.directory.register_terminal(store_id, "收银台", True, SYSTEM)
    b = await svc.directory.register_terminal(store_id, "服务员B", False, SYSTEM)
    table = await svc.directory.put_table(store_id, "T1", "一号桌", SYSTEM)
    await svc.engine.put_order(store_id, OrderIn.model_validate(order_body()), {"role": "erp", "terminal_id": a.terminal_id, "name": a.name})
    qr = table.qr_url.split("qr=", 1)[1]
    return Shop(store_id, a.token, a.terminal_id, b.token, b.terminal_id, "T1", qr)


async def h5(client, shop: Shop) -> dict[str, str]:
    """The Authorization header of a new H5 session on the shop's table."""
    resp = await client.post("/api/v1/h5/sessions", json={"qr_token": shop.qr})
    assert resp.status == 201, await resp.text()
    return bearer((await resp.json())["session_token"])


async def post(client, path: str, headers: dict[str, str], body: Any = None) -> tuple[int, dict]:
    """POST ``path`` (under /api/v1) on the in-process app; returns (status, JSON body)."""
    resp = await client.post("/api/v1" + path, json=body, headers=headers)
    return resp.status, await resp.json()
