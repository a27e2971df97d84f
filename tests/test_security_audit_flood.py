"""Issue 15 finding 3: refused H5 requests cannot flood the audit log. Per table and window, the first
refusal of a kind per session is written (at most ``h5_refusals_per_table``); the rest are counted
and written as one ``h5.refused_counted`` entry per order; staff entries are untouched and survive a
flood; a flood opens at most one reconciliation case.
"""

from __future__ import annotations

import asyncio
import json
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

BAD_PAYMENT = {"token": "not-a-lock-token", "amount_cents": 3800, "version": 1, "payment_ref": "flood"}


async def _audit(redis: Any, store_id: str) -> list[tuple[dict, dict]]:
    """Every audit entry of the store, oldest first: (event, actor)."""
    rows = await redis.xrange(keys.audit(store_id))
    return [(json.loads(f[b"e"]), json.loads(f[b"actor"])) for _, f in rows]


def _h5_rejections(entries: list[tuple[dict, dict]]) -> list[dict]:
    return [e for e, actor in entries if e["name"] == "payment.rejected" and actor.get("role") == "h5"]


async def test_500_refused_payments_from_one_session_write_one_entry_and_a_count(client, shop):
    """500 refused H5 completions: one payment.rejected is written, the other 499 appear as one counted
    entry when the admin reads the log, and reconciliation shows one case for the order."""
    svc = services(client)
    diner = await h5(client, shop)
    for _ in range(500):
        resp = await client.post("/api/v1/h5/payments", json=BAD_PAYMENT, headers=diner)
        assert resp.status == 409 and (await resp.json())["error"]["code"] == "LOCK_LOST"
    entries = await _audit(svc.redis, shop.store_id)
    assert len(_h5_rejections(entries)) == 1
    assert len(entries) < 20  # the seeding and one refusal, not 500

    admin = bearer(ADMIN_TOKEN)
    resp = await client.get(f"/api/v1/admin/stores/{shop.store_id}/audit?limit=500", headers=admin)
    page = await resp.json()
    [counted] = [e for e in page["entries"] if e["name"] == "h5.refused_counted"]
    assert counted["data"]["count"] == 499 and counted["data"]["codes"] == {"LOCK_LOST": 499}
    assert counted["order_id"] == "o1" and counted["table_id"] == "T1"
    resp = await client.get(f"/api/v1/admin/stores/{shop.store_id}/reconciliation", headers=admin)
    [case] = (await resp.json())["cases"]
    assert case["order_id"] == "o1" and case["reasons"] == ["payment_rejected"]
    assert len(case["trail"]) <= 3


async def test_many_sessions_write_at_most_the_table_cap(client, shop):
    """20 sessions on one table, 10 refusals each: 5 (h5_refusals_per_table) written, 195 counted."""
    svc = services(client)
    for _ in range(20):
        diner = await h5(client, shop)
        for _ in range(10):
            resp = await client.post("/api/v1/h5/payments", json=BAD_PAYMENT, headers=diner)
            assert resp.status == 409
    await svc.engine.flush_refusals(shop.store_id)
    entries = await _audit(svc.redis, shop.store_id)
    assert len(_h5_rejections(entries)) == 5
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


async def _refuse(engine: LockEngine, store_id: str, actor: dict, mode: str = "begin") -> None:
    with pytest.raises(LockLost):
        await engine.complete(store_id, "o1", actor, token="bad", amount_cents=3800, version=1,
                              payment_ref="x", mode=mode, window_ms=1000)


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
        await _refuse(engine, store_id, DINER)
    entries = await _audit(redis_client, store_id)
    assert [e["seq"] for e, actor in entries if actor.get("role") == "erp"] == staff
    events = await redis_client.xrange(keys.events(store_id))
    assert len(events) >= 21  # the staff's events, still there to resume from


async def test_erp_refusals_are_written_one_by_one(redis_client, uid):
    """A terminal's refused completions are staff actions: every one is written."""
    engine = _engine(redis_client)
    store_id = await _store(engine, uid)
    for _ in range(12):
        await _refuse(engine, store_id, ERP, mode="self")
    entries = await _audit(redis_client, store_id)
    assert len([e for e, a in entries if e["name"] == "payment.rejected" and a["role"] == "erp"]) == 12
    assert not [e for e, _ in entries if e["name"] == "h5.refused_counted"]


async def test_the_count_is_written_when_the_window_rolls(redis_client, uid):
    """Refusals counted in one window are written, in time order, before the next window's first refusal."""
    engine = _engine(redis_client, refusal_window_ms=300)
    store_id = await _store(engine, uid)
    for _ in range(4):
        await _refuse(engine, store_id, DINER)
    await asyncio.sleep(0.35)
    await _refuse(engine, store_id, DINER)
    names = [e["name"] for e, _ in await _audit(redis_client, store_id) if e["name"] != "order.updated"]
    assert names == ["payment.rejected", "h5.refused_counted", "payment.rejected"]
    counted = [e for e, _ in await _audit(redis_client, store_id) if e["name"] == "h5.refused_counted"]
    assert counted[0]["data"]["count"] == 3
