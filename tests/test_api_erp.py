"""ERP terminal endpoints over real HTTP on a real Redis: orders, locks, checks, payments (SPEC §2, §5).

H5 sessions have no lock endpoint of their own here (checkout needs the ERP RPC), so where a
scenario needs a diner holding or asking for a lock it goes through the same ``LockEngine`` with
the holder of a session opened by ``POST /h5/sessions``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from coordinator import metrics
from coordinator.app import build_app
from coordinator.core import views
from coordinator.core.errors import Forbidden, LockConflict
from coordinator.core.models import StoreConfigPatch
from coordinator.core.rules import Kind
from tests.support.app import SYSTEM, bearer, order_body, services

FORCE_ORDER = "此订单正在其他机器修改,是否强制解锁并继续?"
FORCE_PAYMENT = "此订单正在其他机器/顾客端进行结账,现在结账可能导致重复支付,是否确定继续结账?"
ACCEPT_PAYMENT = "订单正在其他机器/顾客端进行支付,暂不能接单,如需接单请先取消支付"
PAYER_ORDER_LOCKED = "订单正在其他机器修改,暂不能支付"


def order_url(shop, order_id: str | None = None, suffix: str = "") -> str:
    """The URL of one of the shop's orders (``o1`` by default), with ``suffix``."""
    return f"/api/v1/stores/{shop.store_id}/orders/{order_id or shop.order_id}{suffix}"


async def call(client, method: str, url: str, token: str | None, body: Any = None) -> tuple[int, Any]:
    """Send one request; returns (status, decoded JSON body or None)."""
    headers = bearer(token) if token else {}
    resp = await client.request(method, url, json=body, headers=headers)
    data = await resp.json() if resp.content_type == "application/json" else None
    return resp.status, data


async def take(client, shop, token: str, kind: str, order_id: str | None = None, **extra: Any) -> tuple[int, Any]:
    """POST .../locks for ``kind`` with ``token``."""
    return await call(client, "POST", order_url(shop, order_id, "/locks"), token, {"kind": kind, **extra})


async def pay(client, shop, token: str, lock_token: str, amount: int = 3800, version: int = 1,
              ref: str = "pay-1") -> tuple[int, Any]:
    """POST .../payments for o1."""
    body = {"token": lock_token, "amount_cents": amount, "version": version, "payment_ref": ref}
    return await call(client, "POST", order_url(shop, suffix="/payments"), token, body)


async def locks_of(client, shop, token: str) -> list[dict]:
    """The live locks of o1 as GET /stores/{s}/orders/o1 shows them."""
    status, data = await call(client, "GET", order_url(shop), token)
    assert status == 200
    return data["locks"]


async def h5_holder(client, shop) -> dict[str, Any]:
    """The holder dict of a fresh H5 session on the shop's table."""
    resp = await client.post("/api/v1/h5/sessions", json={"qr_token": shop.qr})
    assert resp.status == 201
    svc = services(client)
    principal = await svc.auth.authenticate((await resp.json())["session_token"], await svc.engine.now())
    return principal.holder()


async def patch_config(client, shop, **values: Any) -> None:
    """Change the shop's store configuration through the Directory."""
    await services(client).directory.patch_config(shop.store_id, StoreConfigPatch(**values), SYSTEM)


def error(data: dict) -> dict:
    """The ``error`` object of an error body."""
    return data["error"]


# --- orders -------------------------------------------------------------------------------


async def test_put_order_stores_a_newer_version(client, shop):
    """A newer version from the ERP is stored and returned with our updated_at."""
    body = order_body(version=2, items=[{"line_id": "l1", "sku": "tea", "name": "茶", "qty": 3,
                                         "unit_price_cents": 900, "source": "erp"}])
    status, data = await call(client, "PUT", order_url(shop), shop.a, body)
    assert status == 200
    assert data["order"]["version"] == 2 and data["order"]["total_cents"] == 2700
    assert isinstance(data["order"]["updated_at"], int)
    status, data = await call(client, "GET", order_url(shop), shop.b)
    assert (status, data["order"]["version"], data["locks"]) == (200, 2, [])


async def test_put_order_same_version_same_content_is_idempotent(client, shop):
    """Pushing the stored version again with the same content is a 200 that changes nothing."""
    _, before = await call(client, "GET", order_url(shop), shop.a)
    status, data = await call(client, "PUT", order_url(shop), shop.b, order_body())
    assert status == 200
    assert data["order"] == before["order"]


async def test_put_order_same_version_other_content_is_stale(client, shop):
    """The same version with other content is 409 STALE_VERSION carrying the stored order."""
    body = order_body(items=[{"line_id": "l9", "sku": "soup", "name": "汤", "qty": 1,
                              "unit_price_cents": 100, "source": "erp"}])
    status, data = await call(client, "PUT", order_url(shop), shop.a, body)
    assert status == 409 and error(data)["code"] == "STALE_VERSION"
    assert error(data)["order"]["total_cents"] == 3800


async def test_put_order_lower_version_is_stale(client, shop):
    """A version lower than the stored one is 409 STALE_VERSION with the latest order."""
    assert (await call(client, "PUT", order_url(shop), shop.a, order_body(version=3)))[0] == 200
    status, data = await call(client, "PUT", order_url(shop), shop.a, order_body(version=2))
    assert status == 409 and error(data)["code"] == "STALE_VERSION"
    assert error(data)["order"]["version"] == 3


async def test_put_order_path_and_body_ids_must_agree(client, shop):
    """A body whose order_id differs from the path's is 400 VALIDATION_ERROR naming the field."""
    status, data = await call(client, "PUT", order_url(shop, "o2"), shop.a, order_body("o1"))
    assert status == 400 and error(data)["code"] == "VALIDATION_ERROR"
    assert error(data)["details"][0]["loc"] == ["body", "order_id"]


@pytest.mark.parametrize("mutate, loc", [
    (lambda b: b["items"][0].update(qty=0), ["items", 0, "qty"]),
    (lambda b: b.update(status="refunded"), ["status"]),
    (lambda b: b.update(version=0), ["version"]),
    (lambda b: b.update(surprise=1), ["surprise"]),
    (lambda b: b.update(table_id="bad id"), ["table_id"]),
    (lambda b: b.pop("total_cents"), ["total_cents"]),
])
async def test_put_order_invalid_body_is_400_with_details(client, shop, mutate, loc):
    """A body that breaks the Order shape is 400 with details pointing at the field."""
    body = order_body()
    mutate(body)
    status, data = await call(client, "PUT", order_url(shop), shop.a, body)
    assert status == 400 and error(data)["code"] == "VALIDATION_ERROR"
    assert loc in [d["loc"] for d in error(data)["details"]]


async def test_malformed_json_is_400(client, shop):
    """A body that is not JSON is 400, never a 500."""
    resp = await client.put(order_url(shop), data=b"{not json", headers=bearer(shop.a))
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "VALIDATION_ERROR"


async def test_oversized_body_is_413(client, shop):
    """A body over max_body_bytes is 413 PAYLOAD_TOO_LARGE."""
    huge = b'{"order_id":"o1","pad":"' + b"x" * 70_000 + b'"}'
    resp = await client.put(order_url(shop), data=huge, headers={**bearer(shop.a), "Content-Type": "application/json"})
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_closing_an_order_releases_its_locks_and_refuses_new_ones(client, shop):
    """An order pushed as cancelled loses its locks, and lock requests on it are ORDER_CLOSED."""
    assert (await take(client, shop, shop.a, "order"))[0] == 201
    status, data = await call(client, "PUT", order_url(shop), shop.a, order_body(version=2, status="cancelled"))
    assert status == 200 and data["order"]["status"] == "cancelled"
    assert await locks_of(client, shop, shop.a) == []
    status, data = await take(client, shop, shop.b, "payment")
    assert status == 409 and error(data)["code"] == "ORDER_CLOSED"
    assert error(data)["order"]["status"] == "cancelled"


async def test_get_order_shows_locks_in_staff_form_without_tokens(client, shop):
    """GET order shows each lock's terminal holder with name, never its token."""
    _, grant = await take(client, shop, shop.a, "order")
    locks = await locks_of(client, shop, shop.b)
    assert len(locks) == 1
    assert locks[0]["holder"] == {"role": "erp", "terminal_id": shop.a_id, "name": "收银台", "online": False}
    assert "token" not in locks[0] and locks[0]["fence"] == grant["lock"]["fence"]


async def test_list_locks_shows_every_live_lock_of_the_store(client, shop):
    """GET /stores/{s}/locks lists the live locks of all the store's orders, without tokens."""
    await call(client, "PUT", order_url(shop, "o2"), shop.a, order_body("o2", table_id="T2"))
    await take(client, shop, shop.a, "order")
    await take(client, shop, shop.b, "payment", "o2")
    status, data = await call(client, "GET", f"/api/v1/stores/{shop.store_id}/locks", shop.b)
    assert status == 200
    assert [(l["order_id"], l["kind"], "token" in l) for l in data["locks"]] == [
        ("o1", "order", False), ("o2", "payment", False)]


@pytest.mark.parametrize("method, suffix, body", [
    ("GET", "", None),
    ("POST", "/locks", {"kind": "order"}),
    ("POST", "/check", {"action": "pay"}),
    ("POST", "/payments", {"token": "x", "amount_cents": 1, "version": 1, "payment_ref": "r"}),
])
async def test_unknown_order_is_404(client, shop, method, suffix, body):
    """Every order endpoint answers 404 NOT_FOUND for an order the ERP never reported."""
    status, data = await call(client, method, order_url(shop, "nope", suffix), shop.a, body)
    assert status == 404 and error(data)["code"] == "NOT_FOUND"


async def test_renew_or_release_on_an_unknown_order_holds_nothing(client, shop):
    """A token presented on an order nobody reported holds nothing: renew LOCK_LOST, release false."""
    status, data = await call(client, "POST", order_url(shop, "nope", "/locks/order/renew"), shop.a, {"token": "x"})
    assert status == 409 and error(data)["code"] == "LOCK_LOST"
    assert await call(client, "POST", order_url(shop, "nope", "/locks/order/release"), shop.a,
                      {"token": "x"}) == (200, {"released": False})


async def test_unknown_kind_or_bad_id_in_path_is_404(client, shop):
    """A lock kind that does not exist, or an id off the SPEC pattern, is 404."""
    assert (await call(client, "POST", order_url(shop, suffix="/locks/table/renew"), shop.a, {"token": "x"}))[0] == 404
    assert (await call(client, "GET", order_url(shop, "-bad"), shop.a))[0] == 404


async def test_other_store_and_missing_token_are_refused(client, shop, uid):
    """A terminal of another store gets 403; no token gets 401."""
    svc = services(client)
    await svc.directory.put_store(f"x-{uid}", "别家", SYSTEM)
    other = await svc.directory.register_terminal(f"x-{uid}", "别家收银", True, SYSTEM)
    status, data = await take(client, shop, other.token, "order")
    assert status == 403 and error(data)["code"] == "FORBIDDEN"
    status, data = await take(client, shop, None, "order")
    assert status == 401 and error(data)["code"] == "UNAUTHENTICATED"


# --- locks: the SPEC §2 scenarios ---------------------------------------------------------


async def test_grant_carries_token_fence_version_and_expiry(client, shop):
    """A granted lock comes back with the holder's token, a fence, the bound version and its expiry."""
    status, data = await take(client, shop, shop.a, "order")
    assert status == 201 and data["enforced"] is True
    lock = data["lock"]
    assert lock["kind"] == "order" and lock["token"] and lock["fence"] >= 1 and lock["version"] == 1
    assert lock["expires_at"] - lock["acquired_at"] == 300_000
    assert lock["holder"]["terminal_id"] == shop.a_id


async def test_taking_an_own_lock_again_returns_it_unchanged(client, shop):
    """A holder asking again for the lock it holds gets the same lock back."""
    _, first = await take(client, shop, shop.a, "order")
    status, again = await take(client, shop, shop.a, "order")
    assert status == 201 and again["lock"] == first["lock"]


async def test_modify_lock_blocks_h5_pay_without_force(client, shop):
    """With A editing, a diner's pay is ORDER_LOCKED with the payer text and no force offered."""
    assert (await take(client, shop, shop.a, "order"))[0] == 201
    with pytest.raises(LockConflict) as denied:
        await services(client).engine.acquire(shop.store_id, shop.order_id, await h5_holder(client, shop), Kind.PAYMENT)
    assert denied.value.code == "ORDER_LOCKED" and denied.value.force_allowed is False
    assert denied.value.message == PAYER_ORDER_LOCKED
    # The engine carries the stored lock; the API edge shows it in the H5 form (api/routing.py).
    shown = views.h5_lock(denied.value.lock, None)
    assert shown["holder"] == {"role": "erp", "is_me": False} and "token" not in denied.value.lock


def test_h5_lock_view_is_idempotent():
    """The H5 form of a lock, put in the H5 form again, is unchanged (a denial may pass two edges)."""
    stored = {"order_id": "o1", "kind": "payment", "fence": 3, "token": "t", "payment_ref": "p", "amount_cents": 5,
              "holder": {"role": "h5", "session_id": "s1"}}
    once = views.h5_lock(stored, "s1")
    assert once["holder"] == {"role": "h5", "is_me": True} and "token" not in once and "payment_ref" not in once
    assert views.h5_lock(once, "s1") == once and views.h5_lock(once, "s2") == once
    assert views.h5_lock(views.h5_lock(stored, "s2"), "s1")["holder"] == {"role": "h5", "is_me": False}


async def test_h5_may_not_force_or_take_edit_locks(client, shop):
    """An H5 session asking with force, or for an order or presettle lock, is 403 FORBIDDEN."""
    engine, h5 = services(client).engine, await h5_holder(client, shop)
    with pytest.raises(Forbidden):
        await engine.acquire(shop.store_id, shop.order_id, h5, Kind.PAYMENT, force=True)
    for kind in (Kind.ORDER, Kind.PRESETTLE):
        with pytest.raises(Forbidden):
            await engine.acquire(shop.store_id, shop.order_id, h5, kind)
    assert await locks_of(client, shop, shop.a) == []


async def test_erp_pay_against_an_editor_offers_force_with_the_confirm_text(client, shop):
    """B paying while A edits is 409 ORDER_LOCKED with force_allowed and the force-confirm text."""
    _, a_lock = await take(client, shop, shop.a, "order")
    status, data = await take(client, shop, shop.b, "payment")
    assert status == 409
    err = error(data)
    assert (err["code"], err["force_allowed"], err["message"]) == ("ORDER_LOCKED", True, FORCE_ORDER)
    assert err["lock"]["fence"] == a_lock["lock"]["fence"] and "token" not in err["lock"]
    assert err["lock"]["holder"] == {"role": "erp", "terminal_id": shop.a_id, "name": "收银台", "online": False}


async def test_erp_force_breaks_the_other_lock_and_grants(client, shop):
    """B forcing pay gets 201; A's order lock is gone and A's token no longer renews."""
    _, a_lock = await take(client, shop, shop.a, "order")
    forced_before = metrics.FORCED.labels("order")._value.get()
    status, data = await take(client, shop, shop.b, "payment", force=True)
    assert status == 201 and data["lock"]["holder"]["terminal_id"] == shop.b_id
    assert data["lock"]["fence"] > a_lock["lock"]["fence"]
    assert [(l["kind"], l["holder"]["terminal_id"]) for l in await locks_of(client, shop, shop.a)] == [
        ("payment", shop.b_id)]
    status, err = await call(client, "POST", order_url(shop, suffix="/locks/order/renew"), shop.a,
                             {"token": a_lock["lock"]["token"]})
    assert status == 409 and error(err)["code"] == "LOCK_LOST"
    assert metrics.FORCED.labels("order")._value.get() == forced_before + 1


async def test_erp_pay_against_an_h5_payment_offers_force_with_the_double_pay_text(client, shop):
    """A terminal paying while a diner pays is PAYMENT_LOCKED with the duplicate-payment warning."""
    await services(client).engine.acquire(shop.store_id, shop.order_id, await h5_holder(client, shop), Kind.PAYMENT)
    status, data = await take(client, shop, shop.a, "payment")
    err = error(data)
    assert (status, err["code"], err["force_allowed"], err["message"]) == (409, "PAYMENT_LOCKED", True, FORCE_PAYMENT)
    assert err["lock"]["holder"]["role"] == "h5"


async def test_own_order_lock_converts_to_payment(client, shop):
    """A terminal holding the order lock takes payment: the order lock ends in the same step."""
    _, order_lock = await take(client, shop, shop.a, "order")
    status, data = await take(client, shop, shop.a, "payment")
    assert status == 201 and data["lock"]["fence"] > order_lock["lock"]["fence"]
    assert [l["kind"] for l in await locks_of(client, shop, shop.b)] == ["payment"]
    status, _ = await call(client, "POST", order_url(shop, suffix="/locks/order/renew"), shop.a,
                           {"token": order_lock["lock"]["token"]})
    assert status == 409


async def test_own_order_lock_converts_to_presettle(client, shop):
    """A terminal holding the order lock prints the bill: presettle replaces its order lock."""
    await take(client, shop, shop.a, "order")
    assert (await take(client, shop, shop.a, "presettle"))[0] == 201
    assert [l["kind"] for l in await locks_of(client, shop, shop.b)] == ["presettle"]


async def test_presettle_and_payment_coexist(client, shop):
    """A payment lock may be taken while the bill is presettled; both stay live."""
    assert (await take(client, shop, shop.a, "presettle"))[0] == 201
    assert (await take(client, shop, shop.b, "payment"))[0] == 201
    assert sorted(l["kind"] for l in await locks_of(client, shop, shop.a)) == ["payment", "presettle"]


async def test_presettle_blocks_modify_for_everyone(client, shop):
    """Under a presettle lock even its holder cannot take the order lock: PRESETTLED."""
    await take(client, shop, shop.a, "presettle")
    for token in (shop.a, shop.b):
        status, data = await take(client, shop, token, "order")
        assert status == 409 and error(data)["code"] == "PRESETTLED"


async def test_expected_version_older_than_known_is_stale_with_latest_order(client, shop):
    """pay with an expected_version older than the stored order is STALE_VERSION with that order."""
    await call(client, "PUT", order_url(shop), shop.a, order_body(version=2))
    status, data = await take(client, shop, shop.b, "payment", expected_version=1)
    assert status == 409 and error(data)["code"] == "STALE_VERSION"
    assert error(data)["order"]["version"] == 2
    assert await locks_of(client, shop, shop.a) == []
    status, data = await take(client, shop, shop.b, "payment", expected_version=2)
    assert status == 201 and data["lock"]["version"] == 2


async def test_lock_request_body_is_validated(client, shop):
    """An unknown kind or a zero expected_version is 400 with details."""
    for body in ({"kind": "table"}, {"kind": "payment", "expected_version": 0}, {}):
        status, data = await call(client, "POST", order_url(shop, suffix="/locks"), shop.a, body)
        assert status == 400 and error(data)["details"]


class TestWithoutSweeper:
    """An app built without its expiry sweeper: only the scripts' own expiry checks are left."""

    @pytest.fixture
    async def client(self, aiohttp_client, settings):
        """A test client of the coordinator app built without its sweeper."""
        return await aiohttp_client(build_app(settings, sweeper=False))

    async def test_expired_lock_never_blocks(self, client, shop):
        """A diner's 1 s payment lock stops blocking the moment it expires, though no sweeper ran."""
        await patch_config(client, shop, h5_payment_lock_seconds=1)
        lock, _ = await services(client).engine.acquire(
            shop.store_id, shop.order_id, await h5_holder(client, shop), Kind.PAYMENT)
        assert lock["expires_at"] - lock["acquired_at"] == 1000
        assert (await take(client, shop, shop.a, "payment"))[0] == 409
        await asyncio.sleep(1.1)
        status, data = await take(client, shop, shop.a, "payment")
        assert status == 201 and data["lock"]["fence"] > lock["fence"]


# --- renew and release --------------------------------------------------------------------


async def test_renew_extends_the_lock(client, shop):
    """Renewing with the token moves expires_at to now + the kind's duration."""
    _, grant = await take(client, shop, shop.a, "order")
    await asyncio.sleep(0.05)
    status, data = await call(client, "POST", order_url(shop, suffix="/locks/order/renew"), shop.a,
                              {"token": grant["lock"]["token"]})
    assert status == 200
    assert data["lock"]["expires_at"] > grant["lock"]["expires_at"]
    assert data["lock"]["fence"] == grant["lock"]["fence"] and data["lock"]["token"] == grant["lock"]["token"]


async def test_renew_with_a_wrong_token_or_kind_is_lock_lost(client, shop):
    """Renewing with a token that holds nothing is 409 LOCK_LOST with the text of the kind renewed (issue 17)."""
    _, grant = await take(client, shop, shop.a, "order")
    for kind, token, text in (("order", "not-the-token", "编辑已超时或已被其他终端接管,请重新获取订单后再修改"),
                              ("payment", grant["lock"]["token"], "支付已超时或已被其他终端接管,请重新获取订单后再支付")):
        status, data = await call(client, "POST", order_url(shop, suffix=f"/locks/{kind}/renew"), shop.a,
                                  {"token": token})
        assert status == 409 and error(data)["code"] == "LOCK_LOST"
        assert error(data)["message"] == text


async def test_release_frees_the_lock_once(client, shop):
    """Release with the token frees the lock (released true); again, or with a wrong token, is false."""
    _, grant = await take(client, shop, shop.a, "order")
    release = order_url(shop, suffix="/locks/order/release")
    assert await call(client, "POST", release, shop.a, {"token": "wrong"}) == (200, {"released": False})
    assert await call(client, "POST", release, shop.a, {"token": grant["lock"]["token"]}) == (200, {"released": True})
    assert await call(client, "POST", release, shop.a, {"token": grant["lock"]["token"]}) == (200, {"released": False})
    assert (await take(client, shop, shop.b, "order"))[0] == 201


async def test_renew_and_release_need_a_token(client, shop):
    """A renew or release body without a token is 400."""
    for op in ("renew", "release"):
        status, data = await call(client, "POST", order_url(shop, suffix=f"/locks/order/{op}"), shop.a, {})
        assert status == 400 and error(data)["details"][0]["loc"] == ["token"]


# --- check --------------------------------------------------------------------------------


async def test_check_on_a_free_order_allows_everything(client, shop):
    """With no locks every action is allowed, with code and message null."""
    for action in ("add_items", "accept_items", "modify", "presettle", "pay"):
        status, data = await call(client, "POST", order_url(shop, suffix="/check"), shop.a, {"action": action})
        assert (status, data) == (200, {"allowed": True, "code": None, "message": None, "message_en": None,
                                        "force_allowed": False})


async def test_check_during_payment_refuses_dishes_with_the_accept_text(client, shop):
    """Under a payment lock adding or accepting dishes is PAYMENT_LOCKED with the cancel-payment text."""
    await services(client).engine.acquire(shop.store_id, shop.order_id, await h5_holder(client, shop), Kind.PAYMENT)
    for action in ("add_items", "accept_items"):
        status, data = await call(client, "POST", order_url(shop, suffix="/check"), shop.a, {"action": action})
        assert status == 200
        assert (data["allowed"], data["code"], data["message"], data["force_allowed"]) == (
            False, "PAYMENT_LOCKED", ACCEPT_PAYMENT, False)
        assert data["message_en"]


async def test_check_pay_during_payment_offers_force(client, shop):
    """Checking pay under another's payment lock says PAYMENT_LOCKED with the force-confirm text."""
    await take(client, shop, shop.b, "payment")
    _, data = await call(client, "POST", order_url(shop, suffix="/check"), shop.a, {"action": "pay"})
    assert (data["allowed"], data["code"], data["message"], data["force_allowed"]) == (
        False, "PAYMENT_LOCKED", FORCE_PAYMENT, True)


async def test_check_changes_nothing_and_respects_own_locks(client, shop):
    """A check never takes a lock; the order-lock holder may add dishes and pay, others may not modify."""
    await take(client, shop, shop.a, "order")
    check = order_url(shop, suffix="/check")
    assert (await call(client, "POST", check, shop.a, {"action": "pay"}))[1]["allowed"] is True
    assert (await call(client, "POST", check, shop.b, {"action": "add_items"}))[1]["allowed"] is True
    _, data = await call(client, "POST", check, shop.b, {"action": "modify"})
    assert (data["code"], data["message"], data["force_allowed"]) == ("ORDER_LOCKED", FORCE_ORDER, True)
    assert [l["kind"] for l in await locks_of(client, shop, shop.a)] == ["order"]


async def test_check_of_a_presettled_order_and_a_bad_action(client, shop):
    """Under presettle dishes are PRESETTLED; an unknown action is 400."""
    await take(client, shop, shop.a, "presettle")
    _, data = await call(client, "POST", order_url(shop, suffix="/check"), shop.b, {"action": "add_items"})
    assert (data["code"], data["message"]) == ("PRESETTLED", "订单已预结,如需修改请联系服务员")
    status, _ = await call(client, "POST", order_url(shop, suffix="/check"), shop.b, {"action": "dance"})
    assert status == 400


# --- payments -----------------------------------------------------------------------------


async def test_payment_completion_marks_paid_and_closes_the_order(client, shop):
    """Completing with the lock's token, version and total marks paid, frees the locks, closes the order."""
    _, grant = await take(client, shop, shop.a, "payment")
    status, data = await pay(client, shop, shop.a, grant["lock"]["token"])
    assert status == 200 and data["order"]["status"] == "paid" and data["order"]["total_cents"] == 3800
    assert await locks_of(client, shop, shop.b) == []
    status, data = await take(client, shop, shop.b, "order")
    assert status == 409 and error(data)["code"] == "ORDER_CLOSED"
    status, data = await take(client, shop, shop.a, "payment")
    assert status == 409 and error(data)["code"] == "ORDER_CLOSED"


async def test_payment_completion_is_idempotent_on_payment_ref(client, shop):
    """Replaying a completion with the same payment_ref returns the paid order; another ref is ORDER_CLOSED."""
    _, grant = await take(client, shop, shop.a, "payment")
    _, first = await pay(client, shop, shop.a, grant["lock"]["token"], ref="ref-7")
    status, again = await pay(client, shop, shop.a, grant["lock"]["token"], ref="ref-7")
    assert (status, again) == (200, first)
    status, data = await pay(client, shop, shop.a, grant["lock"]["token"], ref="ref-8")
    assert status == 409 and error(data)["code"] == "ORDER_CLOSED"


async def test_payment_with_a_forced_away_token_is_lock_lost(client, shop):
    """A's completion after B forced the payment lock away is LOCK_LOST and the order stays open."""
    _, a = await take(client, shop, shop.a, "payment")
    await take(client, shop, shop.b, "payment", force=True)
    status, data = await pay(client, shop, shop.a, a["lock"]["token"])
    assert status == 409 and error(data)["code"] == "LOCK_LOST"
    assert (await call(client, "GET", order_url(shop), shop.a))[1]["order"]["status"] == "open"


async def test_payment_with_a_released_or_made_up_token_is_lock_lost(client, shop):
    """A completion with a released lock's token, or a token nobody holds, is LOCK_LOST."""
    _, a = await take(client, shop, shop.a, "payment")
    assert (await pay(client, shop, shop.a, "made-up"))[1]["error"]["code"] == "LOCK_LOST"
    await call(client, "POST", order_url(shop, suffix="/locks/payment/release"), shop.a, {"token": a["lock"]["token"]})
    status, data = await pay(client, shop, shop.a, a["lock"]["token"])
    assert status == 409 and error(data)["code"] == "LOCK_LOST"


async def test_payment_with_a_foreign_token_is_lock_lost(client, shop):
    """A terminal presenting the live lock token of another holder (a diner's) is refused LOCK_LOST."""
    h5_lock, _ = await services(client).engine.acquire(
        shop.store_id, shop.order_id, await h5_holder(client, shop), Kind.PAYMENT)
    status, data = await pay(client, shop, shop.a, h5_lock["token"])
    assert status == 409 and error(data)["code"] == "LOCK_LOST"
    _, b = await take(client, shop, shop.b, "payment", force=True)
    status, data = await pay(client, shop, shop.a, b["lock"]["token"])
    assert status == 409 and error(data)["code"] == "LOCK_LOST"


async def test_payment_with_a_wrong_version_is_stale(client, shop):
    """A completion naming another version than the lock's is STALE_VERSION with the order."""
    _, a = await take(client, shop, shop.a, "payment")
    status, data = await pay(client, shop, shop.a, a["lock"]["token"], version=2)
    assert status == 409 and error(data)["code"] == "STALE_VERSION" and error(data)["order"]["version"] == 1


async def test_payment_with_a_wrong_amount_is_refused(client, shop):
    """A completion whose amount differs from the total is AMOUNT_MISMATCH; the lock stays usable."""
    _, a = await take(client, shop, shop.a, "payment")
    for amount in (3799, 3801):
        status, data = await pay(client, shop, shop.a, a["lock"]["token"], amount=amount)
        assert status == 409 and error(data)["code"] == "AMOUNT_MISMATCH"
        assert error(data)["order"]["total_cents"] == 3800
    assert (await pay(client, shop, shop.a, a["lock"]["token"]))[0] == 200


async def test_payment_bound_to_an_older_version_cannot_complete(client, shop):
    """After the ERP pushes a newer version, a payment lock bound to the old one completes with neither."""
    _, a = await take(client, shop, shop.a, "payment")
    body = order_body(version=2, items=[{"line_id": "l1", "sku": "tea", "name": "茶", "qty": 1,
                                         "unit_price_cents": 900, "source": "erp"}])
    assert (await call(client, "PUT", order_url(shop), shop.b, body))[0] == 200
    for version, amount in ((1, 3800), (2, 900)):
        status, data = await pay(client, shop, shop.a, a["lock"]["token"], version=version, amount=amount)
        assert status == 409 and error(data)["code"] == "STALE_VERSION"
        assert error(data)["order"]["version"] == 2


async def test_payment_body_is_validated(client, shop):
    """A completion with a negative amount or no payment_ref is 400 with details."""
    body = {"token": "t", "amount_cents": -1, "version": 1}
    status, data = await call(client, "POST", order_url(shop, suffix="/payments"), shop.a, body)
    locs = [d["loc"] for d in error(data)["details"]]
    assert status == 400 and ["amount_cents"] in locs and ["payment_ref"] in locs


# --- legacy mode --------------------------------------------------------------------------


async def test_legacy_mode_grants_unenforced_and_stores_nothing(client, shop):
    """With strong_link_enabled false, conflicting grants all succeed unenforced and no lock is kept."""
    await patch_config(client, shop, strong_link_enabled=False)
    fences = []
    for token, kind in ((shop.a, "order"), (shop.b, "order"), (shop.b, "payment"), (shop.a, "payment")):
        status, data = await take(client, shop, token, kind)
        assert status == 201 and data["enforced"] is False and data["lock"]["token"]
        fences.append(data["lock"]["fence"])
    assert fences == sorted(set(fences))
    assert await locks_of(client, shop, shop.a) == []
    assert (await call(client, "GET", f"/api/v1/stores/{shop.store_id}/locks", shop.a))[1] == {"locks": []}
    for action in ("add_items", "modify", "pay"):
        _, data = await call(client, "POST", order_url(shop, suffix="/check"), shop.b, {"action": action})
        assert data["allowed"] is True


async def test_legacy_mode_payment_completes_without_a_stored_lock(client, shop):
    """In legacy mode a terminal's completion is accepted on version and amount alone."""
    await patch_config(client, shop, strong_link_enabled=False)
    _, grant = await take(client, shop, shop.a, "payment")
    status, data = await pay(client, shop, shop.a, grant["lock"]["token"], amount=1)
    assert status == 409 and error(data)["code"] == "AMOUNT_MISMATCH"
    status, data = await pay(client, shop, shop.a, grant["lock"]["token"])
    assert status == 200 and data["order"]["status"] == "paid"


async def test_switching_legacy_mode_back_on_enforces_again(client, shop):
    """Locks taken after strong_link_enabled is switched back on are enforced again."""
    await patch_config(client, shop, strong_link_enabled=False)
    await patch_config(client, shop, strong_link_enabled=True)
    assert (await take(client, shop, shop.a, "order"))[1]["enforced"] is True
    assert (await take(client, shop, shop.b, "order"))[0] == 409


# --- metrics ------------------------------------------------------------------------------


async def test_lock_operations_are_counted_for_metrics(client, shop):
    """Grants and denials show up in the lock-op and conflict counters served at /metrics."""
    ok = metrics.LOCK_OPS.labels("order", "acquire", "ok")
    denied = metrics.CONFLICTS.labels("ORDER_LOCKED")
    ok_before, denied_before = ok._value.get(), denied._value.get()
    await take(client, shop, shop.a, "order")
    await take(client, shop, shop.b, "order")
    assert ok._value.get() == ok_before + 1 and denied._value.get() == denied_before + 1
    text = await (await client.get("/metrics")).text()
    assert 'tablelock_lock_conflicts_total{code="ORDER_LOCKED"}' in text
