"""Provider payments end to end over real HTTP (SPEC §9): the coordinator, the ERP simulator's
terminals, diners' H5 clients and the sandbox provider process, on single Redis and Cluster."""

from __future__ import annotations

import asyncio

import pytest

from tests.h5_fixtures import FIRST_TOTAL, eventually, restaurant  # noqa: F401
from tests.payments_fixtures import PayingRestaurant, coordinator_app, coordinator_url, paying  # noqa: F401
from tests.sandbox_fixtures import sandbox, sandbox_process  # noqa: F401


@pytest.mark.parametrize("provider", ["wechatpay", "alipay"])
async def test_happy_path_marks_the_order_paid_once_the_provider_notifies(paying: PayingRestaurant, provider: str) -> None:
    """Claim, start, pay at the provider: the verified notification completes the order in the ERP and the coordinator."""
    diner = await paying.shop.diner()
    grant, started, seq = await paying.claim_and_start(diner, provider)
    assert started["amount_cents"] == FIRST_TOTAL and started["lock"]["phase"] == "in_flight"
    assert started["pay_url"].startswith(paying.sandbox.url)
    status, _ = await paying.sandbox.pay(started["out_trade_no"], outcome="paid", notify="normal")
    assert status == 200
    event = await diner.payment_result(started["out_trade_no"], paying.shop.order_id, since=seq)
    assert event["name"] == "order.paid"
    await paying.paid_in_erp()
    assert paying.shop.db.payment(paying.shop.order_id)["payment_ref"].startswith(f"{provider}:")
    record = await paying.record(started["out_trade_no"])
    assert record["state"] == "paid" and record["received_cents"] == FIRST_TOTAL
