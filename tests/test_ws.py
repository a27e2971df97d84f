"""The websocket of SPEC §7 in-process over real sockets: shapes, scopes, resume, drops, liveness.

Every test runs against the single Redis and the 3-master cluster (``redis_url`` is parametrized).
Locks are driven through the coordinator's own engine (``services(client).engine``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest
from redis.asyncio import Redis

from coordinator.app import build_app
from coordinator.core.errors import LockLost
from coordinator.core.models import OrderIn, StoreConfigPatch
from coordinator.core.rules import Kind
from coordinator.realtime.pubsub import Subscriber
from coordinator.realtime.stream import EventStream
from coordinator.store import keys
from tests.support.app import SYSTEM, Shop, order_body, services
from tests.support.ws_socket import Socket, open_socket

# --- helpers ---------------------------------------------------------------------------------


async def connect(client: Any, token: str, since: int | None = None, **kwargs: Any) -> tuple[Socket, dict, dict]:
    """Open a socket on the in-process app."""
    url = f"/api/v1/ws?token={token}" + (f"&since={since}" if since is not None else "")
    return await open_socket(client, url, **kwargs)


def terminal(shop: Shop, which: str = "b") -> dict[str, Any]:
    """The holder dict of terminal A or B."""
    return {"role": "erp", "terminal_id": getattr(shop, f"{which}_id"), "name": "收银台" if which == "a" else "服务员B"}


async def h5_session(svc: Any, shop: Shop, table_id: str = "T1") -> tuple[str, dict[str, Any]]:
    """A new H5 session token on the table, and its holder dict."""
    token, session_id, _ = svc.auth.new_session(shop.store_id, table_id, await svc.engine.now())
    return token, {"role": "h5", "session_id": session_id}


async def put(svc: Any, shop: Shop, **kwargs: Any) -> dict[str, Any]:
    """Push an order as the ERP (terminal A)."""
    order, _ = await svc.engine.put_order(shop.store_id, OrderIn.model_validate(order_body(**kwargs)), terminal(shop, "a"))
    return order


# --- hello and snapshot -------------------------------------------------------------------------


async def test_erp_hello_and_snapshot_show_the_whole_store_without_tokens(client, shop):
    """An ERP terminal gets hello {role, client_id, seq, resume, replay_count} then a snapshot of every open order and live lock, tokenless."""
    svc = services(client)
    await put(svc, shop, order_id="o2", table_id="T2")
    lock, _ = await svc.engine.acquire(shop.store_id, "o2", terminal(shop, "b"), Kind.ORDER)
    sock, hello, snapshot = await connect(client, shop.a)
    seq = await svc.engine.seq(shop.store_id)
    assert hello == {"type": "hello", "role": "erp", "client_id": shop.a_id, "seq": seq,
                     "resume": "snapshot", "replay_count": 0}
    assert snapshot["type"] == "snapshot" and snapshot["seq"] == seq
    assert [o["order_id"] for o in snapshot["orders"]] == ["o1", "o2"]
    assert snapshot["orders"][0]["total_cents"] == 3800
    [shown] = snapshot["locks"]
    assert shown["kind"] == "order" and shown["order_id"] == "o2" and shown["fence"] == lock["fence"]
    assert shown["holder"] == {"role": "erp", "terminal_id": shop.b_id, "name": "服务员B", "online": False}
    assert "token" not in shown and lock["token"] not in sock.raw()
    await sock.ws.close()


async def test_h5_snapshot_is_its_table_in_the_h5_form(client, shop):
    """An H5 session's snapshot holds only its table's order and locks, holders as {role, is_me}."""
    svc = services(client)
    await put(svc, shop, order_id="o2", table_id="T2")
    other, _ = await svc.engine.acquire(shop.store_id, "o2", terminal(shop, "b"), Kind.ORDER)
    token1, diner1 = await h5_session(svc, shop)
    token2, _ = await h5_session(svc, shop)
    paying, _ = await svc.engine.acquire(shop.store_id, "o1", diner1, Kind.PAYMENT)

    sock1, hello1, snap1 = await connect(client, token1)
    assert hello1["role"] == "h5" and hello1["client_id"] == diner1["session_id"]
    assert [o["order_id"] for o in snap1["orders"]] == ["o1"]
    [mine] = snap1["locks"]
    assert mine["kind"] == "payment" and mine["holder"] == {"role": "h5", "is_me": True}

    sock2, hello2, snap2 = await connect(client, token2)
    [theirs] = snap2["locks"]
    assert theirs["holder"] == {"role": "h5", "is_me": False}
    raw = sock2.raw()
    for secret in (paying["token"], other["token"], diner1["session_id"], shop.a_id, shop.b_id,
                   '"terminal_id"', '"session_id"', '"token"'):
        assert secret not in raw
    await sock1.ws.close()
    await sock2.ws.close()


async def test_bad_or_missing_token_is_accepted_then_closed_4401(client, shop):
    """A bad, missing or admin-less token gets the socket closed with 4401 right after the handshake."""
    for url in ("/api/v1/ws?token=nonsense", "/api/v1/ws", f"/api/v1/ws?token={shop.a}x"):
        ws = await client.ws_connect(url, autoclose=False)
        assert await Socket(ws).close_code() == 4401


# --- live events --------------------------------------------------------------------------------


async def test_erp_sees_every_event_of_the_store_with_strictly_increasing_seq(client, shop):
    """An ERP socket receives every event of its store, seq contiguous after the snapshot, in staff form."""
    svc = services(client)
    sock, _, snapshot = await connect(client, shop.a)
    store, b = shop.store_id, terminal(shop, "b")
    lock, _ = await svc.engine.acquire(store, "o1", b, Kind.ORDER)
    await svc.engine.renew(store, "o1", Kind.ORDER, lock["token"], b)
    await svc.engine.release(store, "o1", Kind.ORDER, lock["token"], b)
    await put(svc, shop, order_id="o2", table_id="T2")
    _, diner = await h5_session(svc, shop, "T2")
    paying, _ = await svc.engine.acquire(store, "o2", diner, Kind.PAYMENT)
    await svc.engine.acquire(store, "o2", b, Kind.PAYMENT, force=True)
    await svc.directory.patch_config(store, StoreConfigPatch(order_lock_seconds=60), SYSTEM)
    last = await svc.engine.seq(store)

    events = await sock.events_until(last)
    assert [e["seq"] for e in events] == list(range(snapshot["seq"] + 1, last + 1))
    assert [e["name"] for e in events] == [
        "lock.acquired", "lock.renewed", "lock.released", "order.updated", "lock.acquired",
        "lock.forced", "lock.acquired", "config.updated",
    ]
    forced = events[5]["data"]
    assert forced["lock"]["holder"] == diner and forced["by"]["terminal_id"] == shop.b_id
    assert events[0]["data"]["lock"]["holder"]["online"] is False  # B has no socket
    assert lock["token"] not in sock.raw() and paying["token"] not in sock.raw()
    await sock.ws.close()


async def test_h5_sees_only_its_table_and_never_ids_or_tokens(client, shop):
    """An H5 socket gets its table's events (and config.updated) in the H5 form: no tokens, terminal or other session ids."""
    svc = services(client)
    store = shop.store_id
    token1, diner1 = await h5_session(svc, shop)
    token2, diner2 = await h5_session(svc, shop)
    sock1, _, _ = await connect(client, token1)
    sock2, _, _ = await connect(client, token2)

    await put(svc, shop, order_id="o2", table_id="T2")                       # other table
    other, _ = await svc.engine.acquire(store, "o2", terminal(shop, "b"), Kind.ORDER)
    erp, _, _ = await connect(client, shop.b)                                  # terminal.status
    paying, _ = await svc.engine.acquire(store, "o1", diner2, Kind.PAYMENT)
    with pytest.raises(LockLost):                                              # payment.rejected
        await svc.engine.complete(store, "o1", terminal(shop, "a"), token=paying["token"], amount_cents=1,
                                  version=1, payment_ref="p-1")
    await svc.engine.release(store, "o1", Kind.PAYMENT, paying["token"], diner2)
    await svc.directory.patch_config(store, StoreConfigPatch(h5_payment_lock_seconds=20), SYSTEM)

    seen1 = []
    while not seen1 or seen1[-1]["name"] != "config.updated":
        seen1.append(await sock1.next())
    assert [e["name"] for e in seen1] == ["lock.acquired", "lock.released", "config.updated"]
    assert all(e["table_id"] == "T1" for e in seen1[:2]) and seen1[2]["table_id"] is None
    assert seen1[0]["data"]["lock"]["holder"] == {"role": "h5", "is_me": False}
    assert seen1[2]["data"] == {"config": {"strong_link_enabled": True, "h5_payment_lock_seconds": 20}}
    mine = await sock2.event("lock.acquired")
    assert mine["data"]["lock"]["holder"] == {"role": "h5", "is_me": True}
    await sock2.event("config.updated")
    for sock, own in ((sock1, diner1), (sock2, diner2)):
        raw = sock.raw()
        for secret in (paying["token"], other["token"], shop.a_id, shop.b_id, '"terminal_id"', '"token"',
                       "payment.rejected", "terminal.status", '"T2"'):
            assert secret not in raw
        strangers = {diner1["session_id"], diner2["session_id"]} - {own["session_id"]}
        assert all(s not in raw for s in strangers)
    for sock in (sock1, sock2, erp):
        await sock.ws.close()


async def test_resume_with_since_gets_exactly_the_missed_events(client, shop):
    """A client dropped mid-stream reconnects with since and gets exactly the events it missed, then live ones."""
    svc = services(client)
    store, b = shop.store_id, terminal(shop, "b")
    sock, _, snapshot = await connect(client, shop.a)
    lock, _ = await svc.engine.acquire(store, "o1", b, Kind.ORDER)
    [seen] = await sock.events_until(await svc.engine.seq(store))
    await sock.ws.close()

    await svc.engine.renew(store, "o1", Kind.ORDER, lock["token"], b)
    await svc.engine.release(store, "o1", Kind.ORDER, lock["token"], b)
    await put(svc, shop, order_id="o2", table_id="T2")
    missed_upto = await svc.engine.seq(store)

    again, hello, first = await connect(client, shop.a, since=seen["seq"])
    # A's own offline and online announcements are among the missed events too.
    assert hello["seq"] == await svc.engine.seq(store) >= missed_upto
    replay = [first] + (await again.events_until(hello["seq"]) if first["seq"] < hello["seq"] else [])
    assert [e["seq"] for e in replay] == list(range(seen["seq"] + 1, hello["seq"] + 1))
    assert [e["name"] for e in replay if e["name"] != "terminal.status"] == [
        "lock.renewed", "lock.released", "order.updated"]
    await svc.engine.acquire(store, "o2", b, Kind.ORDER)
    live = await again.event("lock.acquired")
    assert live["seq"] == await svc.engine.seq(store)
    seqs = [json.loads(t)["seq"] for t in again.texts if '"type":"event"' in t]
    assert seqs == sorted(set(seqs)), "no duplicate, no reordering"
    await again.ws.close()


async def test_h5_resume_replays_only_its_table(client, shop):
    """An H5 session resuming with since gets the missed events of its table only, in H5 form."""
    svc = services(client)
    store = shop.store_id
    token, diner = await h5_session(svc, shop)
    sock, hello, _ = await connect(client, token)
    await sock.ws.close()
    await put(svc, shop, order_id="o2", table_id="T2")
    paying, _ = await svc.engine.acquire(store, "o1", diner, Kind.PAYMENT)
    await svc.engine.acquire(store, "o2", terminal(shop, "b"), Kind.ORDER)
    again, hello2, first = await connect(client, token, since=hello["seq"])
    assert hello2["seq"] == await svc.engine.seq(store)
    assert first["name"] == "lock.acquired" and first["order_id"] == "o1"
    assert first["data"]["lock"]["holder"] == {"role": "h5", "is_me": True}
    assert await again.quiet(0.2) == []
    assert paying["token"] not in again.raw() and shop.b_id not in again.raw()
    await again.ws.close()


async def test_since_older_than_retention_or_ahead_gets_a_snapshot(client, shop, redis_client):
    """A since the stream no longer covers (trimmed), or ahead of the store, gets a fresh snapshot."""
    svc = services(client)
    store = shop.store_id
    sock, hello, _ = await connect(client, shop.a)
    await sock.ws.close()
    lock, _ = await svc.engine.acquire(store, "o1", terminal(shop, "b"), Kind.ORDER)
    await redis_client.xtrim(keys.events(store), maxlen=0, approximate=False)
    again, hello2, snapshot = await connect(client, shop.a, since=hello["seq"])
    assert snapshot["type"] == "snapshot" and snapshot["seq"] == hello2["seq"] == await svc.engine.seq(store)
    assert [l["fence"] for l in snapshot["locks"]] == [lock["fence"]]
    await again.ws.close()
    ahead, _, snapshot = await connect(client, shop.a, since=hello2["seq"] + 1000)
    assert snapshot["type"] == "snapshot"
    await ahead.ws.close()


class TestSlowConsumer:
    """A client that never reads fills its small queue and is dropped alone."""

    @pytest.fixture
    def settings(self, settings):
        """A tiny per-socket queue."""
        return settings.model_copy(update={"ws_queue_size": 4})

    async def test_slow_consumer_is_dropped_while_others_get_every_event(self, client, shop):
        """A socket that never reads is closed with 1013 while a reading one still receives every event."""
        svc = services(client)
        store = shop.store_id
        token, diner = await h5_session(svc, shop)
        slow = Socket(await client.ws_connect(f"/api/v1/ws?token={token}", autoclose=False))
        fast, _, snapshot = await connect(client, shop.a)
        received: list[int] = []

        async def read_fast() -> None:
            while True:
                message = await fast.next(timeout=10)
                if message["type"] == "event":
                    received.append(message["seq"])

        reader = asyncio.create_task(read_fast())
        items = [{"line_id": f"l{i}", "sku": f"sku{i}", "name": "红烧肉" * 8, "qty": 1,
                  "unit_price_cents": 100, "source": "erp"} for i in range(500)]
        hub = svc.hub
        slow_conn = next(c for c in hub.connections() if c.client_id == diner["session_id"])
        version = 1
        while not slow_conn.closing:
            version += 1
            assert version < 1000, "the slow socket was never dropped"
            await put(svc, shop, version=version, items=items)
        assert slow_conn.close_code == 1013
        for _ in range(3):  # the reading one keeps getting events after the drop
            version += 1
            await put(svc, shop, version=version, items=items)
        last = await svc.engine.seq(store)
        deadline = time.monotonic() + 10
        while (not received or received[-1] < last) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        assert received == list(range(snapshot["seq"] + 1, last + 1))
        assert await slow.close_code(timeout=10) == 1013
        assert slow_conn not in hub.connections()
        await fast.ws.close()


# --- the event subscription ----------------------------------------------------------------------


class RecordingHub:
    """Stands in for the hub behind an EventStream: one wanted store, delivered seqs and resyncs recorded."""

    def __init__(self, store: str, delivered: list[int], resynced: list[str]) -> None:
        self.store, self.delivered, self.resynced = store, delivered, resynced

    def wants(self, store_id: str) -> bool:
        """Only the test's store has local sockets."""
        return store_id == self.store

    def stores(self) -> list[str]:
        """The stores with local sockets."""
        return [self.store]

    def dispatch(self, event: dict[str, Any]) -> None:
        """Record a delivered event's seq."""
        self.delivered.append(event["seq"])

    def resync(self, store_id: str) -> None:
        """Record a resync."""
        self.resynced.append(store_id)

    def on_control(self, message: dict[str, Any]) -> None:
        """Control messages do not matter here."""


async def test_stream_fills_a_seq_gap_from_the_stream_and_drops_repeats(client, shop, redis_client):
    """A live event whose seq jumps is preceded by the missing ones read from the stream; repeats are dropped; a trimmed gap resyncs."""
    svc = services(client)
    store = shop.store_id
    delivered: list[int] = []
    resynced: list[str] = []
    stream = EventStream(redis_client, Subscriber([""]), RecordingHub(store, delivered, resynced), svc.engine.scripts)
    start = await svc.engine.seq(store)
    stream.note(store, start)
    for version in (1, 2, 3):
        await put(svc, shop, order_id="o9", table_id="T1", version=version)
    last = await svc.engine.seq(store)
    [newest] = await stream.replay(store, last - 1)
    await stream.offer(store, last, newest)          # start+1 .. last-1 were "lost"
    await stream.offer(store, last - 1, newest)      # a late repeat
    assert delivered == list(range(start + 1, last + 1))
    await put(svc, shop, order_id="o9", table_id="T1", version=9)
    await put(svc, shop, order_id="o9", table_id="T1", version=10)
    await redis_client.xtrim(keys.events(store), maxlen=0, approximate=False)
    now_seq = await svc.engine.seq(store)
    await stream.offer(store, now_seq, {"seq": now_seq, "store_id": store})
    assert resynced == [store] and delivered[-1] == last and stream.last_seq(store) is None


async def test_killed_subscription_reconnects_and_loses_nothing(client, shop, redis_url, caplog):
    """After the pub/sub connection is killed, the listener resubscribes, fills what it missed, and the socket gets every event."""
    caplog.set_level(logging.INFO, logger="coordinator.realtime.stream")
    svc = services(client)
    store, b = shop.store_id, terminal(shop, "b")
    sock, _, snapshot = await connect(client, shop.a)
    before = svc.realtime.stream.subscriptions
    killer = Redis.from_url(redis_url)  # the node the listener subscribed to (a cluster's first node)
    try:
        await killer.client_kill_filter(_type="pubsub")
    finally:
        await killer.aclose()
    for _ in range(5):  # published while the listener is away: lost by pub/sub, filled from the stream
        lock, _ = await svc.engine.acquire(store, "o1", b, Kind.ORDER)
        await svc.engine.release(store, "o1", Kind.ORDER, lock["token"], b)
    last = await svc.engine.seq(store)
    events = await sock.events_until(last, timeout=10)
    assert [e["seq"] for e in events] == list(range(snapshot["seq"] + 1, last + 1))
    assert svc.realtime.stream.subscriptions > before
    assert "filled events" in caplog.text  # the events published meanwhile came from the stream
    await sock.ws.close()


# --- expiry, revocation, liveness ---------------------------------------------------------------


async def test_h5_payment_lock_expiry_reaches_erp_and_h5_exactly_once(client, shop):
    """An expiring 1 s H5 payment lock gives exactly one lock.expired to the ERP and the H5 socket, on time."""
    svc = services(client)
    store = shop.store_id
    await svc.directory.patch_config(store, StoreConfigPatch(h5_payment_lock_seconds=1), SYSTEM)
    token, diner = await h5_session(svc, shop)
    erp, _, _ = await connect(client, shop.a)
    h5, _, _ = await connect(client, token)
    lock, _ = await svc.engine.acquire(store, "o1", diner, Kind.PAYMENT)
    for sock in (erp, h5):
        expired = await sock.event("lock.expired", timeout=3)
        late = await svc.engine.now() - lock["expires_at"]
        assert expired["data"]["lock"]["fence"] == lock["fence"]
        assert 0 <= expired["ts"] - lock["expires_at"] < 250 and late < 1000
    for sock in (erp, h5):
        assert [m for m in await sock.quiet(0.3) if m.get("name") == "lock.expired"] == []
        assert sum('"lock.expired"' in t for t in sock.texts) == 1
        await sock.ws.close()


async def test_revocation_closes_the_terminals_sockets_with_4401(client, shop):
    """Revoking a terminal closes its sockets with 4401, and its token no longer opens one."""
    svc = services(client)
    sock, _, _ = await connect(client, shop.b)
    other, _, _ = await connect(client, shop.a)
    await svc.directory.revoke_terminal(shop.store_id, shop.b_id, SYSTEM)
    await svc.hub.disconnect_terminal(shop.store_id, shop.b_id)
    assert await sock.close_code() == 4401
    ws = await client.ws_connect(f"/api/v1/ws?token={shop.b}", autoclose=False)
    assert await Socket(ws).close_code() == 4401
    assert not other.ws.closed
    await other.ws.close()


async def test_revoked_token_is_closed_at_the_next_heartbeat_even_without_the_control_message(client, shop):
    """A socket whose token was revoked behind the hub's back is closed 4401 by the heartbeat's re-check."""
    svc = services(client)
    sock, _, _ = await connect(client, shop.b)
    await svc.redis.hdel(keys.terminals(shop.store_id), shop.b_id)
    await svc.hub.heartbeat()
    assert await sock.close_code() == 4401


async def test_terminal_disconnect_caps_its_locks_and_emits_status(client, shop):
    """A terminal's last socket closing emits terminal.status offline and caps its locks at now + grace."""
    svc = services(client)
    store = shop.store_id
    await svc.directory.patch_config(store, StoreConfigPatch(erp_disconnect_grace_seconds=1), SYSTEM)
    watcher, _, _ = await connect(client, shop.a)
    b, _, _ = await connect(client, shop.b)
    up = await watcher.event("terminal.status")
    assert up["data"] == {"terminal_id": shop.b_id, "online": True}
    lock, _ = await svc.engine.acquire(store, "o1", terminal(shop, "b"), Kind.ORDER)
    acquired = await watcher.event("lock.acquired")
    assert acquired["data"]["lock"]["holder"]["online"] is True
    await b.ws.close()
    down = await watcher.event("terminal.status")
    assert down["data"] == {"terminal_id": shop.b_id, "online": False}
    capped = await watcher.event("lock.renewed")
    now = await svc.engine.now()
    assert capped["data"]["reason"] == "holder_offline"
    assert capped["data"]["lock"]["holder"]["online"] is False
    assert capped["data"]["lock"]["expires_at"] <= now + 1000 < lock["expires_at"]
    expired = await watcher.event("lock.expired", timeout=3)
    assert expired["data"]["lock"]["fence"] == lock["fence"]
    await watcher.ws.close()


async def test_second_socket_of_a_terminal_keeps_it_online(client, shop):
    """Closing one of two sockets of a terminal neither announces it offline nor caps its locks."""
    svc = services(client)
    watcher, _, _ = await connect(client, shop.a)
    first, _, _ = await connect(client, shop.b)
    second, _, _ = await connect(client, shop.b)
    await svc.engine.acquire(shop.store_id, "o1", terminal(shop, "b"), Kind.ORDER)
    await first.ws.close()
    seen = await watcher.quiet(0.3)
    assert [m["data"] for m in seen if m.get("name") == "terminal.status"] == [
        {"terminal_id": shop.b_id, "online": True}]
    assert not any(m.get("name") == "lock.renewed" for m in seen)
    for sock in (second, watcher):
        await sock.ws.close()


# --- client messages ----------------------------------------------------------------------------


async def test_garbage_frames_get_error_messages_and_the_process_stays_healthy(client, shop):
    """Non-JSON, unknown types, wrong types and oversized frames each get a VALIDATION_ERROR; the socket and process live on."""
    sock, _, _ = await connect(client, shop.a)
    frames = ["not json", '{"type":"nope"}', '{"type":"ping","id":[1]}', '{"id":7}', "[]",
              '{"type":"rpc_result"}', "x" * (70 * 1024)]
    for frame in frames:
        await sock.ws.send_str(frame)
        reply = await sock.next()
        assert reply["type"] == "error" and reply["error"]["code"] == "VALIDATION_ERROR", frame[:40]
        assert reply["error"]["details"]
    await sock.ws.send_bytes(b"\xff\xfe garbage")
    assert (await sock.next())["error"]["code"] == "VALIDATION_ERROR"
    await sock.ws.send_str('{"type":"ping","id":"p1","extra":true}')
    assert await sock.next() == {"type": "pong", "id": "p1"}
    assert (await client.get("/healthz")).status == 200
    other, _, _ = await connect(client, shop.b)
    for s in (sock, other):
        await s.ws.close()


async def test_invalid_frame_flood_closes_1008(client, shop):
    """More than 50 invalid frames close the socket with 1008."""
    sock, _, _ = await connect(client, shop.a)
    for _ in range(51):
        await sock.ws.send_str("{")
    assert await sock.close_code() == 1008
    assert 0 < len([t for t in sock.texts if "VALIDATION_ERROR" in t]) <= 51


async def test_message_rate_flood_closes_1008(client, shop):
    """More than 100 messages within a second close the socket with 1008."""
    sock, _, _ = await connect(client, shop.a)
    for i in range(150):
        await sock.ws.send_str(json.dumps({"type": "ping", "id": i}))
    assert await sock.close_code() == 1008
    assert (await client.get("/healthz")).status == 200


class FakeRpc:
    """Records the calls the socket makes to services.rpc."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, Any]] = []

    async def on_reply(self, principal, message):
        """Record a reply."""
        self.calls.append(("reply", principal.terminal_id, message))

    async def terminal_connected(self, principal, conn_id):
        """Record a connect."""
        self.calls.append(("connected", principal.terminal_id, conn_id))

    async def terminal_disconnected(self, principal, conn_id):
        """Record a disconnect."""
        self.calls.append(("disconnected", principal.terminal_id, conn_id))


async def test_rpc_contract_between_socket_hub_and_rpc_service(client, shop):
    """ERP rpc replies reach services.rpc.on_reply, connects/disconnects are reported, send_to_terminal delivers."""
    svc = services(client)
    fake, saved = FakeRpc(), svc.realtime.rpc
    svc.realtime.rpc = fake  # what the runtime hands each new socket's session
    try:
        sock, _, _ = await connect(client, shop.a)
        [(what, terminal_id, conn_id)] = fake.calls
        assert (what, terminal_id) == ("connected", shop.a_id)
        rpc = {"type": "rpc", "id": "r1", "method": "menu.list", "params": {}}
        assert await svc.hub.send_to_terminal(shop.store_id, shop.a_id, rpc) is True
        assert await sock.next() == rpc
        assert await svc.hub.send_to_terminal(shop.store_id, shop.b_id, rpc) is False
        await sock.ws.send_str(json.dumps({"type": "rpc_result", "id": "r1", "result": {"items": []}}))
        await sock.ws.send_str(json.dumps({"type": "rpc_error", "id": 2, "error": {"code": "NOT_FOUND", "message": "无"}}))
        await sock.ws.send_str('{"type":"ping"}')
        assert (await sock.next())["type"] == "pong"
        assert fake.calls[1:] == [
            ("reply", shop.a_id, {"type": "rpc_result", "id": "r1", "result": {"items": []}}),
            ("reply", shop.a_id, {"type": "rpc_error", "id": 2, "error": {"code": "NOT_FOUND", "message": "无"}}),
        ]
        token, _ = await h5_session(svc, shop)
        h5, _, _ = await connect(client, token)
        await h5.ws.send_str('{"type":"rpc_result","id":"r1","result":null}')
        reply = await h5.next()
        assert reply["type"] == "error" and reply["error"]["code"] == "FORBIDDEN" and reply["id"] == "r1"
        await sock.ws.close()
        await h5.ws.close()
        deadline = time.monotonic() + 5
        while fake.calls[-1][0] != "disconnected" and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert fake.calls[-1] == ("disconnected", shop.a_id, conn_id)
        assert len(fake.calls) == 4
    finally:
        svc.realtime.rpc = saved


class TestIdle:
    """Heartbeats every 0.1 s; a client silent for 0.5 s is dropped."""

    @pytest.fixture
    def settings(self, settings):
        """Short heartbeat and idle timeout."""
        return settings.model_copy(update={"ws_heartbeat_seconds": 0.1, "ws_idle_timeout_seconds": 0.5})

    async def test_silent_client_is_dropped_and_a_ponging_one_kept(self, client, shop):
        """A client that answers no ping is closed 4408 after the idle timeout; one that pongs stays."""
        silent, _, _ = await connect(client, shop.a, autoping=False)
        alive, _, _ = await connect(client, shop.b)
        started = time.monotonic()
        assert await silent.close_code(timeout=3) == 4408
        assert 0.4 < time.monotonic() - started < 2
        await asyncio.sleep(0.3)
        assert not alive.ws.closed
        await alive.ws.close()


async def test_shutdown_closes_every_socket_with_going_away(aiohttp_client, settings, shop):
    """Stopping the app closes its websockets with 1001 GOING_AWAY and ends the hub's tasks."""
    other = await aiohttp_client(build_app(settings))
    sock, _, _ = await connect(other, shop.a)
    h5_token, _ = await h5_session(services(other), shop)
    h5, _, _ = await connect(other, h5_token)
    hub = services(other).hub
    await other.server.close()
    assert await sock.close_code() == 1001
    assert await h5.close_code() == 1001
    assert hub.connections() == [] and all(t.done() for t in hub._tasks)
