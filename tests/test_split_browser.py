"""Split bill on the diner's page (SPEC §10), in headless Chromium: two phones of one table split the order by
dishes or "AA 2 人", each pays its share on the sandbox provider's own pay page, each page shows the other's
payment live ("已付 1 份 · ¥x,待付 ¥y", lines marked 已付, parts marked), and the cashier's waiter page shows
what remains fall until the order is paid. Screenshots go to artifacts/h5/ (not committed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from erp_simulator.shares import ShareLedger
from tests.support.payments import PayingRestaurant
from tests.support.restaurant import FIRST_TOTAL

pytestmark = pytest.mark.browser

SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "h5"
WAIT_MS = 10_000


@pytest.fixture
def redis_url(redis_single_url: str) -> str:
    """The browser tests run on the single Redis (the API tests cover the cluster)."""
    return redis_single_url


async def shot(page: Page, name: str) -> None:
    """Save a screenshot as artifacts/h5/<name>.png."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def yuan(cents: int) -> str:
    """Cents as the pages print them."""
    return f"¥{cents / 100:.2f}"


async def phone(browser: Browser, paying: PayingRestaurant) -> Page:
    """A phone (its own context: its own H5 session) on the table's page, live, the order shown."""
    context = await browser.new_context(viewport={"width": 390, "height": 844}, locale="zh-CN",
                                        is_mobile=True, has_touch=True)
    page = await context.new_page()
    await page.goto(paying.shop.page_url)
    await expect(page.get_by_test_id("conn")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    await expect(page.get_by_test_id("order-line")).to_have_count(2, timeout=WAIT_MS)
    return page


async def cashier(browser: Browser, url: str) -> Page:
    """The master terminal's waiter page, table T1 shown."""
    page = await browser.new_page(viewport={"width": 1100, "height": 700})
    await page.goto(url)
    await expect(page.get_by_test_id("table-T1")).to_be_visible(timeout=WAIT_MS)
    return page


async def to_sandbox(page: Page, paying: PayingRestaurant, provider: str) -> None:
    """From the open pay sheet: the provider's button → the sandbox provider's pay page."""
    await page.get_by_test_id(f"pay-{provider}").click()
    await page.wait_for_url(re.compile("^" + re.escape(paying.sandbox.url) + "/pay/"), timeout=WAIT_MS)


async def pay_at_sandbox(page: Page, paying: PayingRestaurant, cents: int) -> None:
    """On the sandbox's pay page for ``cents``: 支付 → back on the H5 page."""
    await expect(page.locator("#amount")).to_have_text(yuan(cents), timeout=WAIT_MS)
    await page.locator("#pay-ok").click()
    await page.wait_for_url(re.compile("^" + re.escape(paying.shop.base_url) + "/h5/"), timeout=WAIT_MS)


def line(page: Page, line_id: str):
    """An order line of the page."""
    return page.locator(f'[data-testid="order-line"][data-line="{line_id}"]')


async def test_two_phones_split_by_dishes_and_both_pay_on_the_sandbox(browser: Browser, paying: PayingRestaurant,
                                                                       cashier_page_url: str) -> None:
    """A takes the tea, B the fish (after the coordinator refused B an amount above what is free); both pay at the
    sandbox; each page shows the other's share live, the waiter page the remaining amount, then the order paid."""
    tea, fish = (item["line_id"] for item in paying.shop.erp_order()["items"])
    tea_cents, fish_cents = 2 * 1800, 6800
    till = await cashier(browser, cashier_page_url)
    a, b = await phone(browser, paying), await phone(browser, paying)

    await a.get_by_test_id("split-button").click()
    await expect(a.get_by_test_id("split-panel")).to_be_visible()
    await a.get_by_test_id(f"split-check-{tea}").check()
    await expect(a.get_by_test_id("split-pay")).to_have_text(f"支付 {yuan(tea_cents)}")
    await shot(a, "split-1-a-picks-the-tea")
    await a.get_by_test_id("split-pay").click()
    await expect(a.get_by_test_id("pay-panel")).to_have_attribute("data-phase", "confirm", timeout=WAIT_MS)
    await expect(a.get_by_test_id("pay-amount")).to_have_text(yuan(tea_cents))
    await expect(a.get_by_test_id("pay-title")).to_have_text("支付我的一份")

    # B sees the tea being paid, is refused more than what is free, and takes the fish.
    await expect(line(b, tea)).to_have_attribute("data-share", "taken", timeout=WAIT_MS)
    await expect(b.locator('[data-testid="banner"][data-kind="share"]')).to_contain_text("同桌顾客正在支付自己的一份")
    await expect(b.get_by_test_id("pay-button")).to_have_text(f"支付剩余 {yuan(fish_cents)}")
    await b.get_by_test_id("split-button").click()
    await b.get_by_test_id("split-mode-amount").click()
    await b.get_by_test_id("split-amount").fill("100")
    await b.get_by_test_id("split-pay").click()
    toast = b.get_by_test_id("message")
    await expect(toast).to_have_attribute("data-code", "SHARE_EXCEEDS", timeout=WAIT_MS)
    await expect(toast).to_have_text("所选金额超过订单未付金额")
    await b.get_by_test_id("split-mode-lines").click()
    await expect(b.get_by_test_id(f"split-check-{tea}")).to_be_disabled()
    await expect(b.locator(f'[data-testid="split-line"][data-line="{tea}"]')).to_contain_text("他人支付中")
    await shot(b, "split-2-b-sees-the-tea-taken")
    await b.get_by_test_id(f"split-check-{fish}").check()
    await b.get_by_test_id("split-pay").click()
    await expect(b.get_by_test_id("pay-amount")).to_have_text(yuan(fish_cents), timeout=WAIT_MS)
    await expect(till.get_by_test_id("badge-T1-payment").first).to_contain_text("分单", timeout=WAIT_MS)

    # Both open their provider orders; B comes back to wait while A pays.
    await to_sandbox(a, paying, "alipay")
    await to_sandbox(b, paying, "wechatpay")
    await b.go_back()
    await expect(b.get_by_test_id("pay-panel")).to_have_attribute("data-phase", "in_flight", timeout=WAIT_MS)
    await pay_at_sandbox(a, paying, tea_cents)
    await expect(a.get_by_test_id("result-panel")).to_have_attribute("data-kind", "share_paid", timeout=WAIT_MS)
    await expect(a.get_by_test_id("result-title")).to_have_text("支付成功")
    await expect(a.get_by_test_id("result-amount")).to_have_text(yuan(tea_cents))
    await shot(a, "split-3-a-paid-her-share")
    await a.get_by_test_id("result-close").click()
    one_paid = f"已付 1 份 · {yuan(tea_cents)},待付 {yuan(fish_cents)}"
    await expect(a.get_by_test_id("split-status")).to_have_text(one_paid, timeout=WAIT_MS)
    await expect(b.get_by_test_id("split-status")).to_have_text(one_paid, timeout=WAIT_MS)  # live, B waits
    await expect(line(b, tea)).to_have_attribute("data-share", "paid")
    await expect(line(b, tea).get_by_test_id("line-mark")).to_have_text("已付")
    await expect(till.get_by_test_id("remaining-T1")).to_have_text(yuan(fish_cents), timeout=WAIT_MS)
    await shot(a, "split-4-a-sees-what-remains")
    await shot(till, "split-5-waiter-page-remaining")

    # B goes on paying the fish: both pages reach "paid in full", the waiter page drops the order.
    await b.get_by_test_id("reopen-pay").click()
    await pay_at_sandbox(b, paying, fish_cents)
    await expect(b.get_by_test_id("result-panel")).to_have_attribute("data-kind", "share_paid", timeout=WAIT_MS)
    await b.get_by_test_id("result-close").click()
    for page in (a, b):
        await expect(page.get_by_test_id("split-status")).to_have_text(f"已全部付清 · {yuan(FIRST_TOTAL)}",
                                                                       timeout=WAIT_MS)
        await expect(page.locator('[data-testid="banner"][data-kind="paid"]')).to_have_text("订单已支付")
        await expect(line(page, fish)).to_have_attribute("data-share", "paid")
        await expect(page.get_by_test_id("pay-button")).to_be_disabled()
    await shot(a, "split-6-a-sees-paid-in-full")
    await shot(b, "split-7-b-sees-paid-in-full")
    await expect(till.get_by_test_id("order-T1")).to_have_count(0, timeout=WAIT_MS)
    await shot(till, "split-8-waiter-page-paid")
    erp = await paying.paid_in_erp()
    assert ShareLedger(paying.shop.db).paid_cents(erp["order_id"]) == FIRST_TOTAL
    for page in (a, b, till):
        await page.context.close()


async def test_aa_two_people_each_pay_a_part(browser: Browser, paying: PayingRestaurant) -> None:
    """AA: A chooses 2 people and part 1 and pays; B's page shows part 1 paid and offers only part 2 of the same N;
    B pays it and both pages read paid in full."""
    half = FIRST_TOTAL // 2
    a, b = await phone(browser, paying), await phone(browser, paying)
    await a.get_by_test_id("split-button").click()
    await a.get_by_test_id("split-mode-parts").click()
    await a.get_by_test_id("split-more").click()
    await expect(a.get_by_test_id("split-people")).to_have_text("AA 3 人")
    await a.get_by_test_id("split-fewer").click()
    await expect(a.get_by_test_id("split-people")).to_have_text("AA 2 人")
    await a.get_by_test_id("split-part-1").click()
    await expect(a.get_by_test_id("split-pay")).to_have_text(f"支付 {yuan(half)}")
    await shot(a, "split-aa-1-a-picks-part-1")
    await a.get_by_test_id("split-pay").click()
    await to_sandbox(a, paying, "wechatpay")
    await pay_at_sandbox(a, paying, half)
    await expect(a.get_by_test_id("result-panel")).to_have_attribute("data-kind", "share_paid", timeout=WAIT_MS)
    await a.get_by_test_id("result-close").click()

    await expect(b.get_by_test_id("split-summary-part-1")).to_have_attribute("data-state", "paid", timeout=WAIT_MS)
    await expect(b.get_by_test_id("split-status")).to_have_text(f"已付 1 份 · {yuan(half)},待付 {yuan(half)}")
    await b.get_by_test_id("split-button").click()
    await b.get_by_test_id("split-mode-parts").click()
    await expect(b.get_by_test_id("split-hint")).to_have_text("同桌已选择 AA 2 人,请选择您付的那一份")
    await expect(b.get_by_test_id("split-more")).to_be_disabled()
    await expect(b.get_by_test_id("split-part-1")).to_be_disabled()
    await expect(b.get_by_test_id("split-part-1")).to_contain_text("已付")
    await b.get_by_test_id("split-part-2").click()
    await shot(b, "split-aa-2-b-gets-part-2")
    await b.get_by_test_id("split-pay").click()
    await expect(b.get_by_test_id("pay-amount")).to_have_text(yuan(FIRST_TOTAL - half), timeout=WAIT_MS)
    await to_sandbox(b, paying, "alipay")
    await pay_at_sandbox(b, paying, FIRST_TOTAL - half)
    await expect(b.get_by_test_id("result-panel")).to_have_attribute("data-kind", "share_paid", timeout=WAIT_MS)
    await b.get_by_test_id("result-close").click()
    for page in (a, b):
        await expect(page.get_by_test_id("split-status")).to_have_text(f"已全部付清 · {yuan(FIRST_TOTAL)}",
                                                                       timeout=WAIT_MS)
        await expect(page.get_by_test_id("split-summary-part-2")).to_have_attribute("data-state", "paid")
    await shot(a, "split-aa-3-a-sees-paid-in-full")
    assert (await paying.paid_in_erp())["status"] == "paid"
    for page in (a, b):
        await page.context.close()


async def test_a_failed_share_frees_its_part_and_retry_claims_it_again(browser: Browser,
                                                                        paying: PayingRestaurant) -> None:
    """支付失败 at the sandbox for part 1 of AA 2: the other phone sees the part free again, and 重新支付 claims the
    same part (same N, same amount) back into the pay sheet."""
    half = FIRST_TOTAL // 2
    a, b = await phone(browser, paying), await phone(browser, paying)
    await a.get_by_test_id("split-button").click()
    await a.get_by_test_id("split-mode-parts").click()
    await a.get_by_test_id("split-part-1").click()
    await a.get_by_test_id("split-pay").click()
    await expect(b.get_by_test_id("split-summary-part-1")).to_have_attribute("data-state", "taken", timeout=WAIT_MS)
    await to_sandbox(a, paying, "wechatpay")
    await a.locator("#pay-fail").click()
    await a.wait_for_url(re.compile("^" + re.escape(paying.shop.base_url) + "/h5/"), timeout=WAIT_MS)
    await expect(a.get_by_test_id("result-panel")).to_have_attribute("data-kind", "failed", timeout=WAIT_MS)
    await expect(a.get_by_test_id("result-title")).to_have_text("支付失败,请重试")
    await expect(b.get_by_test_id("split-summary")).to_be_hidden(timeout=WAIT_MS)  # nothing paid or held any more
    await a.get_by_test_id("retry-pay").click()
    await expect(a.get_by_test_id("pay-panel")).to_have_attribute("data-phase", "confirm", timeout=WAIT_MS)
    await expect(a.get_by_test_id("pay-panel")).to_have_attribute("data-share", "parts")
    await expect(a.get_by_test_id("pay-amount")).to_have_text(yuan(half))
    await expect(b.get_by_test_id("split-summary-part-1")).to_have_attribute("data-state", "taken", timeout=WAIT_MS)
    await shot(b, "split-fail-1-b-sees-part-1-held-again")
    for page in (a, b):
        await page.context.close()


SPLIT_CHECKS = """
async () => {
  const sp = await import("/h5/static/js/split.js");
  const st = await import("/h5/static/js/state.js");
  const out = {};
  const order = {order_id: "o1", table_id: "T1", version: 1, status: "open", total_cents: 10001,
    items: [{line_id: "l1", qty: 2, unit_price_cents: 1800}, {line_id: "l2", qty: 1, unit_price_cents: 6800}],
    adjustments: [{kind: "discount", amount_cents: -300, line_id: "l2"}, {kind: "rounding", amount_cents: -99}],
    paid_cents: 3600, shares: [{kind: "lines", line_ids: ["l1"], amount_cents: 3600, fence: 3, paid_at: 1}]};
  out.lines = sp.lineAmounts(order);
  out.parts = [sp.partAmount(10001, 3, 1), sp.partAmount(10001, 3, 3)];
  const lock = (fence, share, is_me) => ({kind: "payment", order_id: "o1", fence, expires_at: 5000, share,
                                          holder: {role: "h5", is_me}});
  let state = {...st.emptyState(), order, seq: 1};
  for (const [seq, l] of [[2, lock(7, {kind: "amount", amount_cents: 1000}, false)],
                          [3, lock(8, {kind: "amount", amount_cents: 500}, true)]]) {
    state = st.applyEvent(state, {seq, name: "lock.acquired", data: {lock: l}}, 0);
  }
  out.bothShareLocksKept = state.locks.map((l) => l.fence);
  const summary = sp.splitSummary(state, 0);
  out.summary = [summary.paid, summary.remaining, summary.claimed, summary.rest, summary.lines.l1, summary.full];
  out.expiredIgnored = sp.splitSummary(state, 5000).claimed;
  out.derive = [st.derive(state, 0).payRest, st.derive(state, 0).canPay, st.derive(state, 0).banners.map((b) => b.kind)];
  const pick = {...sp.newPick(summary), lines: ["l1", "l2"]};
  out.pickLines = sp.pickedShare(pick, order, summary);
  out.pickAmount = sp.pickedShare({...pick, mode: "amount", amount: "12.5"}, order, summary);
  out.badAmounts = ["0", "1.234", "-3", "abc", ""].map(sp.yuanToCents);
  const parted = {...order, shares: [{kind: "parts", parts: 4, part: 2, amount_cents: 2500}]};
  const s4 = sp.splitSummary({...state, order: parted, locks: []}, 0);
  out.fixedN = [s4.partsN, sp.pickAction(sp.newPick(s4), {kind: "more"}, s4).parts, s4.parts[2]];
  out.takenPart = sp.pickedShare({...sp.newPick(s4), mode: "parts", part: 2}, parted, s4);
  out.spec = [sp.specOf({kind: "lines", line_ids: ["l1"], amount_cents: 1}), sp.specOf({kind: "rest", amount_cents: 1})];
  return out;
}
"""


async def test_split_rules(browser: Browser, coordinator_url: str) -> None:
    """The page's pure split module agrees with the coordinator's amounts (line adjustments, the last part's
    rounding), keeps share locks side by side, counts only live claims, and fixes N once the table chose it."""
    page = await browser.new_page()
    try:
        await page.goto(f"{coordinator_url}/h5/static/app.css")
        result = await page.evaluate(SPLIT_CHECKS)
    finally:
        await page.close()
    assert result == {
        "lines": {"l1": 3600, "l2": 6500}, "parts": [3333, 3335], "bothShareLocksKept": [7, 8],
        "summary": [3600, 6401, 1500, 4901, "paid", False], "expiredIgnored": 0,
        "derive": [True, True, ["share"]],
        "pickLines": {"share": {"lines": ["l2"]}, "amount_cents": 6500},
        "pickAmount": {"share": {"amount_cents": 1250}, "amount_cents": 1250},
        "badAmounts": [None, None, None, None, None], "fixedN": [4, 4, "paid"], "takenPart": None,
        "spec": [{"lines": ["l1"]}, {"rest": True}],
    }
