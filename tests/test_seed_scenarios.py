"""The seed scenarios of the product, end to end over real HTTP and real websockets.

A waiter's terminal edits the order; a diner's page sees it, cannot pay but can add dishes; the
cashier's terminal (the master, which also answers the ERP RPCs) tries to pay, gets the force
warning, forces, and the waiter is told who took the lock. Runs against the single Redis and the
3-master cluster.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from tests.support.app import bearer, h5, post

ORDER_LOCKED_FOR_PAYER = "订单正在其他机器修改,暂不能支付"
ORDER_LOCKED_FORCE_CONFIRM = "此订单正在其他机器修改,是否强制解锁并继续?"


class Listener:
    """One websocket subscriber that keeps every event it receives, and its raw text."""

    def __init__(self, ws: Any) -> None:
        self.ws, self.events, self.raw = ws, [], []

    async def until(self, name: str, after: int = 0, timeout: float = 5.0) -> dict[str, Any]:
        """The first event ``name`` with seq > ``after``, seen or to come; bounded wait."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event["name"] == name and event["seq"] > after:
                    return event
            left = deadline - time.monotonic()
            assert left > 0, f"no {name} after seq {after} in {[e['name'] for e in self.events]}"
            try:
                message = await self.ws.receive(timeout=left)
            except asyncio.TimeoutError:
                continue
            if message.type.name != "TEXT":
                continue
            self.raw.append(message.data)
            body = json.loads(message.data)
            if body.get("type") == "event":
                self.events.append(body)


async def listen(client, token: str) -> Listener:
    """Open a websocket for ``token`` and read past its hello and snapshot."""
    ws = await client.ws_connect(f"/api/v1/ws?token={token}")
    hello = await ws.receive_json(timeout=5)
    assert hello["type"] == "hello"
    snapshot = await ws.receive_json(timeout=5)
    assert snapshot["type"] == "snapshot"
    return Listener(ws)


async def test_waiter_edits_diner_adds_cashier_forces_and_the_waiter_is_told(client, shop, erp):
    """Waiter edits → H5 sees it, cannot pay, can add dishes → cashier warned, forces → waiter gets lock.forced."""
    waiter, waiter_id, cashier, cashier_id = shop.b, shop.b_id, shop.a, shop.a_id
    diner = await h5(client, shop)
    diner_token = diner["Authorization"].split()[1]
    w_events, diner_events = await listen(client, waiter), await listen(client, diner_token)
    locks = f"/api/v1/stores/{shop.store_id}/orders/o1/locks"

    edit = await client.post(locks, headers=bearer(waiter), json={"kind": "order"})
    assert edit.status == 201
    w_lock = (await edit.json())["lock"]

    seen = await diner_events.until("lock.acquired")
    assert seen["data"]["lock"]["kind"] == "order"
    assert seen["data"]["lock"]["holder"] == {"role": "erp", "is_me": False}
    status, refused = await post(client, "/h5/checkout", diner)
    assert status == 409 and refused["error"]["code"] == "ORDER_LOCKED"
    assert refused["error"]["message"] == ORDER_LOCKED_FOR_PAYER and refused["error"]["force_allowed"] is False
    status, added = await post(client, "/h5/items", diner, {"items": [{"sku": "tea", "qty": 1}], "request_id": "seed-1"})
    assert status == 200 and added["order"]["version"] == 2
    assert [line["source"] for line in added["order"]["items"]][-1] == "h5"

    warned = await client.post(locks, headers=bearer(cashier), json={"kind": "payment"})
    assert warned.status == 409
    warning = (await warned.json())["error"]
    assert warning["code"] == "ORDER_LOCKED" and warning["force_allowed"] is True
    assert warning["message"] == ORDER_LOCKED_FORCE_CONFIRM
    assert warning["lock"]["holder"]["terminal_id"] == waiter_id

    forced = await client.post(locks, headers=bearer(cashier), json={"kind": "payment", "force": True})
    assert forced.status == 201
    told = await w_events.until("lock.forced")
    assert told["data"]["lock"]["fence"] == w_lock["fence"]
    assert told["data"]["by"]["terminal_id"] == cashier_id and told["data"]["by"]["name"] == "收银台"
    taken = await w_events.until("lock.acquired", after=told["seq"])
    assert taken["data"]["lock"]["kind"] == "payment" and taken["data"]["lock"]["holder"]["terminal_id"] == cashier_id

    renew = await client.post(f"{locks}/order/renew", headers=bearer(waiter), json={"token": w_lock["token"]})
    assert renew.status == 409 and (await renew.json())["error"]["code"] == "LOCK_LOST"

    diner_told = await diner_events.until("lock.forced")
    assert diner_told["data"]["by"] == {"role": "erp", "is_me": False}
    assert not any(waiter_id in raw or cashier_id in raw or w_lock["token"] in raw for raw in diner_events.raw)
    await w_events.ws.close()
    await diner_events.ws.close()
