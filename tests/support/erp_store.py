"""pytest plugin: a store made for the ERP simulator through the admin API of an in-process coordinator
(tables T1–T4 and three terminals: 收银台 master, 服务员A, 服务员B) and that store's seeded ERP with its
waiter pages — the fixtures ``store`` and ``sim`` of every waiter-page test module."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from erp_simulator.db import ErpDatabase
from erp_simulator.seed import seed
from erp_simulator.simulator import Simulator, TerminalSpec
from tests.support.app import ADMIN_TOKEN, bearer


@dataclass
class Store:
    """A store made through the admin API: terminal specs (master first), T1's QR token, the base URL."""

    store_id: str
    base_url: str
    terminals: list[TerminalSpec]
    qr: str


async def make_store(client: Any, store_id: str) -> Store:
    """Create a store, tables T1–T4 and three terminals (收银台 master, 服务员A, 服务员B) via the admin API."""
    admin = bearer(ADMIN_TOKEN)
    api = "/api/v1/admin/stores/" + store_id
    assert (await client.put(api, json={"name": "测试店"}, headers=admin)).status == 200
    qr = ""
    for table_id in ("T1", "T2", "T3", "T4"):
        table = await (await client.put(f"{api}/tables/{table_id}", json={"name": table_id}, headers=admin)).json()
        qr = qr or table["qr_url"].split("qr=", 1)[1]
    specs = []
    for name, master in (("收银台", True), ("服务员A", False), ("服务员B", False)):
        created = await (await client.post(f"{api}/terminals", json={"name": name, "master": master},
                                           headers=admin)).json()
        specs.append(TerminalSpec(created["token"], name, master))
    return Store(store_id, str(client.make_url("")).rstrip("/"), specs, qr)


@pytest.fixture
async def store(client: Any, uid: str) -> Store:
    """A fresh store on the in-process coordinator, made for the ERP simulator."""
    return await make_store(client, f"s-{uid}")


@pytest.fixture
async def sim(store: Store, tmp_path: Path) -> AsyncIterator[Simulator]:
    """The store's seeded ERP with its three terminals connected, each with a waiter page on a free port."""
    db = ErpDatabase(tmp_path / "erp.sqlite")
    seed(db)
    simulator = Simulator(store.base_url, store.store_id, store.terminals, db, min_backoff=0.05, max_backoff=0.5)
    await simulator.start(pages_ports=[0, 0, 0], wait=10)
    yield simulator
    await simulator.stop()
    db.close()
