"""Provider payments as people see them (SPEC §9), in headless Chromium: the diner pays on the
sandbox provider's own pay page and comes back to 支付成功; the cashier's waiter page shows
顾客支付中 with the in-flight countdown, then a surplus alert after a late payment that followed a
force; the admin console lists the surplus with its refund state and draws the daily chart.
Screenshots go to artifacts/payments/ (not committed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from h5_client.client import H5Error
from tests.support.app import ADMIN_TOKEN
from tests.support.payments import PayingRestaurant
from tests.support.restaurant import FIRST_TOTAL, eventually

pytestmark = pytest.mark.browser

SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "payments"
WAIT_MS = 10_000
ACCEPT_REFUSED = "订单正在其他机器/顾客端进行支付,暂不能接单,如需接单请先取消支付"


@pytest.fixture
def redis_url(redis_single_url: str) -> str:
    """The browser tests run on the single Redis (the API tests cover the cluster)."""
    return redis_single_url


async def shot(page: Page, name: str) -> None:
    """Save a screenshot as artifacts/payments/<name>.png."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def phone(browser: Browser) -> Page:
    """A phone-sized page (its own sessionStorage: one diner)."""
    context = await browser.new_context(viewport={"width": 390, "height": 844}, locale="zh-CN",
                                        is_mobile=True, has_touch=True)
    return await context.new_page()


@pytest.mark.parametrize("provider", ["wechatpay", "alipay"])
async def test_diner_pays_on_the_sandbox_page_and_sees_paid(browser: Browser, paying: PayingRestaurant,
                                                            provider: str) -> None:
    """支付 → 微信支付/支付宝 → the provider's page (支付) → back on the H5 page in the same session → 支付成功."""
    page = await phone(browser)
    await page.goto(paying.shop.page_url)
    await expect(page.get_by_test_id("order-line")).to_have_count(2, timeout=WAIT_MS)
    await page.get_by_test_id("pay-button").click()
    await expect(page.get_by_test_id("pay-panel")).to_have_attribute("data-phase", "confirm", timeout=WAIT_MS)
    await expect(page.get_by_test_id(f"pay-{provider}")).to_be_visible()
    await shot(page, f"{provider}-1-choose")
    await page.get_by_test_id(f"pay-{provider}").click()
    await page.wait_for_url(re.compile("^" + re.escape(paying.sandbox.url) + "/pay/"), timeout=WAIT_MS)
    assert "qr=" not in page.url and "session" not in page.url  # nothing of the diner's session travels
    await expect(page.locator("#amount")).to_have_text(f"¥{FIRST_TOTAL / 100:.2f}", timeout=WAIT_MS)
    await shot(page, f"{provider}-2-sandbox-page")
    await page.locator("#pay-ok").click()
    await page.wait_for_url(re.compile("^" + re.escape(paying.shop.base_url) + "/h5/"), timeout=WAIT_MS)
    await expect(page.get_by_test_id("paid-screen")).to_be_visible(timeout=WAIT_MS)
    await expect(page.get_by_test_id("paid-screen")).to_contain_text("支付成功")
    await expect(page.get_by_test_id("paid-amount")).to_have_text(f"¥{FIRST_TOTAL / 100:.2f}")
    await shot(page, f"{provider}-3-paid")
    order = await paying.paid_in_erp()
    assert order["status"] == "paid"
    assert paying.shop.db.payment(paying.shop.order_id)["payment_ref"].startswith(f"{provider}:")
    await page.context.close()


async def test_failed_payment_is_shown_and_can_be_retried(browser: Browser, paying: PayingRestaurant) -> None:
    """支付失败 on the sandbox page: back on the H5 page the diner reads 支付失败,请重试 and can pay again."""
    page = await phone(browser)
    await page.goto(paying.shop.page_url)
    await expect(page.get_by_test_id("order-line")).to_have_count(2, timeout=WAIT_MS)
    await page.get_by_test_id("pay-button").click()
    await page.get_by_test_id("pay-wechatpay").click()
    await page.wait_for_url(re.compile("^" + re.escape(paying.sandbox.url) + "/pay/"), timeout=WAIT_MS)
    await page.locator("#pay-fail").click()
    await page.wait_for_url(re.compile("^" + re.escape(paying.shop.base_url) + "/h5/"), timeout=WAIT_MS)
    panel = page.get_by_test_id("result-panel")
    await expect(panel).to_have_attribute("data-kind", "failed", timeout=WAIT_MS)
    await expect(page.get_by_test_id("result-title")).to_have_text("支付失败,请重试")
    await shot(page, "failed-1-result")
    await page.get_by_test_id("retry-pay").click()
    await expect(page.get_by_test_id("pay-panel")).to_have_attribute("data-phase", "confirm", timeout=WAIT_MS)
    assert paying.shop.erp_order()["status"] == "open"
    await page.context.close()


async def test_cashier_sees_the_countdown_then_a_surplus_alert_and_the_admin_sees_the_refund(
        browser: Browser, paying: PayingRestaurant, cashier_page_url: str) -> None:
    """In flight: 顾客支付中 with a countdown past the 15 s claim; a force (provider unreachable), cash at the
    till, then the diner's late payment: the waiter page shows a surplus alert that reaches 已退款, the diner
    reads 已退款, and the admin console lists the surplus with its refund and draws the chart."""
    shop, sandbox = paying.shop, paying.sandbox
    cashier = await browser.new_page(viewport={"width": 1100, "height": 700})
    await cashier.goto(cashier_page_url)
    await expect(cashier.get_by_test_id("table-T1")).to_be_visible(timeout=WAIT_MS)

    page = await phone(browser)
    await page.goto(shop.page_url)
    await expect(page.get_by_test_id("order-line")).to_have_count(2, timeout=WAIT_MS)
    await page.get_by_test_id("pay-button").click()
    await page.get_by_test_id("pay-wechatpay").click()
    await page.wait_for_url(re.compile("^" + re.escape(sandbox.url) + "/pay/"), timeout=WAIT_MS)
    await page.go_back()  # the diner comes back without paying: waiting for the result
    await expect(page.get_by_test_id("pay-panel")).to_have_attribute("data-phase", "in_flight", timeout=WAIT_MS)
    await expect(page.get_by_test_id("pay-title")).to_have_text("等待支付结果…")
    await expect(page.get_by_test_id("countdown")).to_have_text(re.compile(r"^剩余 \d+ 秒$"), timeout=WAIT_MS)
    await shot(page, "surplus-1-diner-waiting")

    badge = cashier.get_by_test_id("badge-T1-payment")
    await expect(badge).to_contain_text("顾客支付中", timeout=WAIT_MS)
    countdown = badge.locator(".countdown")
    await expect(countdown).to_have_text(re.compile(r"^\d+秒$"), timeout=WAIT_MS)
    assert int((await countdown.text_content() or "0").rstrip("秒")) > 60  # the provider's window, not the claim
    await shot(cashier, "surplus-2-cashier-countdown")
    # Another diner's add-on meanwhile: refused by the coordinator, and the cashier gets the seed's toast.
    other = await shop.diner()
    with pytest.raises(H5Error) as refused:
        await other.add_items([("rice", 1)])
    assert refused.value.code == "PAYMENT_LOCKED"
    await expect(cashier.get_by_test_id("toast").filter(has_text=ACCEPT_REFUSED)).to_be_visible(timeout=WAIT_MS)

    no = (await paying.admin("GET", "/payments"))[1]["payments"][-1]["out_trade_no"]
    await sandbox.control(mode="503")
    # 结账 on the cashier's page: the usual force warning, then the stronger one (provider unreachable).
    await cashier.get_by_test_id("btn-T1-pay").click()
    await expect(cashier.get_by_test_id("confirm-text")).to_contain_text("重复支付", timeout=WAIT_MS)
    await cashier.get_by_test_id("confirm-continue").click()
    await expect(cashier.get_by_test_id("confirm-dialog")).to_be_visible(timeout=WAIT_MS)
    await expect(cashier.get_by_test_id("confirm-text")).to_contain_text("暂时无法向支付平台确认支付结果", timeout=WAIT_MS)
    await shot(cashier, "surplus-2b-cashier-unverified-warning")
    await cashier.get_by_test_id("confirm-continue").click()
    await expect(cashier.get_by_test_id("btn-T1-complete")).to_be_visible(timeout=WAIT_MS)
    await sandbox.control(mode="normal")
    await cashier.get_by_test_id("btn-T1-complete").click()  # cash at the till
    await eventually(lambda: shop.erp_order()["status"] == "paid", timeout=10, what="cash payment in the ERP")
    await sandbox.pay(no, outcome="paid", notify="late", delay_ms=300)

    alert = cashier.get_by_test_id("surplus-alert")
    await expect(alert).to_be_visible(timeout=WAIT_MS)
    await expect(alert).to_contain_text(f"¥{FIRST_TOTAL / 100:.2f}")
    await expect(alert).to_have_attribute("data-refund", "succeeded", timeout=20_000)
    await expect(alert.locator(".refund")).to_have_text("已退款")
    await shot(cashier, "surplus-3-cashier-alert")
    await expect(page.get_by_test_id("result-panel")).to_have_attribute("data-refund", "succeeded", timeout=WAIT_MS)
    await expect(page.get_by_test_id("result-title")).to_have_text("已退款")
    await shot(page, "surplus-4-diner-refunded")
    assert shop.erp_order()["status"] == "paid"
    assert not shop.db.payment(shop.order_id)["payment_ref"].startswith("wechatpay:")  # the till's payment stands

    admin = await browser.new_page(viewport={"width": 1280, "height": 900})
    await admin.goto(f"{shop.base_url}/admin/")
    await admin.get_by_test_id("signin-token").fill(ADMIN_TOKEN)
    await admin.get_by_test_id("signin-submit").click()
    await expect(admin.get_by_test_id("shell")).to_be_visible(timeout=WAIT_MS)
    await admin.goto(f"{shop.base_url}/admin/#/stores/{shop.store_id}/payrecon")
    row = admin.locator(f'[data-testid="pay-surplus-row"][data-trade="{no}"]')
    await expect(row).to_be_visible(timeout=WAIT_MS)
    await expect(row.get_by_test_id("pay-refund-state")).to_have_attribute("data-state", "succeeded")
    await expect(row.get_by_test_id("pay-refund-state")).to_have_text("已退款")
    await expect(admin.get_by_test_id("pay-chart")).to_be_visible()
    surplus_bar = admin.locator('[data-testid="pay-chart-bar"][data-series="surplus"][data-provider="wechatpay"]')
    await expect(surplus_bar).to_have_attribute("data-cents", str(FIRST_TOTAL))
    await shot(admin, "surplus-5-admin-reconciliation")
    async with admin.expect_download() as download_info:
        await admin.get_by_test_id("pay-export").click()
    csv_path = await (await download_info.value).path()
    assert no in Path(csv_path).read_text()
    await admin.close()
    await cashier.close()
    await page.context.close()


async def test_admin_payment_settings_show_secrets_only_as_set(browser: Browser, paying: PayingRestaurant) -> None:
    """支付设置: the configured providers show "已设置" for each secret (never a value), and 测试连接 succeeds."""
    shop = paying.shop
    admin = await browser.new_page(viewport={"width": 1280, "height": 1200})
    await admin.goto(f"{shop.base_url}/admin/")
    await admin.get_by_test_id("signin-token").fill(ADMIN_TOKEN)
    await admin.get_by_test_id("signin-submit").click()
    await expect(admin.get_by_test_id("shell")).to_be_visible(timeout=WAIT_MS)
    await admin.goto(f"{shop.base_url}/admin/#/stores/{shop.store_id}/paysettings")
    form = admin.get_by_test_id("pay-form-wechatpay")
    await expect(form).to_have_attribute("data-configured", "1", timeout=WAIT_MS)
    await expect(admin.get_by_test_id("pay-wechatpay-apiv3_key-state")).to_have_text("已设置")
    await expect(admin.get_by_test_id("pay-wechatpay-apiv3_key")).to_have_value("")
    await expect(admin.get_by_test_id("pay-alipay-app_private_key-state")).to_have_text("已设置")
    secret = paying.sandbox.credentials["wechatpay"]["apiv3_key"]
    assert secret not in await admin.content()
    await admin.get_by_test_id("pay-test-wechatpay").click()
    await expect(admin.get_by_test_id("pay-status-wechatpay")).to_have_attribute("data-state", "saved", timeout=WAIT_MS)
    await shot(admin, "settings-1-admin")
    await admin.get_by_test_id("pay-save-alipay").click()  # secrets left empty keep the stored ones
    await expect(admin.get_by_test_id("pay-status-alipay")).to_have_attribute("data-state", "saved", timeout=WAIT_MS)
    await admin.get_by_test_id("pay-test-alipay").click()
    await expect(admin.get_by_test_id("pay-status-alipay")).to_have_attribute("data-state", "saved", timeout=WAIT_MS)
    await admin.close()


PAYFLOW_CHECKS = """
async () => {
  const f = await import("/h5/static/js/payflow.js");
  const out = {};
  const lock = (fence, extra = {}) => ({kind: "payment", order_id: "o1", fence, expires_at: 1000, ...extra});
  const base = {payment: {token: "t", order_id: "o1", fence: 7, amount_cents: 3800, expires_at: 100, phase: "confirm"},
                payResult: null, paidByMe: false, lost: null, seq: 50};
  const s = {...base, payment: f.started(base.payment, {out_trade_no: "TL1", provider: "wechatpay",
             pay_url: "http://p/", amount_cents: 3800, expires_at: 200000}, 40)};
  out.phase = s.payment.phase;
  out.since = s.payment.since;
  const ev = (name, data, seq = 10) => ({type: "event", seq, name, data});
  out.otherTrade = f.payEvent(s, ev("payment.failed", {out_trade_no: "TL2", status: "failed"})) === s;
  out.failed = f.payEvent(s, ev("payment.failed", {out_trade_no: "TL1", status: "failed", reason: "payment_failed"})).payResult.kind;
  out.cancelled = f.payEvent(s, ev("payment.failed", {out_trade_no: "TL1", reason: "released"})).payResult;
  out.completing = f.payEvent(s, ev("lock.renewed", {lock: lock(7, {completing: true}), reason: "completing"})).payment.phase;
  out.tillPaid = f.payEvent(s, ev("order.paid", {order: {order_id: "o1"}, payment_ref: "cash-1"})) === s;
  const paid = f.payEvent(s, ev("order.paid", {order: {order_id: "o1", status: "paid"}, payment_ref: "wechatpay:42"}));
  out.paid = [paid.payResult.kind, paid.paidByMe, paid.payment];
  const surplus = f.payEvent(s, ev("payment.surplus", {out_trade_no: "TL1", amount_cents: 3800, refund_state: "pending"}));
  out.surplus = surplus.payResult.refund_state;
  out.refunded = f.payEvent(surplus, ev("payment.refund_updated", {out_trade_no: "TL1", refund_state: "succeeded"})).payResult.refund_state;
  out.waiting = [f.waitingSeconds(s, 190000), f.waitingSeconds(s, null), f.waitingSeconds(base, 0)];
  out.resyncKeeps = f.afterResync({...s, locks: [lock(7)]}) === null ? "x" : f.afterResync({...s, locks: [lock(7)]}).payment.phase;
  out.resyncUnknown = f.afterResync({...s, locks: []}).payResult.kind;
  return out;
}
"""


async def test_payflow_rules(browser: Browser, coordinator_url: str) -> None:
    """The page's pure payment reducer: only my trade's events count, the till's own payment is not mine, a refund
    follows its surplus, and a resync that lost my trade's events says the outcome is unknown."""
    page = await browser.new_page()
    try:
        await page.goto(f"{coordinator_url}/h5/static/app.css")
        result = await page.evaluate(PAYFLOW_CHECKS)
    finally:
        await page.close()
    assert result == {
        "phase": "in_flight", "since": 40, "otherTrade": True, "failed": "failed", "cancelled": None,
        "completing": "completing", "tillPaid": True, "paid": ["paid", True, None], "surplus": "pending",
        "refunded": "succeeded", "waiting": [10, None, None], "resyncKeeps": "in_flight", "resyncUnknown": "unknown",
    }
