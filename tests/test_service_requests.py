"""Service requests (SPEC §11): a diner's call reaches the terminals at once, exactly one waiter
takes it (the others learn who), the table's diners see it taken, and a per-table cooldown."""

from __future__ import annotations

import asyncio

import aiohttp

from coordinator.store import keys
from coordinator.store.auth import Authenticator
from coordinator.store.directory import Directory
from tests.support.app import ADMIN_TOKEN, SYSTEM, bearer, h5, make_engine, post, services
from tests.support.processes import SECRET_KEY
from tests.support.ws_socket import open_socket


async def test_a_request_reaches_terminals_and_one_waiter_takes_it(client, shop):
    """service.requested goes to the terminals with table and time; the first take wins, the second is 409 naming the first."""
    diner = await h5(client, shop)
    waiter, _, _ = await open_socket(client, f"/api/v1/ws?token={shop.b}")
    status, body = await post(client, "/h5/service-requests", diner, {"kind": "water"})
    assert status == 201, body
    request = body["request"]
    assert request["table_id"] == "T1" and request["state"] == "open" and request["kind"] == "water"
    pushed = await waiter.event("service.requested")
    assert pushed["table_id"] == "T1" and pushed["data"]["request"]["id"] == request["id"]
    assert pushed["data"]["request"]["requested_at"] == request["requested_at"]
    status, taken = await post(client, f"/stores/{shop.store_id}/service-requests/{request['id']}/take", bearer(shop.b))
    assert status == 200 and taken["request"]["taken_by"]["terminal_id"] == shop.b_id
    status, refused = await post(client, f"/stores/{shop.store_id}/service-requests/{request['id']}/take", bearer(shop.a))
    assert status == 409 and refused["error"]["code"] == "ALREADY_TAKEN"
    assert refused["error"]["details"][0]["taken_by"]["name"] == "服务员B"
    assert "服务员B" in refused["error"]["message"]
    event = await waiter.event("service.taken")
    assert event["data"]["by"]["terminal_id"] == shop.b_id
    await waiter.ws.close()


async def test_the_diners_see_it_taken_without_staff_ids(client, shop):
    """The table's H5 sockets get service.taken with the waiter as {role: erp, is_me: false} only."""
    svc = services(client)
    token, _, _ = svc.auth.new_session(shop.store_id, "T1", await svc.engine.now())
    sock, _, _ = await open_socket(client, f"/api/v1/ws?token={token}")
    _, body = await post(client, "/h5/service-requests", bearer(token), {"kind": "call_waiter"})
    mine = await sock.event("service.requested")
    assert mine["data"]["by"] == {"role": "h5", "is_me": True}
    await post(client, f"/stores/{shop.store_id}/service-requests/{body['request']['id']}/take", bearer(shop.a))
    taken = await sock.event("service.taken")
    assert taken["data"]["by"] == {"role": "erp", "is_me": False}
    assert taken["data"]["request"]["state"] == "taken"
    assert shop.a_id not in "\n".join(sock.texts) and "taken_by" not in "\n".join(sock.texts)
    await sock.ws.close()


async def test_a_table_cools_down_per_kind(client, shop):
    """The same kind again within the cooldown is 429 with Retry-After; another kind or another table is not."""
    diner = await h5(client, shop)
    assert (await post(client, "/h5/service-requests", diner, {"kind": "bill"}))[0] == 201
    resp = await client.post("/api/v1/h5/service-requests", json={"kind": "bill"}, headers=await h5(client, shop))
    body = await resp.json()
    assert resp.status == 429 and body["error"]["code"] == "RATE_LIMITED"
    assert 1 <= int(resp.headers["Retry-After"]) <= 30
    assert (await post(client, "/h5/service-requests", diner, {"kind": "water"}))[0] == 201
    svc = services(client)
    await svc.directory.put_table(shop.store_id, "T2", "二号桌", {"role": "admin"})
    other, _, _ = svc.auth.new_session(shop.store_id, "T2", await svc.engine.now())
    assert (await post(client, "/h5/service-requests", bearer(other), {"kind": "bill"}))[0] == 201


async def test_the_inbox_and_the_admin_board_list_requests_newest_first(client, shop):
    """GET for terminals and for the admin lists the store's requests, newest first, with who took them."""
    diner = await h5(client, shop)
    _, first = await post(client, "/h5/service-requests", diner, {"kind": "water"})
    _, second = await post(client, "/h5/service-requests", diner, {"kind": "call_waiter"})
    await post(client, f"/stores/{shop.store_id}/service-requests/{first['request']['id']}/take", bearer(shop.a))
    for path, token in ((f"/stores/{shop.store_id}/service-requests", shop.b),
                        (f"/admin/stores/{shop.store_id}/service-requests", ADMIN_TOKEN)):
        resp = await client.get("/api/v1" + path, headers=bearer(token))
        listed = (await resp.json())["requests"]
        assert [r["id"] for r in listed] == [second["request"]["id"], first["request"]["id"]]
        assert listed[1]["taken_by"]["terminal_id"] == shop.a_id and listed[0]["state"] == "open"


async def test_unknown_kind_and_unknown_request(client, shop):
    """An unknown kind is 400; taking an unknown request is 404; a terminal cannot ask as a diner."""
    status, _ = await post(client, "/h5/service-requests", await h5(client, shop), {"kind": "massage"})
    assert status == 400
    status, _ = await post(client, f"/stores/{shop.store_id}/service-requests/nope/take", bearer(shop.a))
    assert status == 404
    status, _ = await post(client, "/h5/service-requests", bearer(shop.a), {"kind": "water"})
    assert status == 403


async def test_two_waiters_on_two_processes_take_it_exactly_once(coordinators, redis_client, uid):
    """Two waiters pressing at the same instant through two coordinator processes: one 200, one 409, one service.taken."""
    engine = make_engine(redis_client)
    directory = Directory(engine, "http://tablelock.test")
    store_id = f"svc-{uid}"
    await directory.put_store(store_id, "店", SYSTEM)
    a = await directory.register_terminal(store_id, "A", True, SYSTEM)
    b = await directory.register_terminal(store_id, "B", False, SYSTEM)
    await directory.put_table(store_id, "T1", "一号桌", SYSTEM)
    auth = Authenticator(redis_client, admin_token=ADMIN_TOKEN, secret_key=SECRET_KEY, session_ttl_ms=3_600_000)
    token, _, _ = auth.new_session(store_id, "T1", await engine.now())
    procs = coordinators(2)
    async with aiohttp.ClientSession() as http:
        resp = await http.post(f"{procs[0].url}/api/v1/h5/service-requests", json={"kind": "call_waiter"},
                               headers=bearer(token))
        assert resp.status == 201, await resp.text()
        request_id = (await resp.json())["request"]["id"]
        start = asyncio.Event()

        async def take(proc, waiter):
            await start.wait()
            r = await http.post(f"{proc.url}/api/v1/stores/{store_id}/service-requests/{request_id}/take",
                                headers=bearer(waiter))
            return r.status, await r.json()

        tasks = [asyncio.create_task(take(procs[0], a.token)), asyncio.create_task(take(procs[1], b.token))]
        await asyncio.sleep(0.05)
        start.set()
        results = await asyncio.gather(*tasks)
    assert sorted(status for status, _ in results) == [200, 409]
    winner = next(body for status, body in results if status == 200)["request"]["taken_by"]
    loser = next(body for status, body in results if status == 409)["error"]["details"][0]["taken_by"]
    assert winner["terminal_id"] == loser["terminal_id"]
    stream = await redis_client.xrange(keys.events(store_id))
    assert sum(b'"service.taken"' in fields[b"e"] for _, fields in stream) == 1
