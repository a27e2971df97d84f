"""Split-bill endpoints over real HTTP (SPEC §10): the ERP's share endpoints, the forced PUT, and
``POST /h5/checkout`` with a share against the ERP simulator's master terminal.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from coordinator.app import build_app
from h5_client.client import H5Error
from tests.support.app import bearer, order_body
from tests.support.restaurant import FIRST_TOTAL, Restaurant


async def call(client, method: str, url: str, token: str, body: Any = None) -> tuple[int, Any]:
    """One request with ``token``; (status, JSON)."""
    resp = await client.request(method, url, json=body, headers=bearer(token))
    return resp.status, await resp.json()


def url(shop, suffix: str = "") -> str:
    """The URL of o1, with ``suffix``."""
    return f"/api/v1/stores/{shop.store_id}/orders/o1{suffix}"


async def test_cashier_takes_the_rest_pays_it_and_a_reduction_needs_force(client, shop):
    """A diner's share is held while the cashier takes and pays the rest; then lowering the total is 409 unless forced."""
    engine_share = {"share": {"lines": ["l2"]}}
    status, diner = await call(client, "POST", url(shop, "/shares"), shop.b, engine_share)
    assert status == 201 and diner["lock"]["share"] == {"kind": "lines", "line_ids": ["l2"], "amount_cents": 2000}
    status, rest = await call(client, "POST", url(shop, "/shares"), shop.a, {"share": {"rest": True}})
    assert status == 201 and rest["lock"]["share"]["amount_cents"] == 3800 - 2000
    status, data = await call(client, "POST", url(shop, "/shares"), shop.a, {"share": {"parts": 2, "part": 1}})
    assert status == 201 and data["lock"]["fence"] == rest["lock"]["fence"]  # one live share per payer: its own back
    pay = {"token": rest["lock"]["token"], "amount_cents": 1800, "version": 1, "payment_ref": "cash-1"}
    status, paid = await call(client, "POST", url(shop, "/shares/payments"), shop.a, pay)
    assert status == 200 and paid["order"]["paid_cents"] == 1800 and paid["order"]["status"] == "open"
    assert paid["order"]["shares"][0]["kind"] == "rest" and "holder" not in paid["order"]["shares"][0]
    session = await client.post("/api/v1/h5/sessions", json={"qr_token": shop.qr})
    h5_token = (await session.json())["session_token"]
    status, table = await call(client, "GET", "/api/v1/h5/table", h5_token)
    assert status == 200 and table["order"]["paid_cents"] == 1800
    assert table["order"]["shares"] == [{"kind": "rest", "amount_cents": 1800, "fence": rest["lock"]["fence"],
                                         "paid_at": table["order"]["shares"][0]["paid_at"]}]
    status, released = await call(client, "POST", url(shop, "/shares/release"), shop.b, {"token": diner["lock"]["token"]})
    assert (status, released) == (200, {"released": True})

    cheaper = order_body(version=2, items=[{"line_id": "l1", "sku": "tea", "name": "茶", "qty": 1,
                                            "unit_price_cents": 900, "source": "erp"}])
    status, refused = await call(client, "PUT", url(shop), shop.a, cheaper)
    assert status == 409 and refused["error"]["code"] == "SHARE_PAID"
    status, forced = await call(client, "PUT", url(shop) + "?force=true", shop.a, cheaper)
    assert status == 200 and forced["order"]["version"] == 2 and forced["order"]["paid_cents"] == 1800


@pytest.mark.parametrize("body", [
    {"share": {}}, {"share": {"lines": ["l1"], "rest": True}}, {"share": {"parts": 3}},
    {"share": {"parts": 3, "part": 4}}, {"share": {"rest": False}}, {"share": {"amount_cents": 0}},
], ids=["empty", "two-forms", "parts-without-part", "part-above-parts", "rest-false", "amount-zero"])
async def test_malformed_shares_are_400(client, shop, body):
    """A share that is not exactly one well-formed choice is 400 VALIDATION_ERROR."""
    status, data = await call(client, "POST", url(shop, "/shares"), shop.a, body)
    assert status == 400 and data["error"]["code"] == "VALIDATION_ERROR"


@pytest.fixture
async def coordinator_url(aiohttp_server, settings) -> str:
    """The coordinator on a real port (the simulator's terminals connect to it)."""
    settings = settings.model_copy(update={"session_rate_per_minute": 100_000, "h5_rate_per_minute": 100_000})
    server = await aiohttp_server(build_app(settings))
    return str(server.make_url("")).rstrip("/")


async def test_two_diners_pick_the_same_dish_over_http_one_wins(restaurant: Restaurant):
    """Two phones check out the same dish at once: one holds it, the other gets 409 SHARE_TAKEN."""
    line = restaurant.erp_order()["items"][1]["line_id"]
    phones = [await restaurant.diner(), await restaurant.diner()]
    results = await asyncio.gather(*(p.checkout({"lines": [line]}) for p in phones), return_exceptions=True)
    errors = [r for r in results if isinstance(r, H5Error)]
    grants = [r for r in results if isinstance(r, dict)]
    assert len(grants) == 1 and len(errors) == 1 and errors[0].code == "SHARE_TAKEN"
    assert grants[0]["lock"]["share"]["amount_cents"] == 6800 and grants[0]["lock"]["token"]
    loser = phones[[isinstance(r, H5Error) for r in results].index(True)]
    view = await loser.table()
    share_lock = next(l for l in view["locks"] if l.get("share"))
    assert share_lock["holder"] == {"role": "h5", "is_me": False} and "token" not in share_lock


async def test_aa_parts_from_phones_and_cancel_frees_a_part(restaurant: Restaurant):
    """Diners split AA 3 ways: each part is its own lock; cancelling one frees it for another phone."""
    phones = [await restaurant.diner() for _ in range(3)]
    grants = [await p.checkout({"parts": 3, "part": k}) for k, p in enumerate(phones, 1)]
    assert sum(g["lock"]["share"]["amount_cents"] for g in grants) == FIRST_TOTAL
    assert await phones[0].cancel(grants[0]["lock"]["token"]) is True
    again = await (await restaurant.diner()).checkout({"parts": 3, "part": 1})
    assert again["lock"]["share"]["amount_cents"] == FIRST_TOTAL // 3
