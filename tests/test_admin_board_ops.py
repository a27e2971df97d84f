"""The admin console's lock board and SPEC §11 in headless Chromium: ending a stuck lock with a
reason (the lock leaves the board, the audit log keeps the reason), ending a table's locks, and
the service requests shown on the board."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Page, expect

from coordinator.app import build_app
from coordinator.core.models import OrderIn
from coordinator.core.rules import Kind
from coordinator.services import SERVICES, Services
from coordinator.settings import Settings
from coordinator.store import keys
from coordinator.store.service_desk import ServiceDesk
from tests.support.app import ADMIN_TOKEN, order_body
from tests.support.redis_servers import free_port

pytestmark = pytest.mark.browser
WAIT_MS = 5000
ADMIN = {"role": "admin"}


@pytest.fixture
def redis_url(redis_single_url: str) -> str:
    """The browser tests run on the single Redis."""
    return redis_single_url


@pytest.fixture
async def running(aiohttp_server, redis_url: str, tmp_path) -> tuple[str, Services]:
    """The coordinator on a real loopback port, and its services."""
    port = free_port()
    settings = Settings(redis_url=redis_url, data_dir=tmp_path, admin_token=ADMIN_TOKEN,
                        secret_key="test-secret-key-0123456789", public_url=f"http://127.0.0.1:{port}")
    server = await aiohttp_server(build_app(settings), port=port)
    return str(server.make_url("")).rstrip("/"), server.app[SERVICES]


@pytest.fixture
async def board(browser: Browser, running, uid) -> AsyncIterator[tuple[Page, Services, str, dict]]:
    """A store with T1/o1 and T2/o2, terminal B holding o1's order lock and o2's presettle; its board open."""
    url, svc = running
    store_id = f"s-{uid}"
    await svc.directory.put_store(store_id, "店", ADMIN)
    b = await svc.directory.register_terminal(store_id, "服务员B", False, ADMIN)
    holder = {"role": "erp", "terminal_id": b.terminal_id, "name": "服务员B"}
    for order_id, table_id in (("o1", "T1"), ("o2", "T2")):
        await svc.directory.put_table(store_id, table_id, table_id, ADMIN)
        await svc.engine.put_order(store_id, OrderIn.model_validate(order_body(order_id, table_id)), holder)
    await svc.engine.acquire(store_id, "o1", holder, Kind.ORDER)
    await svc.engine.acquire(store_id, "o2", holder, Kind.PRESETTLE)
    context = await browser.new_context(viewport={"width": 1360, "height": 900}, locale="zh-CN")
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(url + "/admin/")
    await page.get_by_test_id("signin-token").fill(ADMIN_TOKEN)
    await page.get_by_test_id("signin-submit").click()
    await expect(page.get_by_test_id("shell")).to_be_visible(timeout=WAIT_MS)
    await page.evaluate("(h) => { location.hash = h; }", f"#/stores/{store_id}/board")
    await expect(page.locator('[data-testid="lock-row"]')).to_have_count(2, timeout=WAIT_MS)
    try:
        yield page, svc, store_id, holder
    finally:
        await context.close()
    assert errors == []


async def test_the_admin_ends_a_stuck_lock_with_a_reason(board):
    """结束锁 on o1's row with a reason: the row leaves the board, the audit log has lock.released admin with the reason."""
    page, svc, store_id, _ = board
    await page.get_by_test_id("release-reason").fill("平板没电了")
    await page.locator('[data-testid="lock-row"][data-order-id="o1"] [data-testid="release-lock"]').click()
    await page.get_by_test_id("confirm-ok").click()
    await expect(page.locator('[data-testid="lock-row"][data-order-id="o1"]')).to_have_count(0, timeout=WAIT_MS)
    await expect(page.locator('[data-testid="lock-row"]')).to_have_count(1)
    entries = await svc.redis.xrange(keys.audit(store_id))
    released = [json.loads(f[b"e"]) for _, f in entries if b'"lock.released"' in f[b"e"]]
    assert released[-1]["data"] | {"lock": None} == {"reason": "admin", "note": "平板没电了", "lock": None}


async def test_a_release_without_a_reason_is_not_sent(board):
    """Without a reason the console says so and nothing ends."""
    page, svc, store_id, _ = board
    await page.locator('[data-testid="lock-row"][data-order-id="o1"] [data-testid="release-lock"]').click()
    await expect(page.get_by_test_id("toast")).to_be_visible()
    assert len(await svc.engine.locks(store_id)) == 2


async def test_the_admin_ends_a_tables_locks_and_sees_service_requests(board):
    """Ending T2's locks clears its row; a diner's service request appears on the board, then as taken."""
    page, svc, store_id, holder = board
    await page.get_by_test_id("release-reason").fill("设备死机")
    await page.get_by_test_id("release-table-id").fill("T2")
    await page.get_by_test_id("release-table").click()
    await page.get_by_test_id("confirm-ok").click()
    await expect(page.locator('[data-testid="lock-row"][data-table-id="T2"]')).to_have_count(0, timeout=WAIT_MS)
    desk = ServiceDesk(svc.engine)
    request = await desk.request(store_id, "T1", "water", {"role": "h5", "session_id": "d1"})
    row = page.locator(f'[data-testid="service-row"][data-id="{request["id"]}"]')
    await expect(row).to_have_attribute("data-state", "open", timeout=WAIT_MS)
    await desk.take(store_id, request["id"], holder)
    await expect(row).to_have_attribute("data-state", "taken", timeout=WAIT_MS)
    await expect(row.get_by_test_id("service-state")).to_contain_text("服务员B")
