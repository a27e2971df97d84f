"""Races over real HTTP on a real Redis (single node and cluster): one grant, strictly rising fences.

H5 sessions are opened through ``POST /h5/sessions``; their pay attempts go through the same
``LockEngine.acquire`` as the H5 checkout does (checkout itself needs the ERP RPC, so it is not
used here), concurrently with the terminals' HTTP requests.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest

from coordinator.core.errors import LockConflict
from coordinator.core.rules import Kind
from coordinator.store import keys
from tests.support.app import SYSTEM, bearer, services


@pytest.fixture
def settings(settings):
    """The shared settings with session rate limits out of the way of these tests."""
    return settings.model_copy(update={"session_rate_per_minute": 10_000, "h5_rate_per_minute": 10_000})


def locks_url(shop) -> str:
    """POST .../locks of the shop's order."""
    return f"/api/v1/stores/{shop.store_id}/orders/{shop.order_id}/locks"


async def terminals(client, shop, extra: int) -> list[str]:
    """Tokens of the shop's terminals A and B plus ``extra`` new ones."""
    directory = services(client).directory
    created = [await directory.register_terminal(shop.store_id, f"终端{i}", False, SYSTEM) for i in range(extra)]
    return [shop.a, shop.b, *(t.token for t in created)]


async def h5_holders(client, shop, count: int) -> list[dict[str, Any]]:
    """Holders of ``count`` sessions opened by scanning the table's QR code."""
    svc, holders = services(client), []
    for _ in range(count):
        resp = await client.post("/api/v1/h5/sessions", json={"qr_token": shop.qr})
        assert resp.status == 201
        token = (await resp.json())["session_token"]
        holders.append((await svc.auth.authenticate(token, await svc.engine.now())).holder())
    return holders


async def events_named(client, shop, name: str) -> list[dict]:
    """The store's retained events called ``name``."""
    entries = await services(client).redis.xrange(keys.events(shop.store_id))
    events = [json.loads(fields[b"e"]) for _, fields in entries]
    return [e for e in events if e["name"] == name]


async def test_two_hundred_concurrent_pay_attempts_grant_exactly_one_lock(client, shop):
    """200 simultaneous pays from 12 terminals and 10 diners yield one payment lock, held by one client."""
    engine = services(client).engine
    erp_tokens, diners = await terminals(client, shop, 10), await h5_holders(client, shop, 10)

    async def erp_pay(token: str) -> tuple[str, int, Any]:
        resp = await client.post(locks_url(shop), json={"kind": "payment"}, headers=bearer(token))
        data = await resp.json()
        return token, resp.status, data["lock"] if resp.status == 201 else data["error"]["code"]

    async def h5_pay(holder: dict) -> tuple[str, int, Any]:
        try:
            lock, _ = await engine.acquire(shop.store_id, shop.order_id, holder, Kind.PAYMENT)
        except LockConflict as denied:
            return holder["session_id"], 409, denied.code
        return holder["session_id"], 201, lock

    attempts = [erp_pay(erp_tokens[i % len(erp_tokens)]) if i % 2 else h5_pay(diners[i % len(diners)])
                for i in range(200)]
    random.shuffle(attempts)
    results = await asyncio.gather(*attempts)

    granted = [(who, lock) for who, status, lock in results if status == 201]
    winners = {who for who, _ in granted}
    assert len(winners) == 1, winners
    assert len({lock["fence"] for _, lock in granted}) == 1  # the winner's repeats got the same lock
    assert {(status, code) for who, status, code in results if who not in winners} == {(409, "PAYMENT_LOCKED")}
    assert len(await events_named(client, shop, "lock.acquired")) == 1
    _, held = await engine.get_order(shop.store_id, shop.order_id)
    assert [l["fence"] for l in held] == [granted[0][1]["fence"]]


async def test_concurrent_forced_pays_leave_one_lock_with_distinct_fences(client, shop):
    """100 simultaneous forced pays from 12 terminals: every grant has its own fence; one lock remains."""
    erp_tokens = await terminals(client, shop, 10)

    async def force_pay(token: str) -> tuple[int, Any]:
        resp = await client.post(locks_url(shop), json={"kind": "payment", "force": True}, headers=bearer(token))
        return resp.status, await resp.json()

    results = await asyncio.gather(*(force_pay(erp_tokens[i % len(erp_tokens)]) for i in range(100)))
    assert {status for status, _ in results} == {201}
    acquired = await events_named(client, shop, "lock.acquired")
    forced = await events_named(client, shop, "lock.forced")
    fences = [e["data"]["lock"]["fence"] for e in acquired]
    assert fences == sorted(set(fences))  # in seq order, strictly rising
    assert len(forced) == len(acquired) - 1  # every grant but the first broke exactly one lock
    _, held = await services(client).engine.get_order(shop.store_id, shop.order_id)
    assert [(l["kind"], l["fence"]) for l in held] == [("payment", fences[-1])]


async def test_fence_strictly_increases_over_a_thousand_grants(client, shop):
    """1,000 sequential acquire+release rounds over all kinds and two terminals give rising fences."""
    previous = 0
    for i in range(1000):
        kind, token = ("order", "presettle", "payment")[i % 3], (shop.a, shop.b)[i % 2]
        resp = await client.post(locks_url(shop), json={"kind": kind}, headers=bearer(token))
        assert resp.status == 201, await resp.text()
        lock = (await resp.json())["lock"]
        assert lock["fence"] > previous
        previous = lock["fence"]
        release = await client.post(f"{locks_url(shop)}/{kind}/release", json={"token": lock["token"]},
                                    headers=bearer(token))
        assert await release.json() == {"released": True}
