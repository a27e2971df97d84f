"""Admin payment endpoints over real HTTP: provider settings (write-only secrets), the connection
test against the sandbox, reconciliation, the daily summary and the CSV export."""

from __future__ import annotations

import csv
import io

from tests.support.payments import PayingRestaurant
from tests.support.restaurant import FIRST_TOTAL, eventually


async def test_provider_secrets_are_write_only_and_kept_encrypted(paying: PayingRestaurant) -> None:
    """GET shows which secrets are set, never their values; Redis holds no secret in clear; a PUT without them keeps them."""
    creds = paying.sandbox.credentials["wechatpay"]
    status, view = await paying.admin("GET", "/payments/providers/wechatpay")
    assert status == 200
    assert view["settings"]["merchant_private_key"] == {"set": True}
    assert view["settings"]["apiv3_key"] == {"set": True}
    assert view["settings"]["mchid"] == creds["mchid"]
    assert view["notify_url"].endswith(f"/api/v1/payments/notify/wechatpay/{paying.shop.store_id}")
    text = str(view)
    assert creds["apiv3_key"] not in text and "PRIVATE KEY" not in text
    raw = await paying.services.redis.hget(f"tl:{{{paying.shop.store_id}}}:payproviders", "wechatpay")
    assert creds["apiv3_key"].encode() not in raw and b"PRIVATE KEY" not in raw
    status, view = await paying.admin("PUT", "/payments/providers/wechatpay", {"base_url": creds["base_url"]})
    assert status == 200 and view["settings"]["apiv3_key"] == {"set": True}
    status, answer = await paying.admin("POST", "/payments/providers/wechatpay/test")
    assert status == 200 and answer["ok"] is True, answer


async def test_bad_provider_settings_are_400_and_an_unset_provider_is_404(paying: PayingRestaurant) -> None:
    """A wrong field is a 400 naming it; an unknown provider name is 404."""
    status, body = await paying.admin("PUT", "/payments/providers/wechatpay", {"apiv3_key": "short"})
    assert status == 400 and "apiv3_key" in str(body["error"]["details"])
    status, _ = await paying.admin("GET", "/payments/providers/paypal")
    assert status == 404


async def test_connection_test_reports_an_unreachable_provider(paying: PayingRestaurant) -> None:
    """The test button says not ok while the provider answers 503."""
    await paying.sandbox.control(mode="503")
    status, answer = await paying.admin("POST", "/payments/providers/alipay/test")
    assert status == 200 and answer["ok"] is False


async def test_summary_and_csv_count_a_paid_order(paying: PayingRestaurant) -> None:
    """After one paid order, the day's summary shows it paid with the money received, and the CSV lists it."""
    diner = await paying.shop.diner()
    _, started, _ = await paying.claim_and_start(diner)
    await paying.sandbox.pay(started["out_trade_no"], outcome="paid")
    await paying.paid_in_erp()
    async def confirmed() -> bool:
        return (await paying.record(started["out_trade_no"]))["state"] == "paid"

    await eventually(confirmed, what="record paid")
    status, summary = await paying.admin("GET", "/payments/summary")
    assert status == 200
    [day] = [d for d in summary["days"] if d["provider"] == "wechatpay"]
    assert day["orders_paid"] == 1 and day["paid_cents"] == FIRST_TOTAL and day["received_cents"] == FIRST_TOTAL
    status, text = await paying.admin("GET", "/payments/export.csv")
    assert status == 200
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["out_trade_no"], r["state"], r["received_cents"]) for r in rows] == [
        (started["out_trade_no"], "paid", str(FIRST_TOTAL))]
