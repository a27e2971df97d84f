"""The diner's page and SPEC §11 in headless Chromium against the real coordinator and the ERP
simulator: a party moved to another table while its page is open follows it without scanning
again, and the service buttons reach a waiter whose taking shows "服务员已收到"."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Page, expect

from tests.support.restaurant import Restaurant, eventually

pytestmark = pytest.mark.browser
WAIT_MS = 5000


@pytest.fixture
def redis_url(redis_single_url: str) -> str:
    """The browser tests run on the single Redis (the cluster is covered by the API tests)."""
    return redis_single_url


@pytest.fixture
async def phone(browser: Browser, restaurant: Restaurant) -> AsyncIterator[Page]:
    """A diner's phone showing table T1's page, loaded, with its websocket live."""
    context = await browser.new_context(viewport={"width": 390, "height": 844}, locale="zh-CN", is_mobile=True)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(restaurant.page_url)
    await expect(page.get_by_test_id("app")).to_have_attribute("data-ready", "1", timeout=WAIT_MS)
    await expect(page.get_by_test_id("order-line")).to_have_count(2, timeout=WAIT_MS)
    await expect(page.get_by_test_id("conn")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    try:
        yield page
    finally:
        await context.close()
    assert errors == []


async def test_a_moved_party_sees_its_order_at_the_new_table(phone: Page, restaurant: Restaurant):
    """A waiter moves T1's party to T2 while the diner's page is open: the page shows 二号桌 with the same order, live."""
    api = f"{restaurant.base_url}/api/v1/admin/stores/{restaurant.store_id}"
    async with restaurant.admin.put(f"{api}/tables/T2", json={"name": "二号桌"}) as response:
        assert response.status == 200
    restaurant.db.put_table("T2", "二号桌")
    await expect(phone.get_by_test_id("table-name")).to_contain_text("一号桌")
    moved = await restaurant.waiter.client.move(restaurant.order_id, "T2")
    assert moved["order"]["table_id"] == "T2"
    await expect(phone.get_by_test_id("table-name")).to_contain_text("二号桌", timeout=WAIT_MS)
    await expect(phone.get_by_test_id("order-line")).to_have_count(2)
    await expect(phone.get_by_test_id("conn")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    # The socket now follows T2: a waiter's edit lock there shows the banner without a reload.
    await restaurant.waiter.client.take_lock(restaurant.order_id, "order")
    await expect(phone.locator('[data-testid="banner"][data-kind="order"]')).to_be_visible(timeout=WAIT_MS)


async def test_a_service_call_reaches_a_waiter_and_the_diner_sees_it_taken(phone: Page, restaurant: Restaurant):
    """Pressing 加水 reaches the waiter's inbox; the waiter taking it shows 服务员已收到 on the diner's page."""
    await phone.get_by_test_id("service-water").click()
    await expect(phone.get_by_test_id("service-state")).to_have_attribute("data-state", "sent", timeout=WAIT_MS)
    requests = await eventually(restaurant.waiter.client.service_requests, what="the request in the inbox")
    assert requests[0]["kind"] == "water" and requests[0]["table_id"] == "T1"
    await restaurant.waiter.client.take_service_request(requests[0]["id"])
    await expect(phone.get_by_test_id("service-state")).to_have_text("服务员已收到", timeout=WAIT_MS)
    await phone.get_by_test_id("service-water").click()
    await expect(phone.get_by_test_id("message")).to_have_attribute("data-code", "RATE_LIMITED", timeout=WAIT_MS)
