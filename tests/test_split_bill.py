"""Split bill on a real Redis (single node and cluster): shares claimed, paid, frozen (SPEC §10, invariant 10).

The ERP's confirmation of an H5 share is played by the test (``begin`` then ``paid``): the RPC
and the provider flows are tested where they live.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest

from coordinator.core.errors import AmountMismatch, LockConflict, PaymentRefReused, SharePaid, ShareExceeds, ShareTaken
from coordinator.core.models import OrderIn
from coordinator.core.rules import Kind
from coordinator.core.shares import ShareKind, ShareSpec
from coordinator.store import keys
from coordinator.store.audit import reconcile
from coordinator.store.redis_conn import AnyRedis
from coordinator.store.share_book import ShareBook
from tests.support.app import make_engine, order_body

CASHIER = {"role": "erp", "terminal_id": "TA", "name": "收银台"}
WAITER = {"role": "erp", "terminal_id": "TB", "name": "服务员B"}
DINERS = [{"role": "h5", "session_id": f"d{i}"} for i in range(1, 5)]
ITEMS = [
    {"line_id": "l1", "sku": "tea", "name": "茶", "qty": 2, "unit_price_cents": 900, "source": "erp"},
    {"line_id": "l2", "sku": "fish", "name": "鱼", "qty": 1, "unit_price_cents": 6800, "source": "h5"},
    {"line_id": "l3", "sku": "rice", "name": "饭", "qty": 3, "unit_price_cents": 467, "source": "erp"},
]
TOTAL = 1800 + 6800 + 1401   # 10001: four equal parts of 2500, the last 2501


def lines(*ids: str) -> ShareSpec:
    """A share of the given lines."""
    return ShareSpec(ShareKind.LINES, line_ids=ids)


def part(n: int, k: int) -> ShareSpec:
    """Part k of n."""
    return ShareSpec(ShareKind.PARTS, parts=n, part=k)


REST = ShareSpec(ShareKind.REST)


@pytest.fixture
async def book(redis_client: AnyRedis, uid: str) -> ShareBook:
    """A ShareBook over a fresh engine, with store ``uid`` holding open order o1 (version 1, 100.01)."""
    engine = make_engine(redis_client)
    await engine.put_order(uid, OrderIn.model_validate(order_body(items=ITEMS)), CASHIER)
    return ShareBook(engine)


async def events(book: ShareBook, store_id: str) -> list[dict[str, Any]]:
    """Every event of the store so far."""
    return [json.loads(f[b"e"]) for _, f in await book.engine.redis.xrange(keys.events(store_id))]


async def pay_h5(book: ShareBook, store_id: str, diner: dict, lock: dict, ref: str) -> dict:
    """An H5 share captured: begin (completing), then the ERP's confirmation (paid)."""
    amount = lock["share"]["amount_cents"]
    await book.pay(store_id, "o1", diner, token=lock["token"], amount_cents=amount, version=lock["version"],
                   payment_ref=ref, mode="begin", window_ms=5000)
    return await book.pay(store_id, "o1", diner, token=lock["token"], amount_cents=amount,
                          version=lock["version"], payment_ref=ref, mode="paid")


async def test_four_parts_and_the_rest_at_once_pay_the_order_exactly_once(book, uid):
    """4 diners claim 4 equal parts while the cashier claims the rest, all at once: the total is paid exactly once."""
    async def claim(actor: dict, spec: ShareSpec) -> dict | None:
        try:
            return (await book.claim(uid, "o1", actor, spec))[0]
        except ShareExceeds:
            return None

    claims = [claim(d, part(4, k)) for k, d in enumerate(DINERS, 1)] + [claim(CASHIER, REST)]
    won = [lock for lock in await asyncio.gather(*claims) if lock is not None]
    assert sum(lock["share"]["amount_cents"] for lock in won) == TOTAL
    assert len({lock["fence"] for lock in won}) == len(won)

    async def pay(lock: dict) -> dict:
        if lock["holder"]["role"] == "erp":
            return await book.pay(uid, "o1", CASHIER, token=lock["token"], amount_cents=lock["share"]["amount_cents"],
                                  version=1, payment_ref=f"cash-{lock['fence']}", mode="self")
        return await pay_h5(book, uid, lock["holder"], lock, f"wx-{lock['fence']}")

    replies = await asyncio.gather(*map(pay, won))
    assert sum(1 for r in replies if r.get("order_paid")) == 1
    order, locks = await book.engine.get_order(uid, "o1")
    assert order["status"] == "paid" and order["paid_cents"] == TOTAL and locks == []
    assert sum(s["amount_cents"] for s in order["shares"]) == TOTAL
    names = [e["name"] for e in await events(book, uid)]
    assert names.count("order.paid") == 1 and names.count("share.paid") == len(won)


async def test_two_diners_claiming_the_same_dish_one_wins(book, uid):
    """Two diners claim the fish at the same moment: exactly one gets it, the other is told SHARE_TAKEN."""
    results = await asyncio.gather(*(book.claim(uid, "o1", d, lines("l2")) for d in DINERS[:2]),
                                   return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["ShareTaken", "tuple"]
    won = next(r for r in results if isinstance(r, tuple))[0]
    assert won["share"] == {"kind": "lines", "line_ids": ["l2"], "amount_cents": 6800}


async def test_a_failed_share_payment_frees_its_part(book, uid):
    """A share whose provider payment failed ends (payment_failed), and its part can be claimed again."""
    lock, _ = await book.claim(uid, "o1", DINERS[0], part(2, 1))
    with pytest.raises(ShareTaken):
        await book.claim(uid, "o1", DINERS[1], part(2, 1))
    assert await book.end(uid, "o1", DINERS[0], lock["token"], failed=True) is True
    again, _ = await book.claim(uid, "o1", DINERS[1], part(2, 1))
    assert again["share"]["amount_cents"] == 5000
    released = [e for e in await events(book, uid) if e["name"] == "lock.released"]
    assert released[-1]["data"]["reason"] == "payment_failed" and "token" not in released[-1]["data"]["lock"]


async def test_equal_parts_rounding_goes_to_the_last_part(book, uid):
    """100.01 in 3 parts is 33.33 + 33.33 + 33.35, and paying all three pays the order."""
    amounts = []
    for k, diner in enumerate(DINERS[:3], 1):
        lock, _ = await book.claim(uid, "o1", diner, part(3, k))
        amounts.append(lock["share"]["amount_cents"])
        await pay_h5(book, uid, diner, lock, f"wx-{k}")
    assert amounts == [3333, 3333, 3335]
    order, _ = await book.engine.get_order(uid, "o1")
    assert order["status"] == "paid" and order["paid_cents"] == TOTAL


async def test_shares_and_whole_order_payments_exclude_each_other(book, uid):
    """A live share blocks a whole-order payment lock, and a whole-order lock blocks any share."""
    lock, _ = await book.claim(uid, "o1", DINERS[0], lines("l1"))
    with pytest.raises(LockConflict) as denied:
        await book.engine.acquire(uid, "o1", CASHIER, Kind.PAYMENT)
    assert denied.value.code == "PAYMENT_LOCKED" and denied.value.lock["share"]["line_ids"] == ["l1"]
    await book.end(uid, "o1", DINERS[0], lock["token"])
    await book.engine.acquire(uid, "o1", CASHIER, Kind.PAYMENT)
    with pytest.raises(LockConflict) as denied:
        await book.claim(uid, "o1", DINERS[1], lines("l2"))
    assert denied.value.code == "PAYMENT_LOCKED" and not denied.value.force_allowed


async def test_an_order_lock_of_another_blocks_shares_and_presettle_allows_them(book, uid):
    """A waiter editing blocks a diner's share (ORDER_LOCKED); a printed bill (presettle) does not."""
    edit, _ = await book.engine.acquire(uid, "o1", WAITER, Kind.ORDER)
    with pytest.raises(LockConflict) as denied:
        await book.claim(uid, "o1", DINERS[0], lines("l1"))
    assert denied.value.code == "ORDER_LOCKED"
    await book.engine.release(uid, "o1", Kind.ORDER, edit["token"], WAITER)
    await book.engine.acquire(uid, "o1", WAITER, Kind.PRESETTLE)
    assert (await book.claim(uid, "o1", DINERS[0], lines("l1")))[0]["share"]["amount_cents"] == 1800


async def test_add_on_after_first_capture_raises_what_remains(book, uid):
    """After a share is paid, added dishes raise what remains; the cashier's whole payment takes exactly that."""
    lock, _ = await book.claim(uid, "o1", DINERS[0], lines("l2"))
    await pay_h5(book, uid, DINERS[0], lock, "wx-fish")
    beer = {"line_id": "l4", "sku": "beer", "name": "啤酒", "qty": 1, "unit_price_cents": 1500, "source": "h5"}
    stored, _ = await book.engine.put_order(uid, OrderIn.model_validate(order_body(version=2, items=ITEMS + [beer])),
                                            CASHIER)
    assert (stored["total_cents"], stored["paid_cents"]) == (TOTAL + 1500, 6800)
    pay, _ = await book.engine.acquire(uid, "o1", CASHIER, Kind.PAYMENT)
    reply = await book.engine.complete(uid, "o1", CASHIER, token=pay["token"], amount_cents=TOTAL + 1500 - 6800,
                                       version=2, payment_ref="cash-rest")
    assert reply["paid"] is True and reply["order"]["status"] == "paid"


async def test_a_reduction_below_what_is_paid_is_refused_and_a_forced_one_opens_a_refund_task(book, uid):
    """After a share is paid, dropping its dish is SHARE_PAID; the ERP's forced push is stored and opens a refund task."""
    lock, _ = await book.claim(uid, "o1", DINERS[0], lines("l2"))
    await pay_h5(book, uid, DINERS[0], lock, "wx-fish")
    without_fish = OrderIn.model_validate(order_body(version=2, items=[ITEMS[0], ITEMS[2]]))
    with pytest.raises(SharePaid) as refused:
        await book.engine.put_order(uid, without_fish, CASHIER)
    assert refused.value.status == 409 and refused.value.order["version"] == 1
    cheaper_fish = [ITEMS[0], ITEMS[1] | {"unit_price_cents": 6000}, ITEMS[2]]
    with pytest.raises(SharePaid):
        await book.engine.put_order(uid, OrderIn.model_validate(order_body(version=2, items=cheaper_fish)), CASHIER)
    stored, changed = await book.engine.put_order(uid, without_fish, CASHIER, force=True)
    assert changed and stored["version"] == 2 and stored["paid_cents"] == 6800
    due = [e for e in await events(book, uid) if e["name"] == "share.refund_due"]
    assert [(d["data"]["lines"], d["data"]["refund_cents"]) for d in due] == [(["l2"], 6800 - 3201)]
    cases = await reconcile(book.engine.redis, uid, 0, 2**50)
    assert [c.reasons for c in cases] == [["share_refund_due"]]


async def test_a_change_that_keeps_paid_lines_and_total_is_allowed(book, uid):
    """After a share is paid, changing an unpaid line (total still above what is paid) needs no force."""
    lock, _ = await book.claim(uid, "o1", DINERS[0], lines("l1"))
    await pay_h5(book, uid, DINERS[0], lock, "wx-tea")
    fewer_rice = [ITEMS[0], ITEMS[1], ITEMS[2] | {"qty": 1}]
    stored, _ = await book.engine.put_order(uid, OrderIn.model_validate(order_body(version=2, items=fewer_rice)),
                                            CASHIER)
    assert stored["paid_cents"] == 1800 and stored["shares"][0]["line_ids"] == ["l1"]
    rest, _ = await book.claim(uid, "o1", CASHIER, REST)
    assert rest["share"]["amount_cents"] == 1800 + 6800 + 467 - 1800


async def test_share_capture_is_checked_and_idempotent(book, uid):
    """A capture with a wrong amount is AMOUNT_MISMATCH; a repeated payment_ref is answered as a replay."""
    lock, _ = await book.claim(uid, "o1", CASHIER, lines("l1"))
    with pytest.raises(AmountMismatch):
        await book.pay(uid, "o1", CASHIER, token=lock["token"], amount_cents=1799, version=1,
                       payment_ref="c1", mode="self")
    first = await book.pay(uid, "o1", CASHIER, token=lock["token"], amount_cents=1800, version=1,
                           payment_ref="c1", mode="self")
    again = await book.pay(uid, "o1", CASHIER, token=lock["token"], amount_cents=1800, version=1,
                           payment_ref="c1", mode="self")
    assert first["order"]["paid_cents"] == 1800 and again["replay"] is True


async def test_random_concurrent_splits_never_overlap_nor_exceed_the_total(book, uid, redis_client):
    """Invariant 10 over randomized concurrent histories: claims, captures and cancels race; shares never overlap or pass the total."""
    rng = random.Random(1013)
    specs = [lines("l1"), lines("l2"), lines("l3"), lines("l1", "l3"), part(3, 1), part(3, 2), part(3, 3),
             part(2, 1), ShareSpec(ShareKind.AMOUNT, amount_cents=1234), ShareSpec(ShareKind.AMOUNT, amount_cents=4000), REST]
    outcomes = set()
    for round_ in range(12):
        order_id = f"o{round_}"
        await book.engine.put_order(uid, OrderIn.model_validate(order_body(order_id=order_id, items=ITEMS)), CASHIER)
        actors = [{"role": "h5", "session_id": f"r{round_}-{i}"} for i in range(6)] + [CASHIER]

        async def payer(actor: dict) -> None:
            for step in range(3):
                try:
                    lock, _ = await book.claim(uid, order_id, actor, rng.choice(specs))
                except (ShareTaken, ShareExceeds, LockConflict):
                    continue
                except Exception as e:  # noqa: BLE001 - VALIDATION_ERROR / ORDER_CLOSED are fine outcomes
                    if getattr(e, "code", None) in ("VALIDATION_ERROR", "ORDER_CLOSED"):
                        return
                    raise
                await asyncio.sleep(rng.random() / 100)
                if rng.random() < 0.3:
                    await book.end(uid, order_id, actor, lock["token"], failed=rng.random() < 0.5)
                    continue
                try:
                    await book.pay(uid, order_id, actor, token=lock["token"], amount_cents=lock["share"]["amount_cents"],
                                   version=1, payment_ref=f"{order_id}-{actor.get('session_id', 'cash')}-{step}", mode="self")
                except Exception as e:  # noqa: BLE001
                    if getattr(e, "code", None) not in ("ORDER_CLOSED", "LOCK_LOST"):
                        raise

        await asyncio.gather(*map(payer, actors))
        order, locks = await book.engine.get_order(uid, order_id)
        shares = order.get("shares", [])
        assert sum(s["amount_cents"] for s in shares) == order.get("paid_cents", 0) <= TOTAL
        paid_lines = [l for s in shares for l in s.get("line_ids", [])]
        assert len(paid_lines) == len(set(paid_lines))
        paid_parts = [(s["parts"], s["part"]) for s in shares if s["kind"] == "parts"]
        assert len(paid_parts) == len(set(paid_parts)) and len({n for n, _ in paid_parts}) <= 1
        assert (order["status"] == "paid") == (order.get("paid_cents", 0) == TOTAL)
        claimed = sum(l["share"]["amount_cents"] for l in locks if l.get("share"))
        assert order.get("paid_cents", 0) + claimed <= TOTAL
        paid_events = [e for e in await events(book, uid) if e["name"] == "order.paid" and e["order_id"] == order_id]
        assert len(paid_events) == (1 if order["status"] == "paid" else 0)
        outcomes.add("paid" if order["status"] == "paid" else "partly" if shares else "unpaid")
    assert outcomes >= {"paid", "partly"}  # the histories reach both ends, or the checks above prove little


async def test_a_lapsed_share_claim_expires_once_and_frees_its_part(book, uid):
    """A diner's share claim past its 1 s expiry ends by the sweeper's expire (lock.expired once), and its part is free."""
    await book.engine.redis.hset(keys.config(uid), "h5_payment_lock_seconds", "1")
    lock, _ = await book.claim(uid, "o1", DINERS[0], part(2, 2))
    assert await book.engine.redis.zscore(keys.active(uid), "o1") == lock["expires_at"]
    await asyncio.sleep(1.1)
    assert await book.engine.expire(uid, "o1") == -1
    assert await book.engine.expire(uid, "o1") == -1
    expired = [e for e in await events(book, uid) if e["name"] == "lock.expired"]
    assert [e["data"]["lock"]["fence"] for e in expired] == [lock["fence"]]
    assert (await book.claim(uid, "o1", DINERS[1], part(2, 2)))[0]["share"]["amount_cents"] == 5001


async def test_a_payment_ref_pays_one_order_only(book, uid):
    """A share paid with a payment_ref another order of the store already used is refused PAYMENT_REF_REUSED."""
    await book.engine.put_order(uid, OrderIn.model_validate(order_body(order_id="o2", items=ITEMS)), CASHIER)
    first, _ = await book.claim(uid, "o1", CASHIER, lines("l1"))
    await book.pay(uid, "o1", CASHIER, token=first["token"], amount_cents=1800, version=1, payment_ref="till-7", mode="self")
    other, _ = await book.claim(uid, "o2", CASHIER, lines("l1"))
    with pytest.raises(PaymentRefReused):
        await book.pay(uid, "o2", CASHIER, token=other["token"], amount_cents=1800, version=1,
                       payment_ref="till-7", mode="self")
    order, _ = await book.engine.get_order(uid, "o2")
    assert "paid_cents" not in order
