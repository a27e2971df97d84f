"""Issue 15 finding 3: refused H5 requests cannot flood the audit log. Per table and window, the first
refusal of a kind per session is written (at most ``h5_refusals_per_table``); the rest are counted
and written as one ``h5.refused_counted`` entry per order; staff entries are untouched and survive a
flood; a flood opens no reconciliation case.

With no H5 completion (SPEC §9), the H5 refusal that writes is an add-on refused during a payment
(``order.addon_refused``, h5/addons.py): the flood goes through ``POST /h5/items``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from coordinator.core.errors import LockLost
from coordinator.core.models import OrderIn, StoreConfig
from coordinator.core.rules import Kind
from coordinator.settings import load_store_defaults
from coordinator.store import keys
from coordinator.store.engine import LockEngine
from tests.support.app import ADMIN_TOKEN, SYSTEM, bearer, h5, order_body, services

pytestmark = pytest.mark.security

ADDON = {"items": [{"sku": "rice", "qty": 1}]}


async def _audit(redis: Any, store_id: str) -> list[tuple[dict, dict]]:
    """Every audit entry of the store, oldest first: (event, actor)."""
    rows = await redis.xrange(keys.audit(store_id))
    return [(json.loads(f[b"e"]), json.loads(f[b"actor"])) for _, f in rows]


def _h5_refusals(entries: list[tuple[dict, dict]]) -> list[dict]:
    return [e for e, actor in entries if e["name"] == "order.addon_refused" and actor.get("role") == "h5"]


async def _cashier_pays(client, shop) -> None:
    """The cashier holds o1's payment lock: every diner add-on is refused PAYMENT_LOCKED meanwhile."""
    cashier = {"role": "erp", "terminal_id": shop.a_id, "name": "收银台"}
    await services(client).engine.acquire(shop.store_id, "o1", cashier, Kind.PAYMENT)


async def _refused_addon(client, diner: dict[str, str]) -> None:
    resp = await client.post("/api/v1/h5/items", json={**ADDON, "request_id": uuid.uuid4().hex}, headers=diner)
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "PAYMENT_LOCKED"


async def test_500_refused_addons_from_one_session_write_one_entry_and_a_count(client, shop):
    """500 add-ons refused during a payment: one order.addon_refused is written, the other 499 appear as
    one counted entry when the admin reads the log, and reconciliation opens no case for them."""
    svc = services(client)
    await _cashier_pays(client, shop)
    diner = await h5(client, shop)
    for _ in range(500):
        await _refused_addon(client, diner)
    entries = await _audit(svc.redis, shop.store_id)
    assert len(_h5_refusals(entries)) == 1
    assert len(entries) < 20  # the seeding, the cashier's lock and one refusal, not 500

    admin = bearer(ADMIN_TOKEN)
    resp = await client.get(f"/api/v1/admin/stores/{shop.store_id}/audit?limit=500", headers=admin)
    page = await resp.json()
    [counted] = [e for e in page["entries"] if e["name"] == "h5.refused_counted"]
    assert counted["data"]["count"] == 499 and counted["data"]["codes"] == {"PAYMENT_LOCKED": 499}
    assert counted["order_id"] == "o1" and counted["table_id"] == "T1"
    resp = await client.get(f"/api/v1/admin/stores/{shop.store_id}/reconciliation", headers=admin)
    assert (await resp.json())["cases"] == []  # an add-on refused while a lock is held is no money problem


async def test_many_sessions_write_at_most_the_table_cap(client, shop):
    """20 sessions on one table, 10 refused add-ons each: 5 (h5_refusals_per_table) written, 195 counted."""
    svc = services(client)
    await _cashier_pays(client, shop)
    for _ in range(20):
        diner = await h5(client, shop)
        for _ in range(10):
            await _refused_addon(client, diner)
    await svc.engine.flush_refusals(shop.store_id)
    entries = await _audit(svc.redis, shop.store_id)
    assert len(_h5_refusals(entries)) == 5
    counted = [e for e, _ in entries if e["name"] == "h5.refused_counted"]
    assert sum(e["data"]["count"] for e in counted) == 195


def _engine(redis: Any, **kwargs: Any) -> LockEngine:
    return LockEngine(redis, defaults=StoreConfig.model_validate(load_store_defaults()), **kwargs)


async def _store(engine: LockEngine, uid: str) -> str:
    store_id = f"flood-{uid}"
    await engine.put_order(store_id, OrderIn.model_validate(order_body()), SYSTEM)
    return store_id


ERP = {"role": "erp", "terminal_id": "A", "name": "收银台"}
DINER = {"role": "h5", "session_id": "diner-1"}


async def _refuse_addon(engine: LockEngine, store_id: str, actor: dict) -> None:
    """A diner's add-on refused during a payment, recorded as h5/addons.py records it (under the bound)."""
    await engine.emit_refusal(store_id, "order.addon_refused", {"code": "PAYMENT_LOCKED", **ADDON}, actor,
                              table_id="T1", order_id="o1", code="PAYMENT_LOCKED")


async def _refuse_completion(engine: LockEngine, store_id: str, actor: dict) -> None:
    """A terminal's own completion refused (no lock held): payment.rejected."""
    with pytest.raises(LockLost):
        await engine.complete(store_id, "o1", actor, token="bad", amount_cents=3800, version=1, payment_ref="x")


async def test_staff_entries_survive_a_flood_of_a_capped_log(redis_client, uid):
    """With the audit and event streams capped at 100, 20 staff entries outlive 500 refused H5 requests."""
    engine = _engine(redis_client, audit_retention=100, event_retention=100)
    store_id = await _store(engine, uid)
    for _ in range(10):
        lock, _ = await engine.acquire(store_id, "o1", ERP, Kind.ORDER)
        await engine.release(store_id, "o1", Kind.ORDER, lock["token"], ERP)
    staff = [e["seq"] for e, actor in await _audit(redis_client, store_id) if actor.get("role") == "erp"]
    assert len(staff) == 20
    for _ in range(500):
        await _refuse_addon(engine, store_id, DINER)
    entries = await _audit(redis_client, store_id)
    assert [e["seq"] for e, actor in entries if actor.get("role") == "erp"] == staff
    events = await redis_client.xrange(keys.events(store_id))
    assert len(events) >= 21  # the staff's events, still there to resume from


async def test_erp_refusals_are_written_one_by_one(redis_client, uid):
    """A terminal's refused completions are staff actions: every one is written."""
    engine = _engine(redis_client)
    store_id = await _store(engine, uid)
    for _ in range(12):
        await _refuse_completion(engine, store_id, ERP)
    entries = await _audit(redis_client, store_id)
    assert len([e for e, a in entries if e["name"] == "payment.rejected" and a["role"] == "erp"]) == 12
    assert not [e for e, _ in entries if e["name"] == "h5.refused_counted"]


async def test_the_count_is_written_when_the_window_rolls(redis_client, uid):
    """Refusals counted in one window are written, in time order, before the next window's first refusal."""
    engine = _engine(redis_client, refusal_window_ms=300)
    store_id = await _store(engine, uid)
    for _ in range(4):
        await _refuse_addon(engine, store_id, DINER)
    await asyncio.sleep(0.35)
    await _refuse_addon(engine, store_id, DINER)
    names = [e["name"] for e, _ in await _audit(redis_client, store_id) if e["name"] != "order.updated"]
    assert names == ["order.addon_refused", "h5.refused_counted", "order.addon_refused"]
    counted = [e for e, _ in await _audit(redis_client, store_id) if e["name"] == "h5.refused_counted"]
    assert counted[0]["data"]["count"] == 3
