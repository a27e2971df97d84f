"""The waiter pages and SPEC §11 in headless Chromium: two waiter pages race to take a diner's
service request (one wins, the other is told who did), and the 换桌 dialog moves a party."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import Page, expect

from erp_simulator.simulator import Simulator
from h5_client.client import H5Client

pytestmark = pytest.mark.browser


@pytest.fixture
def redis_url(redis_single_url: str) -> str:
    """The pages need one Redis node (the coordinator tests cover the cluster)."""
    return redis_single_url




async def open_page(browser, sim: Simulator, name: str) -> Page:
    """The waiter page of the terminal called ``name``, loaded and showing table T1."""
    url = next(url for terminal, url in sim.pages if terminal.name == name)
    page = await browser.new_page(viewport={"width": 1100, "height": 800})
    await page.goto(url)
    await expect(page.get_by_test_id("table-T1")).to_be_visible(timeout=5000)
    return page


async def test_two_waiter_pages_race_to_take_a_service_request(sim, store, browser):
    """A diner's call pulses both inboxes; both waiters press 接单 at once: one takes it, the other is told who did."""
    a = await open_page(browser, sim, "服务员A")
    b = await open_page(browser, sim, "服务员B")
    async with await H5Client.open(store.base_url, store.qr) as diner:
        await diner.service_request("call_waiter")
    for page in (a, b):
        await expect(page.get_by_test_id("inbox")).to_have_attribute("data-open", "1", timeout=3000)
        await expect(page.get_by_test_id("inbox-take")).to_have_count(1)
    # Both presses at the same instant: a DOM click in each page, sent together. (Playwright's
    # click() waits for actionability per page; on a loaded machine the second one came after the
    # first had been taken and its button was gone.)
    press = "() => { const b = document.querySelector('[data-testid=inbox-take]'); if (b) b.click(); return !!b; }"
    assert await asyncio.gather(a.evaluate(press), b.evaluate(press)) == [True, True]
    for page in (a, b):
        await expect(page.get_by_test_id("inbox")).to_have_attribute("data-open", "0", timeout=3000)
        await expect(page.get_by_test_id("inbox-taken-by")).to_have_count(1)
    winner = (await a.get_by_test_id("inbox-taken-by").text_content()).split(" ", 1)[1]
    assert winner in ("服务员A", "服务员B")
    assert (await b.get_by_test_id("inbox-taken-by").text_content()).endswith(winner)
    loser = b if winner == "服务员A" else a
    await expect(loser.get_by_test_id("toast")).to_contain_text(winner, timeout=3000)
    await expect(loser.get_by_test_id("toast")).to_contain_text("已由")


async def test_the_move_dialog_moves_the_party_to_a_free_table(sim, browser):
    """换桌 on T1 offers the free tables; choosing 二号桌 moves the order there on every page."""
    a = await open_page(browser, sim, "服务员A")
    master = await open_page(browser, sim, "收银台")
    order_id = sim.db.table_order("T1")["order_id"]
    await a.get_by_test_id("btn-T1-move").click()
    await expect(a.get_by_test_id("pick-dialog")).to_be_visible()
    await a.get_by_test_id("pick-table").select_option("T2")
    await a.get_by_test_id("pick-ok").click()
    for page in (a, master):
        await expect(page.get_by_test_id("order-T2")).to_contain_text(order_id, timeout=3000)
        await expect(page.get_by_test_id("btn-T1-open")).to_be_visible()
    assert sim.db.order(order_id)["table_id"] == "T2"
