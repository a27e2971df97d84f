"""ERP commands over the websocket (docs/protocol.md A15) against the same requests over HTTP.

Every test runs against the single Redis and the 3-master cluster. A command and its HTTP route
must give the same body, or the same SPEC error body (plus the HTTP status as ``status``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from coordinator.erp import ErpLocks
from coordinator.realtime.session import MAX_COMMANDS_IN_FLIGHT
from coordinator.store import keys
from tests.support.app import ADMIN_TOKEN, Shop, bearer, order_body, services
from tests.support.ws_socket import Socket, open_socket

# --- helpers ---------------------------------------------------------------------------------


async def connect(client: Any, token: str) -> Socket:
    """An open socket past hello and snapshot."""
    sock, hello, snapshot = await open_socket(client, f"/api/v1/ws?token={token}")
    assert hello["type"] == "hello" and snapshot["type"] == "snapshot"
    return sock


async def command(sock: Socket, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one command and return its ``result`` (events in between are skipped)."""
    await sock.ws.send_str(json.dumps(message))
    while True:
        reply = await sock.next(timeout)
        if reply["type"] == "result" and reply["id"] == message["id"]:
            return reply
        assert reply["type"] == "event", reply


async def http(client: Any, shop: Shop, token: str, suffix: str, body: Any, order_id: str = "o1") -> tuple[int, Any]:
    """POST to the ERP route of the order; (status, JSON body)."""
    resp = await client.post(f"/api/v1/stores/{shop.store_id}/orders/{order_id}{suffix}", json=body,
                             headers=bearer(token))
    return resp.status, await resp.json()


def ok(result: dict[str, Any]) -> dict[str, Any]:
    """The body of a successful result."""
    assert result["success"] is True, result
    assert set(result) == {"type", "id", "success", "result"}
    return result["result"]


def refused(result: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """(HTTP status, SPEC error body) of a refused result."""
    assert result["success"] is False and set(result) == {"type", "id", "success", "error"}, result
    error = dict(result["error"])
    return error.pop("status"), {"error": error}


def without_expiry(body: dict[str, Any]) -> dict[str, Any]:
    """A lock body without ``expires_at`` (a renewal moves it to the moment it ran)."""
    return {**body, "lock": {k: v for k, v in body["lock"].items() if k != "expires_at"}}


# --- the same bodies ---------------------------------------------------------------------------


async def test_each_command_answers_the_body_of_its_http_route(client, shop):
    """lock.acquire, lock.renew, lock.release, order.check and payment.complete give the HTTP route's body."""
    sock = await connect(client, shop.a)
    assert ok(await command(sock, {"id": 1, "type": "order.check", "order_id": "o1", "action": "pay"})) == \
        (await http(client, shop, shop.a, "/check", {"action": "pay"}))[1]
    grant = ok(await command(sock, {"id": 2, "type": "lock.acquire", "order_id": "o1", "kind": "payment",
                                    "expected_version": 1}))
    status, again = await http(client, shop, shop.a, "/locks", {"kind": "payment", "expected_version": 1})
    assert status == 201 and grant == again and grant["lock"]["token"] and grant["lock"]["holder"]["online"]
    token = grant["lock"]["token"]
    renewed = ok(await command(sock, {"id": 3, "type": "lock.renew", "order_id": "o1", "kind": "payment",
                                      "token": token}))
    status, renewed_http = await http(client, shop, shop.a, "/locks/payment/renew", {"token": token})
    assert status == 200 and without_expiry(renewed) == without_expiry(renewed_http)
    pay = {"token": token, "amount_cents": 3800, "version": 1, "payment_ref": "ws-1"}
    paid = ok(await command(sock, {"id": "p", "type": "payment.complete", "store_id": shop.store_id,
                                   "order_id": "o1", **pay}))
    assert paid["order"]["status"] == "paid"
    assert await http(client, shop, shop.a, "/payments", pay) == (200, paid)  # idempotent on payment_ref
    await services(client).engine.put_order(shop.store_id, _order("o2"), {"role": "admin"})
    taken = ok(await command(sock, {"id": 4, "type": "lock.acquire", "order_id": "o2", "kind": "order"}))
    released = ok(await command(sock, {"id": 5, "type": "lock.release", "order_id": "o2", "kind": "order",
                                       "token": taken["lock"]["token"]}))
    assert released == {"released": True}
    assert await http(client, shop, shop.a, "/locks/order/release", {"token": taken["lock"]["token"]}, "o2") == \
        (200, {"released": False})
    await sock.ws.close()


def _order(order_id: str) -> Any:
    from coordinator.core.models import OrderIn

    return OrderIn.model_validate(order_body(order_id=order_id, table_id="T2"))


async def test_refusals_carry_the_http_error_body_and_status(client, shop):
    """ORDER_LOCKED (force_allowed, the lock in staff form), LOCK_LOST, NOT_FOUND, STALE_VERSION, AMOUNT_MISMATCH as over HTTP."""
    status, editor = await http(client, shop, shop.b, "/locks", {"kind": "order"})
    assert status == 201
    sock = await connect(client, shop.a)
    cases = [
        ({"type": "lock.acquire", "kind": "payment"}, "/locks", {"kind": "payment"}, "ORDER_LOCKED"),
        ({"type": "lock.renew", "kind": "payment", "token": "nope"}, "/locks/payment/renew", {"token": "nope"},
         "LOCK_LOST"),
        ({"type": "order.check", "action": "nonsense"}, "/check", {"action": "nonsense"}, "VALIDATION_ERROR"),
    ]
    for n, (ws_body, suffix, http_body, code) in enumerate(cases):
        result = await command(sock, {"id": n, "order_id": "o1", **ws_body})
        status, body = refused(result)
        assert body["error"]["code"] == code
        if code != "VALIDATION_ERROR":  # details name the message's fields, not the HTTP body's
            assert (status, body) == await http(client, shop, shop.a, suffix, http_body)
    status, body = refused(await command(sock, {"id": 9, "order_id": "o1", "type": "lock.acquire", "kind": "payment"}))
    assert body["error"]["force_allowed"] is True and "token" not in body["error"]["lock"]
    assert body["error"]["lock"]["holder"] == {"role": "erp", "terminal_id": shop.b_id, "name": "服务员B",
                                              "online": False}
    status, body = refused(await command(sock, {"id": 10, "order_id": "nope", "type": "lock.acquire",
                                                "kind": "payment"}))
    assert (status, body) == await http(client, shop, shop.a, "/locks", {"kind": "payment"}, "nope")
    assert status == 404
    await http(client, shop, shop.b, "/locks/order/release", {"token": editor["lock"]["token"]})
    grant = ok(await command(sock, {"id": 11, "order_id": "o1", "type": "lock.acquire", "kind": "payment"}))
    for n, (amount, version, code) in enumerate(((3799, 1, "AMOUNT_MISMATCH"), (3800, 2, "STALE_VERSION"))):
        pay = {"token": grant["lock"]["token"], "amount_cents": amount, "version": version, "payment_ref": f"r{n}"}
        status, body = refused(await command(sock, {"id": 20 + n, "type": "payment.complete", "order_id": "o1", **pay}))
        assert body["error"]["code"] == code and body["error"]["order"]["order_id"] == "o1"
        assert (status, body) == await http(client, shop, shop.a, "/payments", pay)
    await sock.ws.close()


# --- auth and scope ---------------------------------------------------------------------------


async def test_h5_sessions_and_other_stores_are_forbidden_and_the_socket_stays(client, shop):
    """An H5 session's command and a command naming another store are FORBIDDEN results; the sockets live on."""
    resp = await client.post("/api/v1/h5/sessions", json={"qr_token": shop.qr})
    diner = await connect(client, (await resp.json())["session_token"])
    status, body = refused(await command(diner, {"id": 1, "type": "lock.acquire", "order_id": "o1", "kind": "payment"}))
    assert (status, body["error"]["code"]) == (403, "FORBIDDEN")
    await diner.ws.send_str('{"type":"ping","id":2}')
    assert await diner.next() == {"type": "pong", "id": 2}
    sock = await connect(client, shop.a)
    status, body = refused(await command(sock, {"id": 3, "type": "order.check", "store_id": "elsewhere",
                                                "order_id": "o1", "action": "pay"}))
    assert (status, body["error"]["code"]) == (403, "FORBIDDEN")
    assert await services(client).engine.locks(shop.store_id) == []
    for s in (diner, sock):
        await s.ws.close()


async def test_a_revoked_token_is_refused_per_command_before_its_socket_closes(client, shop, redis_client):
    """The token is checked again for every command: once the terminal is gone, its next command is UNAUTHENTICATED."""
    sock = await connect(client, shop.b)
    ok(await command(sock, {"id": 1, "type": "order.check", "order_id": "o1", "action": "modify"}))
    # The terminal's record removed underneath (no control message, so the socket stays open meanwhile).
    await redis_client.hdel(keys.terminals(shop.store_id), shop.b_id)
    status, body = refused(await command(sock, {"id": 2, "type": "lock.acquire", "order_id": "o1", "kind": "order"}))
    assert (status, body["error"]["code"]) == (401, "UNAUTHENTICATED")
    assert await services(client).engine.locks(shop.store_id) == []
    await sock.ws.close()


async def test_a_command_is_audited_with_the_terminal_as_actor(client, shop):
    """A lock taken over the socket is in the admin's audit log under the terminal, as an HTTP one is."""
    sock = await connect(client, shop.b)
    ok(await command(sock, {"id": 1, "type": "lock.acquire", "order_id": "o1", "kind": "order"}))
    resp = await client.get(f"/api/v1/admin/stores/{shop.store_id}/audit?order_id=o1", headers=bearer(ADMIN_TOKEN))
    entries = (await resp.json())["entries"]
    acquired = [e for e in entries if e["name"] == "lock.acquired"]
    assert acquired and acquired[-1]["actor"]["terminal_id"] == shop.b_id
    await sock.ws.close()


# --- bad input, floods, failures ----------------------------------------------------------------


async def test_bad_commands_get_error_results_and_the_socket_lives_on(client, shop):
    """A missing or extra field, a wrong type, an unknown type with an id: VALIDATION_ERROR results; no id: an error message."""
    sock = await connect(client, shop.a)
    bad = [
        ({"id": 1, "type": "lock.acquire", "order_id": "o1"}, ["kind"]),
        ({"id": 2, "type": "lock.acquire", "order_id": "o1", "kind": "payment", "force": "yes"}, ["force"]),
        ({"id": 3, "type": "lock.renew", "order_id": "o1", "kind": "payment", "token": "t", "extra": 1}, ["extra"]),
        ({"id": 4, "type": "order.check", "order_id": "../x", "action": "pay"}, ["order_id"]),
        ({"id": 5, "type": "payment.complete", "order_id": "o1", "token": "t", "amount_cents": 1.5, "version": 1,
          "payment_ref": "r"}, ["amount_cents"]),
        ({"id": 6, "type": "lock.steal", "order_id": "o1"}, ["type"]),
    ]
    for message, loc in bad:
        status, body = refused(await command(sock, message))
        assert (status, body["error"]["code"]) == (400, "VALIDATION_ERROR"), message
        assert body["error"]["details"][0]["loc"] == loc, body
    await sock.ws.send_str('{"type":"lock.acquire","order_id":"o1","kind":"payment"}')
    reply = await sock.next()
    assert reply["type"] == "error" and reply["error"]["code"] == "VALIDATION_ERROR"
    await sock.ws.send_str(json.dumps({"id": 7, "type": "order.check", "order_id": "o1", "action": "x" * 70_000}))
    assert (await sock.next())["type"] == "error"  # oversized: refused before it is read as a command
    ok(await command(sock, {"id": 8, "type": "order.check", "order_id": "o1", "action": "pay"}))
    await sock.ws.close()


async def test_a_command_flood_is_paced_not_dropped(client, shop, monkeypatch):
    """300 commands sent at once (past the 100 messages/s flood bound) are all answered, at most 16 running at once."""
    running, peak = 0, 0
    real_check = ErpLocks.check

    async def counted(self, *args, **kwargs):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await asyncio.sleep(0.001)
            return await real_check(self, *args, **kwargs)
        finally:
            running -= 1

    monkeypatch.setattr(ErpLocks, "check", counted)
    sock = await connect(client, shop.a)
    for i in range(300):
        await sock.ws.send_str(json.dumps({"id": i, "type": "order.check", "order_id": "o1", "action": "pay"}))
    seen = set()
    while len(seen) < 300:
        reply = await sock.next(timeout=20)
        assert reply["type"] == "result" and reply["success"], reply
        seen.add(reply["id"])
    assert seen == set(range(300)) and 1 < peak <= MAX_COMMANDS_IN_FLIGHT
    await sock.ws.send_str('{"type":"ping","id":"after"}')
    assert await sock.next() == {"type": "pong", "id": "after"}
    await sock.ws.close()


async def test_a_failing_command_is_an_internal_result_not_a_closed_socket(client, shop, monkeypatch, caplog):
    """A bug under a command answers INTERNAL (500) without any Python detail; the socket stays open."""
    async def broken(self, *args, **kwargs):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(ErpLocks, "check", broken)
    sock = await connect(client, shop.a)
    status, body = refused(await command(sock, {"id": 1, "type": "order.check", "order_id": "o1", "action": "pay"}))
    assert (status, body["error"]["code"]) == (500, "INTERNAL") and "secret" not in json.dumps(body)
    await sock.ws.send_str('{"type":"ping","id":2}')
    assert await sock.next() == {"type": "pong", "id": 2}
    await sock.ws.close()
