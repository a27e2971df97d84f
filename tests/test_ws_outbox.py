"""A websocket's outbox (realtime/connection.py): nothing per socket while idle, a writer task and a
deque only while its client reads too slowly, every event in order either way.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from coordinator.core.models import OrderIn
from tests.support.app import Shop, order_body, services
from tests.support.ws_socket import open_socket

#: Large enough that a client that stops reading pauses the server's transport within a few events.
ITEMS = [{"line_id": f"l{i}", "sku": f"sku{i}", "name": "红烧肉" * 8, "qty": 1, "unit_price_cents": 100,
          "source": "erp"} for i in range(500)]


@pytest.fixture
def settings(settings):
    """An outbox that holds every event of the test: backlog without a 1013."""
    return settings.model_copy(update={"ws_queue_size": 5_000})


async def put(svc: Any, shop: Shop, version: int) -> None:
    """Push the order, big, as terminal A."""
    holder = {"role": "erp", "terminal_id": shop.a_id, "name": "收银台"}
    await svc.engine.put_order(shop.store_id, OrderIn.model_validate(order_body(version=version, items=ITEMS)), holder)


async def test_idle_socket_holds_no_writer_and_no_outbox(client, shop):
    """A live socket with nothing pending has neither a writer task nor an outbox, also right after an event."""
    svc = services(client)
    sock, _, snapshot = await open_socket(client, f"/api/v1/ws?token={shop.b}")
    conn = next(c for c in svc.hub.connections() if c.client_id == shop.b_id)
    assert conn.started and conn.writer is None and conn.outbox is None
    await put(svc, shop, 2)
    event = await sock.event("order.updated")
    assert event["seq"] == snapshot["seq"] + 1
    assert conn.writer is None and conn.outbox is None
    await sock.ws.close()


async def test_a_client_that_stops_reading_gets_every_event_in_order_once_it_reads_again(client, shop):
    """Events written while the client is not reading go through a writer and the outbox, in seq order, then both go away."""
    svc = services(client)
    sock, _, snapshot = await open_socket(client, f"/api/v1/ws?token={shop.b}")
    conn = next(c for c in svc.hub.connections() if c.client_id == shop.b_id)
    version = 1
    while conn.writer is None:  # the client reads nothing: the transport pauses, a writer takes over
        version += 1
        assert version < 400, "the server never had to wait for this client"
        await put(svc, shop, version)
    for _ in range(5):
        version += 1
        await put(svc, shop, version)
    assert conn.outbox, "events after the pause wait in the outbox"
    last = await svc.engine.seq(shop.store_id)
    events = await sock.events_until(last, timeout=30)
    assert [e["seq"] for e in events] == list(range(snapshot["seq"] + 1, last + 1))
    deadline = time.monotonic() + 5
    while conn.writer is not None and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert conn.writer is None and conn.outbox is None and not conn.closing
    await sock.ws.close()
