"""H5 endpoints without ERP RPC over real HTTP: opening a session from a QR code, the table view."""

from __future__ import annotations

import asyncio
import json

import pytest

from coordinator.core.models import OrderIn, StoreConfigPatch
from coordinator.core.rules import Kind
from coordinator.store.auth import Authenticator, qr_token
from tests.support.app import SYSTEM, bearer, order_body, services


@pytest.fixture
def settings(settings):
    """The shared settings with session rate limits out of the way of these tests."""
    return settings.model_copy(update={"session_rate_per_minute": 10_000, "h5_rate_per_minute": 10_000})


async def open_session(client, qr: str) -> tuple[int, dict]:
    """POST /h5/sessions with ``qr``; returns (status, body)."""
    resp = await client.post("/api/v1/h5/sessions", json={"qr_token": qr})
    return resp.status, await resp.json()


async def session(client, qr: str) -> dict:
    """A fresh session on the table of ``qr`` (its SessionCreated body)."""
    status, data = await open_session(client, qr)
    assert status == 201
    return data


async def table_view(client, token: str) -> tuple[int, dict, str]:
    """GET /h5/table as ``token``; returns (status, body, raw text)."""
    resp = await client.get("/api/v1/h5/table", headers=bearer(token))
    text = await resp.text()
    return resp.status, json.loads(text), text


async def holder_of(client, session_token: str) -> dict:
    """The lock holder dict of an H5 session token."""
    svc = services(client)
    return (await svc.auth.authenticate(session_token, await svc.engine.now())).holder()


async def second_table(client, shop, table_id: str = "T2") -> str:
    """Add a table to the shop; returns its QR token."""
    table = await services(client).directory.put_table(shop.store_id, table_id, "二号桌", SYSTEM)
    return table.qr_url.split("qr=", 1)[1]


async def push(client, shop, **kw) -> None:
    """Store an order as the shop's master terminal would push it."""
    erp = {"role": "erp", "terminal_id": shop.a_id, "name": "收银台"}
    await services(client).engine.put_order(shop.store_id, OrderIn.model_validate(order_body(**kw)), erp)


# --- sessions -----------------------------------------------------------------------------


async def test_qr_token_opens_a_session_on_its_table(client, shop):
    """A genuine QR token gives 201 with a session token for that store and table, expiring later."""
    svc = services(client)
    now = await svc.engine.now()
    data = await session(client, shop.qr)
    assert (data["store_id"], data["table_id"]) == (shop.store_id, "T1")
    assert data["expires_at"] == pytest.approx(now + svc.settings.h5_session_ttl_seconds * 1000, abs=5_000)
    principal = await svc.auth.authenticate(data["session_token"], now)
    assert (principal.role, principal.store_id, principal.table_id) == ("h5", shop.store_id, "T1")


async def test_each_scan_is_a_new_session(client, shop):
    """Two scans of one code are two sessions with different ids."""
    first, second = await session(client, shop.qr), await session(client, shop.qr)
    assert (await holder_of(client, first["session_token"])) != (await holder_of(client, second["session_token"]))


@pytest.mark.parametrize("tamper", [
    lambda qr: qr[:-2] + ("AA" if not qr.endswith("AA") else "BB"),
    lambda qr: qr.replace("~T1~", "~T2~"),
    lambda qr: "qr~nostore~T1~" + qr.rsplit("~", 1)[1],
    lambda qr: "qr~a~b",
    lambda qr: qr.replace("qr~", "h5~", 1),
    lambda qr: "qr~bad id~T1~mac",
])
async def test_forged_or_malformed_qr_is_401(client, shop, tamper):
    """A QR token whose signature, table, store or shape was tampered with is 401 UNAUTHENTICATED."""
    await second_table(client, shop)
    status, data = await open_session(client, tamper(shop.qr))
    assert status == 401 and data["error"]["code"] == "UNAUTHENTICATED"


async def test_rotated_qr_secret_invalidates_printed_codes(client, shop):
    """After the store's QR secret is rotated, an old code is 401 and the new one works."""
    directory = services(client).directory
    await directory.rotate_qr_secret(shop.store_id, SYSTEM)
    status, _ = await open_session(client, shop.qr)
    assert status == 401
    fresh = (await directory.table(shop.store_id, "T1")).qr_url.split("qr=", 1)[1]
    assert (await open_session(client, fresh))[0] == 201


async def test_genuine_code_of_a_missing_table_is_404(client, shop):
    """A correctly signed code for a table the store does not have is 404 NOT_FOUND."""
    secret = await services(client).directory.qr_secret(shop.store_id)
    status, data = await open_session(client, qr_token(secret, shop.store_id, "T404"))
    assert status == 404 and data["error"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize("body", [b"{}", b'{"qr_token": ""}', b'{"qr_token": "x", "more": 1}', b"nope"])
async def test_session_request_body_is_validated(client, shop, body):
    """A sessions body without a QR token, with extra fields or not JSON, is 400."""
    resp = await client.post("/api/v1/h5/sessions", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "VALIDATION_ERROR"


async def test_session_endpoint_ignores_bearer_tokens(client, shop):
    """POST /h5/sessions is public: a bad bearer header does not stop a genuine code."""
    resp = await client.post("/api/v1/h5/sessions", json={"qr_token": shop.qr}, headers=bearer("garbage"))
    assert resp.status == 201


# --- the table view -----------------------------------------------------------------------


async def test_table_view_shows_store_table_order_config_and_seq(client, shop):
    """GET /h5/table shows the store, the table, its open order, the H5 config subset and the seq."""
    svc = services(client)
    token = (await session(client, shop.qr))["session_token"]
    status, data, _ = await table_view(client, token)
    assert status == 200
    assert data["store"] == {"store_id": shop.store_id, "name": "测试店"}
    assert data["table"] == {"table_id": "T1", "name": "一号桌"}
    assert data["order"]["order_id"] == "o1" and data["order"]["total_cents"] == 3800
    assert data["locks"] == []
    assert data["config"] == {"strong_link_enabled": True, "h5_payment_lock_seconds": 15}
    assert data["seq"] == await svc.engine.seq(shop.store_id) and data["seq"] > 0


async def test_table_view_follows_config_and_seq(client, shop):
    """A config change shows in the view and moves seq forward."""
    token = (await session(client, shop.qr))["session_token"]
    _, before, _ = await table_view(client, token)
    await services(client).directory.patch_config(
        shop.store_id, StoreConfigPatch(strong_link_enabled=False, h5_payment_lock_seconds=40), SYSTEM)
    _, after, _ = await table_view(client, token)
    assert after["config"] == {"strong_link_enabled": False, "h5_payment_lock_seconds": 40}
    assert after["seq"] > before["seq"]


async def test_table_view_shows_locks_in_viewer_form_and_never_ids_or_tokens(client, shop):
    """Locks appear as {role, is_me}; no token, terminal id or other session id is in the response."""
    engine = services(client).engine
    me, other = await session(client, shop.qr), await session(client, shop.qr)
    me_holder, other_holder = await holder_of(client, me["session_token"]), await holder_of(client, other["session_token"])
    mine, _ = await engine.acquire(shop.store_id, "o1", me_holder, Kind.PAYMENT)
    _, data, text = await table_view(client, me["session_token"])
    assert [(l["kind"], l["holder"]) for l in data["locks"]] == [("payment", {"role": "h5", "is_me": True})]
    assert "token" not in data["locks"][0] and data["locks"][0]["fence"] == mine["fence"]
    _, data, text_other = await table_view(client, other["session_token"])
    assert data["locks"][0]["holder"] == {"role": "h5", "is_me": False}
    for secret in (mine["token"], me_holder["session_id"], other_holder["session_id"], '"token"'):
        assert secret not in text and secret not in text_other


async def test_table_view_hides_which_terminal_holds_a_lock(client, shop):
    """A terminal's lock is shown to the diner as role erp, with no terminal id or name."""
    erp = {"role": "erp", "terminal_id": shop.a_id, "name": "收银台"}
    lock, _ = await services(client).engine.acquire(shop.store_id, "o1", erp, Kind.ORDER)
    _, data, text = await table_view(client, (await session(client, shop.qr))["session_token"])
    assert data["locks"][0]["holder"] == {"role": "erp", "is_me": False}
    for secret in (shop.a_id, "收银台", lock["token"]):
        assert secret not in text


async def test_table_view_with_no_open_order(client, shop):
    """A table without an open order shows order null and no locks."""
    qr = await second_table(client, shop)
    _, data, _ = await table_view(client, (await session(client, qr))["session_token"])
    assert (data["table"]["table_id"], data["order"], data["locks"]) == ("T2", None, [])


async def test_table_view_follows_the_most_recently_opened_order(client, shop):
    """With several open orders on the table the view shows the one opened last; closed ones drop out."""
    token = (await session(client, shop.qr))["session_token"]
    await asyncio.sleep(0.01)  # a later opened_at; the id "o0" sorts first, so only time decides
    await push(client, shop, order_id="o0")
    assert (await table_view(client, token))[1]["order"]["order_id"] == "o0"
    await push(client, shop, order_id="o0", version=2, status="paid")
    assert (await table_view(client, token))[1]["order"]["order_id"] == "o1"
    await push(client, shop, order_id="o1", version=2, status="cancelled")
    assert (await table_view(client, token))[1]["order"] is None


async def test_table_view_only_ever_shows_its_own_table(client, shop):
    """A session of T2 never sees T1's order or locks, and T1's session never sees T2's."""
    qr2 = await second_table(client, shop)
    await push(client, shop, order_id="o2", table_id="T2")
    t1, t2 = await session(client, shop.qr), await session(client, qr2)
    await services(client).engine.acquire(shop.store_id, "o1", await holder_of(client, t1["session_token"]), Kind.PAYMENT)
    _, view1, text1 = await table_view(client, t1["session_token"])
    _, view2, text2 = await table_view(client, t2["session_token"])
    assert (view1["table"]["table_id"], view1["order"]["order_id"], len(view1["locks"])) == ("T1", "o1", 1)
    assert (view2["table"]["table_id"], view2["order"]["order_id"], view2["locks"]) == ("T2", "o2", [])
    assert '"o1"' not in text2 and "一号桌" not in text2
    assert '"o2"' not in text1 and "二号桌" not in text1


async def test_expired_or_forged_session_is_401(client, shop, settings):
    """A session past expires_at, or one whose signature was altered, cannot read the table."""
    signer = Authenticator(None, admin_token="unused", secret_key=settings.secret_key.get_secret_value(),
                           session_ttl_ms=1_000)
    expired, _, _ = signer.new_session(shop.store_id, "T1", now=0)
    status, data, _ = await table_view(client, expired)
    assert status == 401 and data["error"]["code"] == "UNAUTHENTICATED"
    good = (await session(client, shop.qr))["session_token"]
    forged = good.replace("~T1~", "~T2~")
    assert (await table_view(client, forged))[0] == 401
    assert (await table_view(client, good))[0] == 200


async def test_table_view_needs_an_h5_session(client, shop):
    """A terminal or admin token gets 403 on GET /h5/table, no token 401."""
    assert (await table_view(client, shop.a))[0] == 403
    assert (await client.get("/api/v1/h5/table")).status == 401
