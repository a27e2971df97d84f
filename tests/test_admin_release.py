"""An admin ends stuck locks (SPEC §11): one lock from the board, or every lock of a table, with
lock.released {reason: "admin"}, the admin's reason in the audit log, and the holder told."""

from __future__ import annotations

import json

from coordinator.core.models import OrderIn
from coordinator.core.rules import Kind
from coordinator.core.shares import ShareKind, ShareSpec
from coordinator.store import keys
from coordinator.store.share_book import ShareBook
from tests.support.app import ADMIN_TOKEN, Shop, bearer, order_body, post, services
from tests.support.ws_socket import open_socket

ADMIN = bearer(ADMIN_TOKEN)


def terminal(shop: Shop, which: str) -> dict:
    """The holder dict of terminal A or B."""
    return {"role": "erp", "terminal_id": getattr(shop, f"{which}_id"), "name": "收银台" if which == "a" else "服务员B"}


async def mark_completing(redis, store_id: str, order_id: str, now: int) -> None:
    """Mark the order's payment lock completing as pay_capture.lua does when a provider's money arrives."""
    lock = json.loads(await redis.hget(keys.locks(store_id, order_id), "pay"))
    lock.update(completing=True, phase="completing", payment_ref="wechatpay:tx-1", amount_cents=3800,
                expires_at=now + 365 * 86_400_000)
    await redis.hset(keys.locks(store_id, order_id), "pay", json.dumps(lock))


async def audit_names(client, shop: Shop) -> list[tuple[str, dict, dict]]:
    """(event name, data, actor) of every audit entry of the shop."""
    entries = await services(client).redis.xrange(keys.audit(shop.store_id))
    out = []
    for _, fields in entries:
        event = json.loads(fields[b"e"])
        out.append((event["name"], event["data"], json.loads(fields[b"actor"])))
    return out


async def test_admin_ends_one_lock_and_its_holder_is_told(client, shop):
    """The admin's release ends the terminal's order lock with reason admin and its note; the holder's socket gets it."""
    svc = services(client)
    lock, _ = await svc.engine.acquire(shop.store_id, "o1", terminal(shop, "b"), Kind.ORDER)
    sock, _, _ = await open_socket(client, f"/api/v1/ws?token={shop.b}")
    status, body = await post(client, f"/admin/stores/{shop.store_id}/orders/o1/locks/order/release", ADMIN,
                              {"reason": "平板没电了"})
    assert status == 200, body
    assert [l["fence"] for l in body["released"]] == [lock["fence"]] and body["kept"] == []
    event = await sock.event("lock.released")
    assert event["data"]["reason"] == "admin" and event["data"]["note"] == "平板没电了"
    assert event["data"]["lock"]["holder"]["terminal_id"] == shop.b_id and "token" not in event["data"]["lock"]
    assert await svc.engine.locks(shop.store_id) == []
    audited = [a for a in await audit_names(client, shop) if a[0] == "lock.released"]
    assert audited[-1][2] == {"role": "admin"} and audited[-1][1]["note"] == "平板没电了"
    await sock.ws.close()


async def test_admin_release_of_a_gone_lock_answers_nothing_released(client, shop):
    """Releasing a lock that is no longer held is 200 with empty lists and no event."""
    svc = services(client)
    before = await svc.engine.seq(shop.store_id)
    status, body = await post(client, f"/admin/stores/{shop.store_id}/orders/o1/locks/payment/release", ADMIN,
                              {"reason": "x"})
    assert (status, body) == (200, {"released": [], "kept": []})
    assert await svc.engine.seq(shop.store_id) == before


async def test_admin_release_only_ends_the_named_kind(client, shop):
    """Releasing the payment lock leaves the presettle lock of the same order in place."""
    svc = services(client)
    await svc.engine.acquire(shop.store_id, "o1", terminal(shop, "a"), Kind.PRESETTLE)
    await svc.engine.acquire(shop.store_id, "o1", terminal(shop, "b"), Kind.PAYMENT)
    status, body = await post(client, f"/admin/stores/{shop.store_id}/orders/o1/locks/payment/release", ADMIN,
                              {"reason": "stuck"})
    assert status == 200 and [l["kind"] for l in body["released"]] == ["payment"]
    assert [l["kind"] for l in await svc.engine.locks(shop.store_id)] == ["presettle"]


async def test_admin_releases_a_whole_table_and_keeps_a_completing_payment(client, shop):
    """The bulk table release ends every lock of the table's orders except a payment the ERP is confirming."""
    svc = services(client)
    engine = svc.engine
    await engine.put_order(shop.store_id, OrderIn.model_validate(order_body("o2")), terminal(shop, "a"))
    await engine.put_order(shop.store_id, OrderIn.model_validate(order_body("o3", table_id="T2")), terminal(shop, "a"))
    await engine.acquire(shop.store_id, "o1", terminal(shop, "b"), Kind.ORDER)
    diner = {"role": "h5", "session_id": "s1"}
    await engine.acquire(shop.store_id, "o2", diner, Kind.PAYMENT)
    await mark_completing(svc.redis, shop.store_id, "o2", await engine.now())
    other, _ = await engine.acquire(shop.store_id, "o3", terminal(shop, "b"), Kind.ORDER)
    status, body = await post(client, f"/admin/stores/{shop.store_id}/tables/T1/release", ADMIN,
                              {"reason": "设备死机"})
    assert status == 200, body
    assert [(l["order_id"], l["kind"]) for l in body["released"]] == [("o1", "order")]
    assert [(l["order_id"], l["completing"]) for l in body["kept"]] == [("o2", True)]
    left = {(l["order_id"], l["kind"]) for l in await engine.locks(shop.store_id)}
    assert left == {("o2", "payment"), ("o3", "order")} and other["table_id"] == "T2"


async def test_admin_release_needs_a_reason_and_the_admin(client, shop):
    """A blank reason is 400; a terminal cannot use the admin release."""
    status, body = await post(client, f"/admin/stores/{shop.store_id}/orders/o1/locks/order/release", ADMIN,
                              {"reason": "  "})
    assert status == 400 and body["error"]["code"] == "VALIDATION_ERROR"
    status, _ = await post(client, f"/admin/stores/{shop.store_id}/tables/T1/release", bearer(shop.a),
                           {"reason": "x"})
    assert status == 403


async def test_a_diner_holding_the_lock_is_told_it_is_theirs(client, shop):
    """An H5 holder's socket gets lock.released reason admin with is_me true and no ids."""
    svc = services(client)
    token, session_id, _ = svc.auth.new_session(shop.store_id, "T1", await svc.engine.now())
    await svc.engine.acquire(shop.store_id, "o1", {"role": "h5", "session_id": session_id}, Kind.PAYMENT)
    sock, _, _ = await open_socket(client, f"/api/v1/ws?token={token}")
    status, _ = await post(client, f"/admin/stores/{shop.store_id}/orders/o1/locks/payment/release", ADMIN,
                           {"reason": "顾客离开"})
    assert status == 200
    event = await sock.event("lock.released")
    assert event["data"]["reason"] == "admin" and event["data"]["lock"]["holder"] == {"role": "h5", "is_me": True}
    await sock.ws.close()


async def test_admin_ends_stuck_share_locks_one_or_all_and_keeps_a_completing_one(client, shop):
    """A diner's claimed split-bill share lock is ended by the admin (reason admin, its part free again): one by its fence, then the rest of the order's payment locks; a completing share stays."""
    svc = services(client)
    book = ShareBook(svc.engine)
    diners = [{"role": "h5", "session_id": f"s-{n}"} for n in ("stuck", "idle", "paying", "next")]
    amount = ShareSpec(ShareKind.AMOUNT, amount_cents=1000)
    stuck, _ = await book.claim(shop.store_id, "o1", diners[0], ShareSpec(ShareKind.LINES, line_ids=("l1",)))
    idle, _ = await book.claim(shop.store_id, "o1", diners[1], amount)
    paying, _ = await book.claim(shop.store_id, "o1", diners[2], amount)
    await book.pay(shop.store_id, "o1", diners[2], token=paying["token"], amount_cents=1000,
                   version=1, payment_ref="wechatpay:tx-9", mode="begin", window_ms=60_000)
    url = f"/admin/stores/{shop.store_id}/orders/o1/locks/payment/release"
    status, body = await post(client, url, ADMIN, {"reason": "顾客走了", "fence": stuck["fence"]})
    assert status == 200, body
    assert ([l["fence"] for l in body["released"]], body["kept"]) == ([stuck["fence"]], [])
    released = [a for a in await audit_names(client, shop) if a[0] == "lock.released"]
    assert released[-1][1]["reason"] == "admin" and released[-1][1]["lock"]["share"]["line_ids"] == ["l1"]
    assert sorted(l["fence"] for l in await svc.engine.locks(shop.store_id)) == sorted([idle["fence"], paying["fence"]])
    again, _ = await book.claim(shop.store_id, "o1", diners[3], ShareSpec(ShareKind.LINES, line_ids=("l1",)))
    assert again["share"]["amount_cents"] == stuck["share"]["amount_cents"]
    status, body = await post(client, url, ADMIN, {"reason": "都结束"})
    assert status == 200, body
    assert sorted(l["fence"] for l in body["released"]) == sorted([idle["fence"], again["fence"]])
    assert [l["fence"] for l in body["kept"]] == [paying["fence"]]
    assert [l["fence"] for l in await svc.engine.locks(shop.store_id)] == [paying["fence"]]
