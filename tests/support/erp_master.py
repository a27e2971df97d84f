"""pytest plugin: the ERP for the in-process ``shop`` — the ERP simulator's database and its master
terminal (收银台, terminal A) on a real websocket, answering the coordinator's RPCs.

The ERP database holds what the coordinator was seeded with: table T1, the menu of ``MENU``, and
order ``o1`` (茶 ×2 + 米饭 = 3,800 cents, version 1), the same order ``order_body()`` describes. A test
changes the ERP's data through ``erp.db`` and its conduct through ``erp.behaviour``
(``erp_simulator.rpc.Behaviour``: slow, hung, eager to push, refusing); ``erp.calls`` journals the RPCs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coordinator.store import keys
from erp_simulator.db import ErpDatabase
from erp_simulator.rpc import Behaviour
from erp_simulator.terminal import Terminal
from tests.support.app import Shop, services

#: The ERP's menu as ``menu.list`` answers it.
MENU = [{"sku": "tea", "name": "茶", "unit_price_cents": 900}, {"sku": "rice", "name": "米饭", "unit_price_cents": 2000},
        {"sku": "soup", "name": "汤", "unit_price_cents": 1500}]
#: Order o1's lines, as ``order_body()`` has them (line ids l1, l2 come out the same).
FIRST_ORDER = [{"sku": "tea", "qty": 2}, {"sku": "rice", "qty": 1}]


@dataclass
class ErpMaster:
    """A store's ERP: its database and its master terminal, connected."""

    db: ErpDatabase
    terminal: Terminal

    @property
    def behaviour(self) -> Behaviour:
        """The master's conduct (change its fields to make the ERP slow, hung, eager or refusing)."""
        return self.terminal.rpc.behaviour

    @property
    def calls(self) -> list[tuple[str, dict[str, Any]]]:
        """Every RPC received, as (method, params), oldest first."""
        return self.terminal.rpc.received

    def methods(self, name: str) -> list[dict[str, Any]]:
        """The params of every call of ``name`` received so far."""
        return self.terminal.rpc.calls_of(name)


def erp_database(path: Path) -> ErpDatabase:
    """An ERP database with table T1, the menu and order o1 at version 1."""
    db = ErpDatabase(path)
    db.put_table("T1", "一号桌")
    for dish in MENU:
        db.put_dish(dish["sku"], dish["name"], dish["unit_price_cents"])
    db.open_order("T1", FIRST_ORDER, order_id="o1")
    return db


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Wait (bounded) until ``predicate()`` is true."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def start_master(base_url: str, store_id: str, token: str, db: ErpDatabase) -> Terminal:
    """The master terminal (收银台) of ``store_id`` connected to the coordinator at ``base_url``."""
    terminal = Terminal(base_url, store_id, token, db, name="收银台", master=True, min_backoff=0.05, max_backoff=0.5)
    await terminal.start()
    await terminal.wait_connected(10)
    return terminal


@pytest.fixture
async def erp(client, shop: Shop, tmp_path: Path) -> AsyncIterator[ErpMaster]:
    """The shop's ERP (order o1 at version 1, as the coordinator knows it) with its master socket registered."""
    db = erp_database(tmp_path / "erp.sqlite")
    terminal = await start_master(str(client.make_url("")).rstrip("/"), shop.store_id, shop.a, db)
    try:
        async def registered() -> bool:
            return await services(client).redis.zcard(keys.erp_masters(shop.store_id)) > 0

        await until(registered)
        yield ErpMaster(db, terminal)
    finally:
        await asyncio.wait_for(terminal.stop(), 10)
        db.close()
