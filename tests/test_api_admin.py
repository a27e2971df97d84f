"""Admin HTTP API (SPEC §5 admin, §6 config) in-process on a real Redis, single node and cluster."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
import zxingcpp
from PIL import Image

from coordinator.api import admin
from coordinator.core.errors import AmountMismatch, StaleVersion, Unauthenticated
from coordinator.core.models import OrderIn
from coordinator.core.rules import Kind
from coordinator.realtime import liveness as presence
from coordinator.store.auth import verify_qr_token
from tests.support.app import ADMIN_TOKEN, bearer, order_body, services

API = "/api/v1"
H5_HOLDER = {"role": "h5", "session_id": "diner1"}

#: Every admin endpoint with a body that would be valid; {s} = store, {t} = a terminal id.
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("PUT", "/admin/stores/{s}", {"name": "店"}),
    ("GET", "/admin/stores", None),
    ("GET", "/admin/stores/{s}/config", None),
    ("PATCH", "/admin/stores/{s}/config", {"order_lock_seconds": 60}),
    ("POST", "/admin/stores/{s}/terminals", {"name": "新终端", "master": False}),
    ("GET", "/admin/stores/{s}/terminals", None),
    ("DELETE", "/admin/stores/{s}/terminals/{t}", None),
    ("PUT", "/admin/stores/{s}/tables/T9", {"name": "九号桌"}),
    ("GET", "/admin/stores/{s}/tables", None),
    ("GET", "/admin/stores/{s}/tables/T1/qr.png", None),
    ("POST", "/admin/stores/{s}/qr/rotate", None),
    ("GET", "/admin/stores/{s}/audit", None),
    ("GET", "/admin/stores/{s}/locks", None),
    ("GET", "/admin/stores/{s}/reconciliation", None),
]


async def send(client, method: str, path: str, token: str | None = ADMIN_TOKEN, json: Any = None, **kw):
    """One request under /api/v1 with ``token`` as bearer (None: no Authorization header)."""
    headers = bearer(token) if token is not None else {}
    return await client.request(method, API + path, headers=headers, json=json, **kw)


async def ok_json(response, status: int = 200) -> Any:
    """The JSON body of a response that must have ``status``."""
    assert response.status == status, await response.text()
    return await response.json()


async def error_code(response, status: int) -> dict[str, Any]:
    """The SPEC error object of a response that must have ``status``."""
    assert response.status == status, await response.text()
    return (await response.json())["error"]


async def h5_token(client, shop) -> str:
    """A valid H5 session token for the shop's table."""
    svc = services(client)
    token, _, _ = svc.auth.new_session(shop.store_id, shop.table_id, await svc.engine.now())
    return token


def erp(shop, which: str = "a") -> dict[str, str]:
    """The holder dict of terminal A or B."""
    tid = shop.a_id if which == "a" else shop.b_id
    return {"role": "erp", "terminal_id": tid, "name": "收银台" if which == "a" else "服务员B"}


async def audit_entries(client, store_id: str, **params: Any) -> list[dict[str, Any]]:
    """Every audit entry of the store (following ``next``)."""
    out, after = [], None
    while True:
        query = {**params, **({"after": after} if after else {})}
        page = await ok_json(await send(client, "GET", f"/admin/stores/{store_id}/audit", params=query))
        out += page["entries"]
        if page["next"] is None:
            return out
        after = page["next"]


def decode_qr(png: bytes) -> str:
    """The text of the one QR code in a PNG."""
    results = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert len(results) == 1
    return results[0].text


# --- auth and scope ---------------------------------------------------------------------------


def test_endpoint_table_covers_every_admin_route():
    """The tables these tests loop over name every declared admin endpoint, so none escapes them."""
    declared = {(e.method, re.sub(r"{\w+}", "{}", e.path)) for e in admin.router.endpoints}
    listed = {(m, re.sub(r"{\w+}|T9|T1", "{}", p)) for m, p, _ in ENDPOINTS}
    assert declared == listed


async def test_every_endpoint_needs_the_admin_token(client, shop):
    """No token or a bad one is 401; a terminal's or a diner's valid token is 403, on every admin endpoint."""
    diner = await h5_token(client, shop)
    for method, template, body in ENDPOINTS:
        path = template.format(s=shop.store_id, t=shop.b_id)
        for token in (None, "not-a-token", ADMIN_TOKEN + "x"):
            err = await error_code(await send(client, method, path, token, json=body), 401)
            assert err["code"] == "UNAUTHENTICATED", (method, path)
        for token in (shop.a, diner):
            err = await error_code(await send(client, method, path, token, json=body), 403)
            assert err["code"] == "FORBIDDEN", (method, path)


async def test_unknown_store_is_404_everywhere_but_put_store(client, uid):
    """Every store-scoped admin endpoint answers 404 NOT_FOUND for a store that does not exist."""
    for method, template, body in ENDPOINTS:
        if "{s}" not in template or template == "/admin/stores/{s}":
            continue
        path = template.format(s=f"nosuch-{uid}", t="Tdeadbeef")
        err = await error_code(await send(client, method, path, json=body), 404)
        assert err["code"] == "NOT_FOUND", (method, path)


async def test_oversized_bodies_are_413(client, shop):
    """A body over settings.max_body_bytes is 413 PAYLOAD_TOO_LARGE on every admin endpoint that takes one."""
    big = "x" * (services(client).settings.max_body_bytes + 1)
    for method, template, body in ENDPOINTS:
        if body is None:
            continue
        path = template.format(s=shop.store_id, t=shop.b_id)
        err = await error_code(await send(client, method, path, json={"name": big}), 413)
        assert err["code"] == "PAYLOAD_TOO_LARGE", (method, path)


# --- stores -----------------------------------------------------------------------------------


async def test_put_store_creates_renames_and_lists(client, uid):
    """PUT creates a store (200), PUT again renames it keeping created_at, GET /admin/stores lists it."""
    store_id = f"new-{uid}"
    created = await ok_json(await send(client, "PUT", f"/admin/stores/{store_id}", json={"name": "  老王面馆 "}))
    assert created["store_id"] == store_id and created["name"] == "老王面馆"
    renamed = await ok_json(await send(client, "PUT", f"/admin/stores/{store_id}", json={"name": "王记"}))
    assert renamed == {**created, "name": "王记"}
    stores = (await ok_json(await send(client, "GET", "/admin/stores")))["stores"]
    assert renamed in stores


@pytest.mark.parametrize("body", [{}, {"name": ""}, {"name": "x" * 101}, {"name": "ok", "extra": 1}, {"name": 5}])
async def test_put_store_validates_its_body(client, uid, body):
    """A missing, empty, overlong or non-string name, or an unknown field, is 400 with details."""
    err = await error_code(await send(client, "PUT", f"/admin/stores/v-{uid}", json=body), 400)
    assert err["code"] == "VALIDATION_ERROR" and err["details"]


async def test_put_store_rejects_malformed_json(client, uid):
    """A body that is not JSON is 400 VALIDATION_ERROR, not a 500."""
    err = await error_code(await send(client, "PUT", f"/admin/stores/v-{uid}", data=b"{name:"), 400)
    assert err["code"] == "VALIDATION_ERROR"


# --- configuration ----------------------------------------------------------------------------


async def test_config_defaults_and_patch(client, shop):
    """GET gives the defaults; PATCH changes only the given keys, returns the full config and records config.updated."""
    path = f"/admin/stores/{shop.store_id}/config"
    config = await ok_json(await send(client, "GET", path))
    assert config == {"strong_link_enabled": True, "h5_payment_lock_seconds": 15, "erp_payment_lock_seconds": 180,
                      "order_lock_seconds": 300, "presettle_lock_seconds": 1800,
                      "erp_disconnect_grace_seconds": 30, "erp_rpc_timeout_ms": 3000,
                      "h5_payment_window_seconds": 180, "auto_refund_surplus": True}
    patched = await ok_json(await send(client, "PATCH", path, json={"h5_payment_lock_seconds": 20, "strong_link_enabled": False}))
    assert patched == {**config, "h5_payment_lock_seconds": 20, "strong_link_enabled": False}
    assert await ok_json(await send(client, "GET", path)) == patched
    updates = [e for e in await audit_entries(client, shop.store_id) if e["name"] == "config.updated"]
    assert len(updates) == 1
    assert updates[0]["actor"] == {"role": "admin"}
    assert updates[0]["data"]["changed"] == ["h5_payment_lock_seconds", "strong_link_enabled"]


async def test_empty_patch_changes_nothing(client, shop):
    """An empty PATCH (or no body) returns the config unchanged and records no config.updated."""
    path = f"/admin/stores/{shop.store_id}/config"
    before = await ok_json(await send(client, "GET", path))
    assert await ok_json(await send(client, "PATCH", path, json={})) == before
    assert await ok_json(await send(client, "PATCH", path)) == before
    assert not [e for e in await audit_entries(client, shop.store_id) if e["name"] == "config.updated"]


@pytest.mark.parametrize("field, value, rule", [
    ("h5_payment_lock_seconds", 0, "h5_payment_lock_seconds must be between 1 and 300"),
    ("h5_payment_lock_seconds", 301, "h5_payment_lock_seconds must be between 1 and 300"),
    ("erp_payment_lock_seconds", 4, "erp_payment_lock_seconds must be between 5 and 3600"),
    ("order_lock_seconds", 3601, "order_lock_seconds must be between 5 and 3600"),
    ("presettle_lock_seconds", 29, "presettle_lock_seconds must be between 30 and 86400"),
    ("erp_disconnect_grace_seconds", -1, "erp_disconnect_grace_seconds must be between 0 and 600"),
    ("erp_rpc_timeout_ms", 30001, "erp_rpc_timeout_ms must be between 100 and 30000 ms"),
    ("order_lock_seconds", "abc", "order_lock_seconds must be between 5 and 3600"),
    ("strong_link_enabled", "maybe", "strong_link_enabled must be true or false"),
])
async def test_config_out_of_range_names_field_and_range(client, shop, field, value, rule):
    """An out-of-range or mistyped value is 400 whose detail names the key and its allowed range; nothing changes."""
    path = f"/admin/stores/{shop.store_id}/config"
    before = await ok_json(await send(client, "GET", path))
    err = await error_code(await send(client, "PATCH", path, json={"order_lock_seconds": 60, field: value}), 400)
    assert err["code"] == "VALIDATION_ERROR"
    assert [d["loc"] for d in err["details"]] == [[field]]
    assert err["details"][0]["msg"].startswith(rule)
    assert await ok_json(await send(client, "GET", path)) == before


async def test_config_patch_rejects_unknown_keys(client, shop):
    """A key that is not part of the configuration is 400 naming it."""
    err = await error_code(await send(client, "PATCH", f"/admin/stores/{shop.store_id}/config",
                                      json={"h5_payment_lock_secs": 20}), 400)
    assert err["details"][0]["loc"] == ["h5_payment_lock_secs"]


async def test_config_patch_sets_the_duration_of_the_next_lock(client, shop):
    """After a PATCH, a newly taken ERP order lock and H5 payment lock last the new durations."""
    engine = services(client).engine
    await ok_json(await send(client, "PATCH", f"/admin/stores/{shop.store_id}/config",
                             json={"order_lock_seconds": 42, "h5_payment_lock_seconds": 7}))
    lock, enforced = await engine.acquire(shop.store_id, "o1", erp(shop), Kind.ORDER)
    assert enforced and lock["expires_at"] - lock["acquired_at"] == 42_000
    await engine.put_order(shop.store_id, OrderIn.model_validate(order_body("o2")), erp(shop))
    lock, _ = await engine.acquire(shop.store_id, "o2", H5_HOLDER, Kind.PAYMENT)
    assert lock["expires_at"] - lock["acquired_at"] == 7_000


# --- terminals --------------------------------------------------------------------------------


async def test_register_and_list_terminals(client, shop):
    """POST registers a terminal (201, token once, works as ERP); GET lists all with online from presence."""
    svc = services(client)
    path = f"/admin/stores/{shop.store_id}/terminals"
    created = await ok_json(await send(client, "POST", path, json={"name": "吧台", "master": False}), 201)
    assert set(created) == {"terminal_id", "name", "master", "token"} and created["name"] == "吧台"
    principal = await svc.auth.authenticate(created["token"], await svc.engine.now())
    assert (principal.role, principal.terminal_id) == ("erp", created["terminal_id"])
    await presence.touch(svc.redis, shop.store_id, shop.a_id, "conn1", await svc.engine.now())
    terminals = (await ok_json(await send(client, "GET", path)))["terminals"]
    assert [t["terminal_id"] for t in terminals] == [shop.a_id, shop.b_id, created["terminal_id"]]
    assert [t["online"] for t in terminals] == [True, False, False]
    assert terminals[0]["master"] is True
    assert all("token" not in t and "token_hash" not in t for t in terminals)


@pytest.mark.parametrize("body", [{}, {"name": "x", "master": "sometimes"}, {"name": "x", "token": "t"}])
async def test_register_terminal_validates_its_body(client, shop, body):
    """A missing name, a non-boolean master or an unknown field is 400 with details."""
    err = await error_code(await send(client, "POST", f"/admin/stores/{shop.store_id}/terminals", json=body), 400)
    assert err["code"] == "VALIDATION_ERROR" and err["details"]


class FakeHub:
    """Stands in for the websocket hub: records which terminals it was asked to disconnect."""

    def __init__(self) -> None:
        self.disconnected: list[tuple[str, str]] = []

    async def disconnect_terminal(self, store_id: str, terminal_id: str) -> None:
        """Record the request."""
        self.disconnected.append((store_id, terminal_id))


async def test_revoke_terminal_kills_token_and_releases_locks(client, shop):
    """DELETE makes the token 401, releases its locks (lock.released reason revoked) and asks the hub to close its sockets."""
    svc = services(client)
    hub = FakeHub()
    svc.hub = hub  # the realtime engineer's hub, when the app has one
    await svc.engine.acquire(shop.store_id, "o1", erp(shop, "b"), Kind.ORDER)
    path = f"/admin/stores/{shop.store_id}/terminals/{shop.b_id}"
    assert (await send(client, "GET", f"/admin/stores/{shop.store_id}/locks", shop.b)).status == 403
    response = await send(client, "DELETE", path)
    assert response.status == 204 and await response.read() == b""
    err = await error_code(await send(client, "GET", f"/admin/stores/{shop.store_id}/locks", shop.b), 401)
    assert err["code"] == "UNAUTHENTICATED"
    with pytest.raises(Unauthenticated):
        await svc.auth.authenticate(shop.b, await svc.engine.now())
    assert hub.disconnected == [(shop.store_id, shop.b_id)]
    assert (await ok_json(await send(client, "GET", f"/admin/stores/{shop.store_id}/locks")))["locks"] == []
    entries = await audit_entries(client, shop.store_id)
    released = [e for e in entries if e["name"] == "lock.released"]
    assert [e["data"]["reason"] for e in released] == ["revoked"]
    assert released[0]["data"]["lock"]["holder"]["terminal_id"] == shop.b_id
    assert "token" not in released[0]["data"]["lock"]
    assert [e["data"] for e in entries if e["name"] == "terminal.revoked"] == [{"terminal_id": shop.b_id}]
    terminals = (await ok_json(await send(client, "GET", f"/admin/stores/{shop.store_id}/terminals")))["terminals"]
    assert [t["terminal_id"] for t in terminals] == [shop.a_id]
    assert (await send(client, "DELETE", path)).status == 404


async def test_revoke_without_hub_still_works(client, shop):
    """With no socket of the terminal open anywhere, revoking still answers 204 (every app has a hub now)."""
    assert services(client).hub.connections() == []
    assert (await send(client, "DELETE", f"/admin/stores/{shop.store_id}/terminals/{shop.a_id}")).status == 204


# --- tables and QR codes ----------------------------------------------------------------------


async def test_put_and_list_tables(client, shop):
    """PUT creates or renames a table and returns its qr_url; GET lists the store's tables by id."""
    created = await ok_json(await send(client, "PUT", f"/admin/stores/{shop.store_id}/tables/A2", json={"name": "二号桌"}))
    assert created["table_id"] == "A2" and created["name"] == "二号桌"
    assert created["qr_url"].startswith("http://tablelock.test/h5/?qr=qr~")
    renamed = await ok_json(await send(client, "PUT", f"/admin/stores/{shop.store_id}/tables/A2", json={"name": "窗边"}))
    assert renamed == {**created, "name": "窗边"}
    tables = (await ok_json(await send(client, "GET", f"/admin/stores/{shop.store_id}/tables")))["tables"]
    assert [t["table_id"] for t in tables] == ["A2", "T1"] and tables[0] == renamed
    err = await error_code(await send(client, "PUT", f"/admin/stores/{shop.store_id}/tables/A2", json={"name": ""}), 400)
    assert err["details"][0]["loc"] == ["name"]


async def test_qr_png_decodes_to_the_tables_link(client, shop):
    """qr.png is a PNG whose QR code reads back as the table's qr_url; an unknown table is 404."""
    table = (await ok_json(await send(client, "GET", f"/admin/stores/{shop.store_id}/tables")))["tables"][0]
    response = await send(client, "GET", f"/admin/stores/{shop.store_id}/tables/T1/qr.png")
    assert response.status == 200 and response.content_type == "image/png"
    assert decode_qr(await response.read()) == table["qr_url"]
    err = await error_code(await send(client, "GET", f"/admin/stores/{shop.store_id}/tables/T404/qr.png"), 404)
    assert err["code"] == "NOT_FOUND"


async def test_rotating_the_qr_secret_changes_every_link(client, shop):
    """After rotate (204) the qr_url and image change, and the old QR token no longer verifies."""
    svc = services(client)
    before = (await ok_json(await send(client, "GET", f"/admin/stores/{shop.store_id}/tables")))["tables"][0]
    response = await send(client, "POST", f"/admin/stores/{shop.store_id}/qr/rotate")
    assert response.status == 204
    after = (await ok_json(await send(client, "GET", f"/admin/stores/{shop.store_id}/tables")))["tables"][0]
    assert after["qr_url"] != before["qr_url"]
    secret = await svc.directory.qr_secret(shop.store_id)
    with pytest.raises(Unauthenticated):
        verify_qr_token(shop.qr, secret)
    assert verify_qr_token(after["qr_url"].split("qr=", 1)[1], secret) == (shop.store_id, "T1")
    png = await (await send(client, "GET", f"/admin/stores/{shop.store_id}/tables/T1/qr.png")).read()
    assert decode_qr(png) == after["qr_url"]
    assert [e["name"] for e in await audit_entries(client, shop.store_id)].count("qr.rotated") == 1


# --- audit ------------------------------------------------------------------------------------


async def make_history(client, shop) -> None:
    """Lock transitions on o1 and o2 (order and payment kinds) so the audit log has plenty to page."""
    engine = services(client).engine
    await engine.put_order(shop.store_id, OrderIn.model_validate(order_body("o2")), erp(shop))
    for _ in range(4):
        lock, _ = await engine.acquire(shop.store_id, "o1", erp(shop), Kind.ORDER)
        await engine.release(shop.store_id, "o1", Kind.ORDER, lock["token"], erp(shop))
        lock, _ = await engine.acquire(shop.store_id, "o2", erp(shop, "b"), Kind.PAYMENT)
        await engine.release(shop.store_id, "o2", Kind.PAYMENT, lock["token"], erp(shop, "b"))


async def test_audit_pages_return_every_entry_once(client, shop):
    """Paging with a small limit returns every entry exactly once, oldest first, each with actor and time."""
    await make_history(client, shop)
    everything = (await ok_json(await send(client, "GET", f"/admin/stores/{shop.store_id}/audit",
                                           params={"limit": 500})))["entries"]
    assert len(everything) > 20
    paged = await audit_entries(client, shop.store_id, limit=3)
    assert [e["id"] for e in paged] == [e["id"] for e in everything]
    assert len({e["id"] for e in paged}) == len(paged)
    assert [e["ts"] for e in paged] == sorted(e["ts"] for e in paged)
    names = {e["name"] for e in paged}
    assert {"store.updated", "terminal.registered", "table.updated", "order.updated",
            "lock.acquired", "lock.released"} <= names
    acquired = next(e for e in paged if e["name"] == "lock.acquired")
    assert acquired["actor"]["role"] == "erp" and "token" not in acquired["data"]["lock"]


async def test_audit_filters(client, shop):
    """order_id, kind and the from/to window each narrow the pages to exactly the matching entries."""
    await make_history(client, shop)
    everything = await audit_entries(client, shop.store_id, limit=500)
    o2 = await audit_entries(client, shop.store_id, limit=2, order_id="o2")
    assert [e["id"] for e in o2] == [e["id"] for e in everything if e["order_id"] == "o2"]
    payment = await audit_entries(client, shop.store_id, limit=2, kind="payment")
    assert payment and [e["id"] for e in payment] == [
        e["id"] for e in everything if (e["data"].get("lock") or {}).get("kind") == "payment"]
    assert await audit_entries(client, shop.store_id, order_id="o1", kind="payment") == []
    mid = everything[len(everything) // 2]["ts"]
    window = await audit_entries(client, shop.store_id, limit=2, **{"from": mid, "to": mid})
    assert window and [e["id"] for e in window] == [e["id"] for e in everything if e["ts"] == mid]
    later = await audit_entries(client, shop.store_id, **{"from": mid})
    assert [e["id"] for e in later] == [e["id"] for e in everything if e["ts"] >= mid]


@pytest.mark.parametrize("params, loc", [
    ({"limit": "0"}, ["limit"]), ({"limit": "501"}, ["limit"]), ({"limit": "many"}, ["limit"]),
    ({"after": "yesterday"}, ["after"]), ({"kind": "lunch"}, ["kind"]), ({"order_id": "bad id"}, ["order_id"]),
    ({"from": "-1"}, ["from"]), ({"from": "10", "to": "5"}, []), ({"orderid": "o1"}, ["orderid"]),
])
async def test_audit_query_is_validated(client, shop, params, loc):
    """Bad paging or filter values, a reversed window or an unknown parameter are 400 naming the culprit."""
    err = await error_code(await send(client, "GET", f"/admin/stores/{shop.store_id}/audit", params=params), 400)
    assert err["code"] == "VALIDATION_ERROR" and err["details"][0]["loc"] == loc


# --- lock board -------------------------------------------------------------------------------


async def test_lock_board_shows_live_locks_without_tokens(client, shop):
    """The board lists every live lock with holder name and online, and never a token."""
    svc = services(client)
    await svc.engine.put_order(shop.store_id, OrderIn.model_validate(order_body("o2")), erp(shop))
    order_lock, _ = await svc.engine.acquire(shop.store_id, "o1", erp(shop), Kind.ORDER)
    payment_lock, _ = await svc.engine.acquire(shop.store_id, "o2", H5_HOLDER, Kind.PAYMENT)
    await presence.touch(svc.redis, shop.store_id, shop.a_id, "c1", await svc.engine.now())
    response = await send(client, "GET", f"/admin/stores/{shop.store_id}/locks")
    text = await response.text()
    assert order_lock["token"] not in text and payment_lock["token"] not in text
    locks = (await ok_json(response))["locks"]
    assert all(l["token"] is None for l in locks)
    assert [(l["order_id"], l["kind"]) for l in locks] == [("o1", "order"), ("o2", "payment")]
    assert locks[0]["holder"] == {"role": "erp", "terminal_id": shop.a_id, "name": "收银台", "online": True}
    assert locks[1]["holder"] == {"role": "h5", "session_id": "diner1"}
    assert locks[0]["table_id"] == "T1" and locks[0]["fence"] >= 1 and locks[0]["expires_at"] > locks[0]["acquired_at"]


async def test_lock_board_carries_the_redis_clock(client, shop):
    """The board answers ``now`` on the Redis clock it was read at, so a console counts down on the coordinator's time."""
    engine = services(client).engine
    before = await engine.now()
    board = await ok_json(await send(client, "GET", f"/admin/stores/{shop.store_id}/locks"))
    after = await engine.now()
    assert before <= board["now"] <= after


# --- reconciliation ---------------------------------------------------------------------------


async def test_reconciliation_lists_forced_payments_and_refused_completions(client, shop):
    """A payment lock forced away and refused completions (amount, version) are cases with trails; a clean order is not."""
    engine = services(client).engine
    s = shop.store_id
    for oid in ("o2", "o3", "o4"):
        await engine.put_order(s, OrderIn.model_validate(order_body(oid)), erp(shop))
    # o1: a diner is paying when terminal B forces its own payment through.
    await engine.acquire(s, "o1", H5_HOLDER, Kind.PAYMENT)
    await engine.acquire(s, "o1", erp(shop, "b"), Kind.PAYMENT, force=True)
    # o2: the cashier completes with the wrong amount.
    lock, _ = await engine.acquire(s, "o2", erp(shop), Kind.PAYMENT)
    with pytest.raises(AmountMismatch):
        await engine.complete(s, "o2", erp(shop), token=lock["token"], amount_cents=100, version=1,
                              payment_ref="p2")
    # o3: the order changed under a bound payment lock, then completion is tried at the old version.
    lock, _ = await engine.acquire(s, "o3", erp(shop), Kind.PAYMENT)
    await engine.put_order(s, OrderIn.model_validate(order_body("o3", version=2)), erp(shop))
    with pytest.raises(StaleVersion):
        await engine.complete(s, "o3", erp(shop), token=lock["token"], amount_cents=3800, version=1,
                              payment_ref="p3")
    # o4: paid cleanly, nothing to look at.
    lock, _ = await engine.acquire(s, "o4", erp(shop), Kind.PAYMENT)
    await engine.complete(s, "o4", erp(shop), token=lock["token"], amount_cents=3800, version=1,
                          payment_ref="p4")

    report = await ok_json(await send(client, "GET", f"/admin/stores/{s}/reconciliation"))
    cases = {c["order_id"]: c for c in report["cases"]}
    assert list(cases) == ["o1", "o2", "o3"]
    assert cases["o1"]["reasons"] == ["forced_during_payment"] and cases["o1"]["table_id"] == "T1"
    assert cases["o2"]["reasons"] == ["amount_mismatch"]
    assert cases["o3"]["reasons"] == ["version_mismatch"]
    trail = [e["name"] for e in cases["o1"]["trail"]]
    assert trail == ["order.updated", "lock.acquired", "lock.forced", "lock.acquired"]
    forced = cases["o1"]["trail"][2]
    assert forced["data"]["lock"]["holder"] == H5_HOLDER and forced["data"]["by"]["terminal_id"] == shop.b_id
    assert [e["name"] for e in cases["o2"]["trail"]][-1] == "payment.rejected"
    assert all(e["order_id"] == oid for oid, c in cases.items() for e in c["trail"])

    last_ts = max(e["ts"] for c in cases.values() for e in c["trail"])
    empty = await ok_json(await send(client, "GET", f"/admin/stores/{s}/reconciliation",
                                     params={"from": last_ts + 1, "to": last_ts + 10}))
    assert empty == {"cases": []}
    err = await error_code(await send(client, "GET", f"/admin/stores/{s}/reconciliation",
                                      params={"from": "soon"}), 400)
    assert err["details"][0]["loc"] == ["from"]


async def test_openapi_documents_the_admin_api(client):
    """The OpenAPI document lists the admin paths with their query parameters and the PNG response."""
    doc = await ok_json(await client.get(API + "/openapi.json"))
    audit_op = doc["paths"][API + "/admin/stores/{store_id}/audit"]["get"]
    assert {p["name"] for p in audit_op["parameters"]} >= {"after", "limit", "order_id", "kind", "from", "to"}
    qr_op = doc["paths"][API + "/admin/stores/{store_id}/tables/{table_id}/qr.png"]["get"]
    assert "image/png" in qr_op["responses"]["200"]["content"]
    assert "StoreConfigChange" in doc["components"]["schemas"]
