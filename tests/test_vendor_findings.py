"""What an independent ERP client found (issue 17), pinned: the end of a replay has a shape, a
replayed event is the event as it went out live, the ERP's version of a paid order is kept, and
LOCK_LOST speaks of the lock that was lost.

Every test runs against the single Redis and the 3-master cluster (``redis_url`` is parametrized).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from coordinator.core import errors
from coordinator.core.rules import Kind
from coordinator.realtime import liveness
from tests.support.app import ADMIN_TOKEN, Shop, bearer, h5, post, services
from tests.support.erp_master import until
from tests.support.payments import wechat_notification
from tests.support.ws_socket import Socket


async def connect(client: Any, token: str, since: int | None = None) -> tuple[Socket, dict]:
    """Open a socket and read its hello only."""
    url = f"/api/v1/ws?token={token}" + (f"&since={since}" if since is not None else "")
    sock = Socket(await client.ws_connect(url, autoclose=False))
    hello = await sock.next()
    assert hello["type"] == "hello"
    return sock, hello


def holder(shop: Shop, which: str = "b") -> dict[str, Any]:
    """The holder dict of terminal A or B."""
    return {"role": "erp", "terminal_id": getattr(shop, f"{which}_id"), "name": "收银台" if which == "a" else "服务员B"}


def _event_texts(sock: Socket) -> dict[int, str]:
    """The event frames a socket received, as sent, by seq."""
    return {json.loads(t)["seq"]: t for t in sock.texts if '"type":"event"' in t}


# --- 3: the end of a replay ---------------------------------------------------------------------


async def test_hello_says_a_snapshot_follows_or_how_many_replayed_events(client, shop):
    """hello carries ``resume`` and ``replay_count``: snapshot / 0, the exact count replayed, and 0 with nothing after it."""
    svc = services(client)
    first, hello = await connect(client, shop.a)
    assert (hello["resume"], hello["replay_count"]) == ("snapshot", 0)
    assert (await first.next())["type"] == "snapshot"
    # A second socket of A (A stays online: no terminal.status) that has missed nothing.
    up_to_date, hello2 = await connect(client, shop.a, since=await svc.engine.seq(shop.store_id))
    assert (hello2["resume"], hello2["replay_count"]) == ("replay", 0)
    assert await up_to_date.quiet(0.3) == []  # nothing follows: the replay is over at hello
    await up_to_date.ws.close()
    lock, _ = await svc.engine.acquire(shop.store_id, "o1", holder(shop, "b"), Kind.ORDER)
    await svc.engine.release(shop.store_id, "o1", Kind.ORDER, lock["token"], holder(shop, "b"))
    behind, hello3 = await connect(client, shop.a, since=hello["seq"])
    assert (hello3["resume"], hello3["replay_count"]) == ("replay", 2)
    replayed = [await behind.next() for _ in range(hello3["replay_count"])]
    assert [e["name"] for e in replayed] == ["lock.acquired", "lock.released"]
    assert replayed[-1]["seq"] == hello3["seq"]
    assert await behind.quiet(0.3) == []
    for sock in (first, behind):
        await sock.ws.close()


# --- 4: replayed events are the events that went out live ------------------------------------------


async def test_a_replayed_event_is_byte_for_byte_the_live_one(client, shop):
    """lock.renewed (holder_offline) shows holder.online false live and still false replayed after the holder came back."""
    svc = services(client)
    store = shop.store_id
    watcher, _ = await connect(client, shop.a)
    await watcher.next()  # snapshot
    waiter, _ = await connect(client, shop.b)
    await waiter.next()
    await svc.engine.acquire(store, "o1", holder(shop, "b"), Kind.ORDER)
    acquired = await watcher.event("lock.acquired")
    await waiter.ws.close()
    capped = await watcher.event("lock.renewed")
    live_text = watcher.texts[-1]
    assert capped["data"]["reason"] == "holder_offline"
    assert capped["data"]["lock"]["holder"]["online"] is False
    back, _ = await connect(client, shop.b)  # the waiter is online again
    await watcher.event("terminal.status")
    again, hello = await connect(client, shop.a, since=acquired["seq"] - 1)
    await again.events_until(hello["seq"])
    live, replayed = _event_texts(watcher), _event_texts(again)
    assert replayed[capped["seq"]] == live_text
    assert {acquired["seq"], capped["seq"]} <= live.keys() & replayed.keys()
    assert all(replayed[seq] == live[seq] for seq in live.keys() & replayed.keys())
    for sock in (watcher, back, again):
        await sock.ws.close()


# --- 7: LOCK_LOST names the lock that was lost -----------------------------------------------------


async def test_renewing_a_lost_lock_speaks_of_its_kind(client, shop):
    """Renewing a lost order / presettle lock answers LOCK_LOST with that kind's text; a payment keeps SPEC §5's."""
    svc = services(client)
    store = shop.store_id
    seen = {}
    for kind in (Kind.ORDER, Kind.PRESETTLE, Kind.PAYMENT):
        lock, _ = await svc.engine.acquire(store, "o1", holder(shop, "b"), kind, expected_version=1)
        await svc.engine.release(store, "o1", kind, lock["token"], holder(shop, "b"))
        resp = await client.post(f"/api/v1/stores/{store}/orders/o1/locks/{kind.value}/renew",
                                 json={"token": lock["token"]}, headers=bearer(shop.b))
        body = await resp.json()
        assert resp.status == 409 and body["error"]["code"] == "LOCK_LOST"
        seen[kind.value] = (body["error"]["message"], body["error"]["message_en"])
    assert len({zh for zh, _ in seen.values()}) == 3, seen
    assert seen == errors.LOCK_LOST_BY_KIND
    assert seen["payment"] == errors.MESSAGES["LOCK_LOST"]


# --- 6: the ERP's version of a paid order is kept --------------------------------------------------


async def test_an_order_pay_answer_with_a_new_version_is_stored_at_that_version(client, shop, erp, sandbox):
    """The ERP answering order.pay with version + 1: the coordinator ends paid at the ERP's version, not its own."""
    svc = services(client)
    erp.behaviour.answer_paid_as_new_version = True
    headers = await h5(client, shop)
    _, grant = await post(client, "/h5/checkout", headers)
    resp = await client.put(f"/api/v1/admin/stores/{shop.store_id}/payments/providers/wechatpay",
                            json=sandbox.credentials["wechatpay"], headers=bearer(ADMIN_TOKEN))
    assert resp.status == 200
    status, started = await post(client, "/h5/payments/start", headers,
                                 {"token": grant["lock"]["token"], "provider": "wechatpay"})
    assert status == 201, started
    note_headers, body = wechat_notification(sandbox, out_trade_no=started["out_trade_no"],
                                             amount_cents=grant["order"]["total_cents"], transaction_id="4200000000017")
    resp = await client.post(f"/api/v1/payments/notify/wechatpay/{shop.store_id}", data=body, headers=note_headers)
    assert resp.status in (200, 204)

    async def paid_at_erps_version() -> bool:
        order, _ = await svc.engine.get_order(shop.store_id, "o1")
        return order["status"] == "paid" and order["version"] == 2

    await until(paid_at_erps_version)
    assert erp.db.order("o1")["version"] == 2


def test_lua_and_liveness_agree_on_when_a_presence_entry_is_stale():
    """lib.lua's PRESENCE_STALE_MS (events' holder.online) is liveness.STALE_MS (snapshots, the hub)."""
    lib = Path(liveness.__file__).resolve().parent.parent / "store" / "lua" / "lib.lua"
    assert f"local PRESENCE_STALE_MS = {liveness.STALE_MS}\n" in lib.read_text()
