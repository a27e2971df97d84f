"""The diner's H5 page in headless Chromium against the real coordinator, real Redis and the ERP
simulator's terminals. Each state the diner can meet is saved as a screenshot in artifacts/h5/.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect

from tests.support.payments import PayingRestaurant
from tests.support.restaurant import FIRST_TOTAL, Restaurant

pytestmark = pytest.mark.browser

SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "h5"
WAIT_MS = 5000


@pytest.fixture
def redis_url(redis_single_url: str) -> str:
    """The browser tests run on the single Redis (the cluster is covered by the API tests)."""
    return redis_single_url


class Phones:
    """Phone-sized browser contexts on table T1; all closed before the coordinator stops."""

    def __init__(self, browser: Browser, restaurant: Restaurant) -> None:
        self.browser = browser
        self.restaurant = restaurant
        self.contexts: list[BrowserContext] = []

    async def new_page(self) -> Page:
        """A fresh phone (its own sessionStorage: another diner) with a blank page."""
        context = await self.browser.new_context(viewport={"width": 390, "height": 844}, locale="zh-CN",
                                                 is_mobile=True, has_touch=True)
        self.contexts.append(context)
        return await context.new_page()

    async def open(self, *, block_ws: bool = False, query: str = "") -> Page:
        """A phone that opened table T1's QR link, loaded and showing the order."""
        page = await self.new_page()
        if block_ws:
            # page.route() does not see websockets; this refuses them before any byte reaches the server.
            await page.route_web_socket(re.compile(r".*/api/v1/ws.*"), refuse_socket)
        await page.goto(self.restaurant.page_url + query)
        await expect(page.get_by_test_id("app")).to_have_attribute("data-ready", "1", timeout=WAIT_MS)
        await expect(page.get_by_test_id("order-line")).to_have_count(2, timeout=WAIT_MS)
        return page

    async def close(self) -> None:
        """Close every context (and so every page's websocket)."""
        for context in self.contexts:
            await context.close()


@pytest.fixture
async def phones(browser: Browser, restaurant: Restaurant) -> AsyncIterator[Phones]:
    """Diners' phones on table T1."""
    phones = Phones(browser, restaurant)
    try:
        yield phones
    finally:
        await phones.close()


async def refuse_socket(ws) -> None:
    """A websocket route that never reaches the server: the page sees it close without opening."""
    await ws.close()


async def live(page: Page) -> None:
    """Wait until the page's websocket is open."""
    await expect(page.get_by_test_id("conn")).to_have_attribute("data-state", "live", timeout=WAIT_MS)


async def shot(page: Page, name: str) -> None:
    """Save a screenshot of the page as artifacts/h5/<name>.png."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"))


async def pay_on_sandbox(page: Page, paying: PayingRestaurant) -> None:
    """From the open pay sheet: 微信支付 → the sandbox provider's page → 支付 → back on the H5 page."""
    await page.get_by_test_id("pay-wechatpay").click()
    await page.wait_for_url(re.compile("^" + re.escape(paying.sandbox.url) + "/pay/"), timeout=WAIT_MS)
    await page.locator("#pay-ok").click()
    await page.wait_for_url(re.compile("^" + re.escape(paying.shop.base_url) + "/h5/"), timeout=WAIT_MS)


def banner(page: Page, kind: str):
    """The banner of one lock state (order | presettle | payment | paid | closed)."""
    return page.locator(f'[data-testid="banner"][data-kind="{kind}"]')


async def test_page_shows_table_order_and_total(phones: Phones, restaurant: Restaurant):
    """The QR link opens the page in zh-CN with the table, the ERP's order lines, the total and the menu."""
    page = await phones.open()
    await live(page)
    await expect(page.get_by_test_id("table-name")).to_have_text("桌台 一号桌")
    await expect(page.get_by_test_id("total")).to_have_text("¥104.00")
    await expect(page.get_by_test_id("menu-item-rice")).to_be_visible(timeout=WAIT_MS)
    await expect(page.get_by_test_id("pay-button")).to_be_enabled()
    await expect(page.locator('[data-testid="banner"]')).to_have_count(0)
    await shot(page, "01-order")
    # A reload keeps the session of this tab.
    token = await page.evaluate("JSON.parse(sessionStorage.getItem('tablelock.h5.session')).session_token")
    await page.reload()
    await expect(page.get_by_test_id("order-line")).to_have_count(2, timeout=WAIT_MS)
    assert await page.evaluate("JSON.parse(sessionStorage.getItem('tablelock.h5.session')).session_token") == token


async def test_waiter_editing_banner_within_a_second_and_adding_dishes_works(phones: Phones, restaurant: Restaurant):
    """A terminal taking the order lock shows the waiter banner within 1 s; paying is off, adding dishes works."""
    page = await phones.open()
    await live(page)
    started = time.monotonic()
    await restaurant.waiter.open_editor(restaurant.order_id)
    await expect(banner(page, "order")).to_have_text("服务员正在修改订单,暂不能支付,可继续加菜", timeout=1000)
    assert time.monotonic() - started < 1.0
    await expect(page.get_by_test_id("pay-button")).to_be_disabled()
    await shot(page, "02-waiter-editing")

    await page.get_by_test_id("add-rice").click()
    await page.get_by_test_id("add-rice").click()
    await expect(page.get_by_test_id("cart-count")).to_have_text("已选 2 份")
    await page.get_by_test_id("submit-items").click()
    await expect(page.get_by_test_id("message")).to_have_text("加菜成功,已送厨房", timeout=WAIT_MS)
    await expect(page.get_by_test_id("order-line")).to_have_count(3, timeout=WAIT_MS)
    await expect(page.get_by_test_id("total")).to_have_text("¥110.00")
    await shot(page, "03-added-while-editing")
    assert any(l["sku"] == "rice" and l["source"] == "h5" for l in restaurant.erp_order()["items"])

    await restaurant.waiter.submit(restaurant.order_id)
    await expect(banner(page, "order")).to_have_count(0, timeout=1000)
    await expect(page.get_by_test_id("pay-button")).to_be_enabled()


async def test_server_refusal_shows_the_spec_message(phones: Phones, restaurant: Restaurant):
    """A page that missed the waiter's lock (no socket, no poll) taps 支付 and shows the 409's SPEC message."""
    page = await phones.open(block_ws=True)
    refused_poll = asyncio.Event()

    async def freeze(route) -> None:
        refused_poll.set()
        await route.abort()

    # Freeze what the page knows: polls run one after another, so once one is refused no
    # earlier read is still on its way.
    await page.route("**/api/v1/h5/table", freeze)
    await asyncio.wait_for(refused_poll.wait(), 5)
    await restaurant.waiter.open_editor(restaurant.order_id)
    await expect(page.get_by_test_id("pay-button")).to_be_enabled()
    await page.get_by_test_id("pay-button").click()
    message = page.get_by_test_id("message")
    await expect(message).to_have_text("订单正在其他机器修改,暂不能支付", timeout=WAIT_MS)
    await expect(message).to_have_attribute("data-code", "ORDER_LOCKED")
    await expect(banner(page, "order")).to_be_visible()  # the lock in the error body
    await expect(page.get_by_test_id("pay-panel")).to_be_hidden()
    await shot(page, "04-refused-order-locked")


async def test_full_payment_reaches_the_paid_screen(phones: Phones, restaurant: Restaurant,
                                                    paying: PayingRestaurant):
    """支付 → countdown → 微信支付 on the provider's page → paid screen, and the ERP holds the order as paid."""
    page = await phones.open()
    await live(page)
    await page.get_by_test_id("pay-button").click()
    panel = page.get_by_test_id("pay-panel")
    await expect(panel).to_be_visible(timeout=WAIT_MS)
    await expect(page.get_by_test_id("pay-amount")).to_have_text("¥104.00")
    seconds = int(await page.get_by_test_id("countdown").get_attribute("data-seconds"))
    assert 13 <= seconds <= 15
    await expect(page.get_by_test_id("countdown")).to_contain_text("秒内完成支付")
    await shot(page, "05-paying-countdown")
    await pay_on_sandbox(page, paying)
    await expect(page.get_by_test_id("paid-screen")).to_be_visible(timeout=WAIT_MS)
    await expect(page.get_by_test_id("paid-amount")).to_have_text("¥104.00")
    await shot(page, "06-paid")
    erp = restaurant.erp_order()
    assert erp["status"] == "paid"
    assert restaurant.db.payment(restaurant.order_id)["amount_cents"] == FIRST_TOTAL


async def test_payment_lock_expiry_is_shown_and_recovers(phones: Phones, restaurant: Restaurant,
                                                         paying: PayingRestaurant):
    """With h5_payment_lock_seconds = 2 the lock runs out, the page says so, and one tap starts over."""
    config = await restaurant.patch_config(h5_payment_lock_seconds=2)
    assert config["h5_payment_lock_seconds"] == 2
    page = await phones.open()
    await live(page)
    await page.get_by_test_id("pay-button").click()
    await expect(page.get_by_test_id("pay-panel")).to_be_visible(timeout=WAIT_MS)
    assert int(await page.get_by_test_id("countdown").get_attribute("data-seconds")) <= 2
    lost = page.get_by_test_id("lost-panel")
    await expect(lost).to_be_visible(timeout=4000)
    await expect(lost).to_have_attribute("data-reason", "expired")
    await expect(page.get_by_test_id("lost-title")).to_have_text("支付已超时")
    await expect(page.get_by_test_id("lost-body")).to_have_text("支付已超时或已被其他终端接管,请重新获取订单后再支付")
    await shot(page, "07-payment-expired")
    await page.get_by_test_id("refetch").click()
    await expect(lost).to_be_hidden()
    await expect(page.get_by_test_id("pay-button")).to_be_enabled(timeout=WAIT_MS)
    await expect(page.locator('[data-testid="banner"]')).to_have_count(0)
    await shot(page, "08-recovered")
    # Starting over works: a new lock, and this time the diner pays in time.
    await page.get_by_test_id("pay-button").click()
    await expect(page.get_by_test_id("pay-panel")).to_be_visible(timeout=WAIT_MS)
    await pay_on_sandbox(page, paying)
    await expect(page.get_by_test_id("paid-screen")).to_be_visible(timeout=WAIT_MS)
    assert (await paying.paid_in_erp())["status"] == "paid"


async def test_terminal_forcing_the_payment_is_shown(phones: Phones, restaurant: Restaurant):
    """A cashier forcing the payment lock away mid-payment tells the diner at once and blocks paying."""
    page = await phones.open()
    await live(page)
    await page.get_by_test_id("pay-button").click()
    await expect(page.get_by_test_id("pay-panel")).to_be_visible(timeout=WAIT_MS)
    await restaurant.master.checkout(restaurant.order_id, force=True)
    lost = page.get_by_test_id("lost-panel")
    await expect(lost).to_be_visible(timeout=1000)
    await expect(lost).to_have_attribute("data-reason", "forced")
    await expect(page.get_by_test_id("lost-title")).to_have_text("支付已被店员接管")
    await shot(page, "09-payment-taken-over")
    await page.get_by_test_id("refetch").click()
    await expect(banner(page, "payment")).to_contain_text("订单正在其他机器/顾客端进行支付,请稍后再试")
    await expect(banner(page, "payment")).to_contain_text("收银台正在结账")
    await expect(page.get_by_test_id("pay-button")).to_be_disabled()
    await shot(page, "10-cashier-paying")


async def test_erp_master_offline_sends_the_diner_to_the_front_desk(phones: Phones, restaurant: Restaurant):
    """With the ERP master gone, 支付 answers with the front-desk message."""
    await restaurant.patch_config(erp_rpc_timeout_ms=500)
    page = await phones.open()
    await restaurant.master.stop()
    await page.get_by_test_id("pay-button").click()
    desk = page.get_by_test_id("frontdesk")
    await expect(desk).to_be_visible(timeout=WAIT_MS)
    await expect(page.get_by_test_id("frontdesk-text")).to_have_text("获取订单失败,请到前台结账")
    await expect(page.get_by_test_id("pay-panel")).to_be_hidden()
    await shot(page, "11-front-desk")


async def test_blocked_websocket_falls_back_to_polling(phones: Phones, restaurant: Restaurant):
    """With websockets refused the page polls GET /h5/table and still follows lock changes."""
    page = await phones.open(block_ws=True)
    conn = page.get_by_test_id("conn")
    await expect(conn).to_have_attribute("data-state", "polling", timeout=WAIT_MS)
    await expect(conn).to_be_visible()
    await restaurant.waiter.open_editor(restaurant.order_id)
    await expect(banner(page, "order")).to_be_visible(timeout=3000)
    await expect(page.get_by_test_id("pay-button")).to_be_disabled()
    await shot(page, "12-polling-waiter-editing")
    await restaurant.waiter.presettle(restaurant.order_id)
    await expect(banner(page, "presettle")).to_have_text("订单已预结,如需修改请联系服务员", timeout=3000)
    await expect(banner(page, "order")).to_have_count(0)
    await expect(page.get_by_test_id("add-rice")).to_be_disabled()
    await restaurant.waiter.unpresettle(restaurant.order_id)
    await expect(page.locator('[data-testid="banner"]')).to_have_count(0, timeout=3000)


async def test_reconnects_and_resumes_with_since(phones: Phones, restaurant: Restaurant):
    """A dropped socket shows the reconnecting state, and the page comes back with since=<last seq>."""
    page = await phones.new_page()
    urls: list[str] = []
    sockets = []
    refuse = asyncio.Event()

    async def handler(ws):
        urls.append(ws.url)
        if refuse.is_set():
            await ws.close()
            return
        ws.connect_to_server()
        sockets.append(ws)

    await page.route_web_socket(re.compile(r".*/api/v1/ws.*"), handler)
    await page.goto(restaurant.page_url)
    await live(page)
    await restaurant.waiter.open_editor(restaurant.order_id)
    await expect(banner(page, "order")).to_be_visible(timeout=1000)
    refuse.set()
    await sockets[-1].close()
    await expect(page.get_by_test_id("conn")).to_have_attribute("data-state", "reconnecting", timeout=WAIT_MS)
    await expect(page.get_by_test_id("conn")).to_have_text("连接已断开,正在重连…")
    await shot(page, "13-reconnecting")
    await restaurant.waiter.presettle(restaurant.order_id)
    refuse.clear()
    await live(page)
    await expect(banner(page, "presettle")).to_be_visible(timeout=WAIT_MS)
    since = [int(m.group(1)) for u in urls[1:] if (m := re.search(r"[?&]since=(\d+)", u))]
    assert since and all(s > 0 for s in since)


async def test_two_diners_one_pays_the_other_waits(phones: Phones, restaurant: Restaurant,
                                                   paying: PayingRestaurant):
    """While diner A pays, diner B sees someone paying and cannot pay; then B sees the order paid."""
    a = await phones.open()
    b = await phones.open()
    await live(a)
    await live(b)
    await a.get_by_test_id("pay-button").click()
    await expect(a.get_by_test_id("pay-panel")).to_be_visible(timeout=WAIT_MS)
    await expect(banner(b, "payment")).to_contain_text("同桌顾客正在支付", timeout=1000)
    await expect(b.get_by_test_id("pay-button")).to_be_disabled()
    await expect(b.get_by_test_id("add-rice")).to_be_disabled()
    await expect(banner(a, "payment")).to_have_count(0)
    await shot(b, "14-other-diner-paying")
    await pay_on_sandbox(a, paying)
    await expect(a.get_by_test_id("paid-screen")).to_be_visible(timeout=WAIT_MS)
    await expect(banner(b, "paid")).to_have_text("订单已支付", timeout=1000)
    await expect(b.get_by_test_id("pay-button")).to_be_disabled()
    await shot(b, "15-other-diner-sees-paid")
    assert restaurant.erp_order()["status"] == "paid"


async def test_english_switch_and_presettle_banner(phones: Phones, restaurant: Restaurant):
    """The language switch turns the page English, banners included, and the choice survives a reload."""
    page = await phones.open()
    await live(page)
    await page.get_by_test_id("lang-toggle").click()
    await expect(page.get_by_test_id("table-name")).to_have_text("Table 一号桌")
    await restaurant.waiter.presettle(restaurant.order_id)
    await expect(banner(page, "presettle")).to_have_text("The bill has been pre-settled; ask a waiter to change it",
                                                         timeout=1000)
    await expect(page.get_by_test_id("add-rice")).to_be_disabled()
    await expect(page.get_by_test_id("pay-button")).to_be_enabled()
    await shot(page, "16-english-presettled")
    await page.reload()
    await expect(banner(page, "presettle")).to_have_text("The bill has been pre-settled; ask a waiter to change it",
                                                         timeout=WAIT_MS)


STATE_CHECKS = """
async () => {
  const s = await import("/h5/static/js/state.js");
  const order = {order_id: "o1", table_id: "T1", version: 1, status: "open", total_cents: 100,
                 items: [{line_id: "l1", sku: "tea", name: "茶", qty: 1, unit_price_cents: 100, source: "erp"}]};
  const lock = (kind, fence, expires_at, is_me = false, role = "erp") =>
    ({kind, order_id: "o1", table_id: "T1", fence, version: 1, acquired_at: 0, expires_at, holder: {role, is_me}});
  const base = {...s.emptyState(), table: {table_id: "T1", name: "一号桌"}, order, seq: 10};
  const out = {};
  // A lock past expires_at never blocks, even before its lock.expired event.
  const edited = {...base, locks: [lock("order", 5, 1000)]};
  out.blocksBefore = s.derive(edited, 999).canPay;
  out.freeAfter = s.derive(edited, 1000).canPay;
  out.unknownClockTrustsServer = s.derive(edited, null).canPay;
  // Replayed events at or below seq are skipped; applying one twice is harmless.
  const ev = {type: "event", seq: 11, name: "lock.acquired", data: {lock: lock("presettle", 6, 5000)}};
  const once = s.applyEvent(base, ev, 0);
  out.replaySkipped = s.applyEvent(once, ev, 0) === once;
  out.presettle = s.derive(once, 0).banners.map((b) => b.kind).join();
  out.presettleCanPay = s.derive(once, 0).canPay;
  out.presettleCanAdd = s.derive(once, 0).canAdd;
  // My payment: forced → lost "forced"; countdown at zero → lost "expired".
  const grant = {lock: {...lock("payment", 7, 3000, true, "h5"), token: "secret"}, order};
  const paying = s.checkedOut(base, grant, "ref");
  out.tokenKept = paying.payment.token === "secret" && !JSON.stringify(paying.locks).includes("secret");
  const forcedEvent = {type: "event", seq: 12, name: "lock.forced",
                       data: {lock: lock("payment", 7, 3000, true, "h5"), by: {role: "erp", is_me: false}}};
  const forced = s.applyEvent(paying, forcedEvent, 100);
  out.forced = forced.lost;
  out.expired = s.expireLocally(paying, 3000).lost;
  out.notYet = s.expireLocally(paying, 2999).lost;
  // A table read sent before my checkout does not take my lock for lost; a read sent after does.
  const table = {store: {}, table: base.table, config: {}, order, locks: [], seq: 20};
  out.readBeforeGrant = s.fromTable(paying, table, 100, null).lost;
  out.readAfterGrant = s.fromTable(paying, table, 100, "secret").lost;
  // A read older than the events already applied changes no lock.
  out.staleRead = s.fromTable(once, {...table, seq: 10}, 0).locks.length;
  // An older version never replaces a newer one.
  out.keepsNewer = s.withOrder({...base, order: {...order, version: 3}}, {...order, version: 2}).order.version;
  return out;
}
"""


async def test_page_state_rules(browser: Browser, coordinator_url: str):
    """The page's pure state module: exact expiry, idempotent replay, lost-lock reasons, newest version wins."""
    page = await browser.new_page()
    try:
        await page.goto(f"{coordinator_url}/h5/static/app.css")
        result = await page.evaluate(STATE_CHECKS)
    finally:
        await page.close()
    assert result == {
        "blocksBefore": False, "freeAfter": True, "unknownClockTrustsServer": False, "replaySkipped": True, "presettle": "presettle",
        "presettleCanPay": True, "presettleCanAdd": False, "tokenKept": True, "forced": "forced",
        "expired": "expired", "notYet": None, "keepsNewer": 3, "readBeforeGrant": None,
        "readAfterGrant": "forced", "staleRead": 1,
    }
