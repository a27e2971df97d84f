"""The admin console (/admin/) in headless Chromium against the real coordinator on a real port and
a real Redis. Each screen the admin meets is saved as a screenshot in artifacts/admin/.
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import zxingcpp
from PIL import Image
from playwright.async_api import Browser, Page, expect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from coordinator.app import build_app
from coordinator.core.models import OrderIn
from coordinator.core.rules import Kind
from coordinator.redis_embedded import free_port
from coordinator.services import SERVICES, Services
from coordinator.settings import Settings
from tests.support.app import ADMIN_TOKEN, order_body

pytestmark = pytest.mark.browser

SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "admin"
WAIT_MS = 5000
#: The restaurant's time zone: the console shows and reads times in the browser's zone.
ZONE = "Asia/Shanghai"
API = "/api/v1"


@pytest.fixture
def redis_url(redis_single_url: str) -> str:
    """The browser tests run on the single Redis (the cluster is covered by the API tests)."""
    return redis_single_url


@dataclass
class Coordinator:
    """The coordinator under test: its URL, its services (engine, auth) and an admin HTTP session."""

    url: str
    services: Services
    http: aiohttp.ClientSession

    async def call(self, method: str, path: str, status: int, token: str = ADMIN_TOKEN, **kw: Any) -> Any:
        """One API request under /api/v1 that must answer ``status``; its JSON body (None if empty)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.request(method, self.url + API + path, headers=headers, **kw) as response:
            assert response.status == status, await response.text()
            return await response.json() if response.content_type == "application/json" else None

    async def seed_store(self, store_id: str, name: str = "湖畔小馆") -> None:
        """Create a store through the admin API."""
        await self.call("PUT", f"/admin/stores/{store_id}", 200, json={"name": name})

    async def terminal(self, store_id: str, name: str, master: bool = False) -> dict[str, Any]:
        """Register a terminal through the admin API; its id and token."""
        return await self.call("POST", f"/admin/stores/{store_id}/terminals", 201, json={"name": name, "master": master})

    async def table(self, store_id: str, table_id: str, name: str) -> str:
        """Create a table through the admin API; its QR token."""
        table = await self.call("PUT", f"/admin/stores/{store_id}/tables/{table_id}", 200, json={"name": name})
        return qr_token(table["qr_url"])

    async def h5_session(self, qr: str, status: int = 201) -> dict[str, Any] | None:
        """A diner opens a session with a table's QR token (POST /h5/sessions, no auth)."""
        return await self.call("POST", "/h5/sessions", status, token="", json={"qr_token": qr})


def qr_token(link: str) -> str:
    """The QR token a table's H5 link carries."""
    return urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)["qr"][0]


@pytest.fixture
async def coordinator(aiohttp_server, redis_url: str, tmp_path: Path) -> AsyncIterator[Coordinator]:
    """The coordinator app on a real loopback port, its QR links pointing at that port."""
    port = free_port()
    settings = Settings(
        redis_url=redis_url, data_dir=tmp_path, admin_token=ADMIN_TOKEN,
        secret_key="test-secret-key-0123456789", public_url=f"http://127.0.0.1:{port}",
    )
    server = await aiohttp_server(build_app(settings), port=port)
    async with aiohttp.ClientSession() as http:
        yield Coordinator(str(server.make_url("")).rstrip("/"), server.app[SERVICES], http)


@pytest.fixture
async def console(browser: Browser, coordinator: Coordinator) -> AsyncIterator[Any]:
    """Factory: ``await console()`` → a new desktop tab on /admin/, signed in; no page may throw."""
    errors: list[str] = []
    contexts = []

    async def open_tab(sign_in: bool = True) -> Page:
        context = await browser.new_context(viewport={"width": 1360, "height": 900}, locale="zh-CN",
                                            timezone_id=ZONE, accept_downloads=True)
        await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=coordinator.url)
        contexts.append(context)
        page = await context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(coordinator.url + "/admin/")
        await expect(page.get_by_test_id("app")).to_have_attribute("data-ready", "1", timeout=WAIT_MS)
        if sign_in:
            await page.get_by_test_id("signin-token").fill(ADMIN_TOKEN)
            await page.get_by_test_id("signin-submit").click()
            await expect(page.get_by_test_id("shell")).to_be_visible(timeout=WAIT_MS)
        return page

    yield open_tab
    for context in contexts:
        await context.close()
    assert errors == [], f"uncaught errors in the console: {errors}"


async def shot(page: Page, name: str, *, full_page: bool = False) -> None:
    """Save a screenshot of the page as artifacts/admin/<name>.png."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)


async def go(page: Page, store_id: str, section: str) -> None:
    """Open one page of a store through the side navigation's hash route (no reload)."""
    await page.evaluate("(h) => { location.hash = h; }", f"#/stores/{store_id}/{section}")
    await expect(page.get_by_test_id(f"nav-{section}")).to_have_class("side-link active", timeout=WAIT_MS)


def decode_qr(png: bytes) -> str:
    """The text of the one QR code in a PNG."""
    results = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert len(results) == 1, results
    return results[0].text


def lock_rows(page: Page, **data: str):
    """The board's rows whose data attributes match (e.g. kind="payment", terminal_id=...)."""
    selector = "".join(f'[data-{k.replace("_", "-")}="{v}"]' for k, v in data.items())
    return page.locator(f'[data-testid="lock-row"]{selector}')


async def recv_text(ws: ClientConnection, timeout: float = 5.0) -> str:
    """The next text frame of a websocket (bounded)."""
    return await asyncio.wait_for(ws.recv(), timeout)


async def close_code(ws: ClientConnection, timeout: float = 5.0) -> int | None:
    """Read until the server closes the socket (bounded); the close code it sent."""
    async def drain() -> None:
        try:
            async for _ in ws:
                pass
        except ConnectionClosed:
            pass
    await asyncio.wait_for(drain(), timeout)
    return ws.close_code


# --- sign-in and language ------------------------------------------------------------------------


async def test_sign_in_keeps_the_token_for_the_tab_and_401_returns_to_sign_in(console, coordinator, uid):
    """A wrong token is refused, the right one is kept in sessionStorage across a reload, and a 401 later shows sign-in again."""
    await coordinator.seed_store(f"s-{uid}", "湖畔小馆")
    page = await console(sign_in=False)
    await expect(page.get_by_test_id("signin")).to_be_visible()
    await page.get_by_test_id("signin-token").fill("not-the-admin-token")
    await page.get_by_test_id("signin-submit").click()
    await expect(page.get_by_test_id("signin-error")).to_have_text("令牌无效,请重新输入", timeout=WAIT_MS)
    await shot(page, "01-signin-refused")

    await page.get_by_test_id("signin-token").fill(ADMIN_TOKEN)
    await page.get_by_test_id("signin-submit").click()
    await expect(page.get_by_test_id("shell")).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator(f'[data-testid="store-row"][data-store-id="s-{uid}"]')).to_be_visible(timeout=WAIT_MS)
    assert await page.evaluate("sessionStorage.getItem('tablelock.admin.token')") == ADMIN_TOKEN
    await page.reload()
    await expect(page.get_by_test_id("shell")).to_be_visible(timeout=WAIT_MS)
    await expect(page.get_by_test_id("breadcrumb")).to_have_text("管理员后台 — 店铺列表")
    await page.goto(coordinator.url + "/admin")  # redirected to /admin/, still signed in (same tab)
    assert page.url == coordinator.url + "/admin/"
    await expect(page.get_by_test_id("shell")).to_be_visible(timeout=WAIT_MS)

    # The token stops working (e.g. the operator changed it): the next request's 401 signs the tab out.
    await page.evaluate("sessionStorage.setItem('tablelock.admin.token', 'stale-token')")
    await page.reload()
    await expect(page.get_by_test_id("signin")).to_be_visible(timeout=WAIT_MS)
    await expect(page.get_by_test_id("signin-error")).to_have_text("登录已失效,请重新输入管理员令牌")
    assert await page.evaluate("sessionStorage.getItem('tablelock.admin.token')") is None


async def test_create_store_and_switch_language(console, coordinator, uid):
    """A store created in the form opens on its configuration, under 管理员后台 — 配置管理 — 店铺配置, and EN switches every label."""
    page = await console()
    store_id = f"s-{uid}"
    await page.get_by_test_id("store-id-input").fill("bad id!")
    await page.get_by_test_id("store-name-input").fill("湖畔小馆")
    await page.get_by_test_id("store-create").click()
    await expect(page.get_by_test_id("store-id-error")).to_be_visible()
    await page.get_by_test_id("store-id-input").fill(store_id)
    await page.get_by_test_id("store-create").click()
    await expect(page.get_by_test_id("breadcrumb")).to_have_text("管理员后台 — 配置管理 — 店铺配置", timeout=WAIT_MS)
    await expect(page.get_by_test_id("current-store")).to_have_text(f"湖畔小馆 · {store_id}")
    await expect(page.get_by_test_id("config-form")).to_have_attribute("data-ready", "1", timeout=WAIT_MS)
    await expect(page.get_by_test_id("cfg-strong_link_enabled")).to_be_checked()
    await expect(page.get_by_test_id("range-h5_payment_lock_seconds")).to_have_text("范围 1–300 秒 · 默认 15")
    await expect(page.get_by_test_id("cfg-h5_payment_lock_seconds")).to_have_value("15")
    stores = await coordinator.call("GET", "/admin/stores", 200)
    assert {"store_id": store_id, "name": "湖畔小馆"}.items() <= next(
        s for s in stores["stores"] if s["store_id"] == store_id).items()
    await shot(page, "02-config-zh", full_page=True)

    await page.get_by_test_id("lang-toggle").click()
    await expect(page.get_by_test_id("breadcrumb")).to_have_text("Admin console — Configuration — Store configuration",
                                                                 timeout=WAIT_MS)
    await expect(page.get_by_test_id("range-h5_payment_lock_seconds")).to_have_text("Range 1–300 s · default 15",
                                                                                   timeout=WAIT_MS)
    await expect(page.get_by_test_id("nav-board")).to_have_text("Live lock board")
    await shot(page, "03-config-en", full_page=True)
    await page.reload()
    await expect(page.get_by_test_id("lang-toggle")).to_have_text("中文", timeout=WAIT_MS)


# --- configuration -------------------------------------------------------------------------------


async def test_h5_payment_lock_set_to_5s_in_the_form_makes_new_h5_locks_last_5s(console, coordinator, uid):
    """Saving 5 s for the H5 payment lock makes the next H5 lock last exactly 5 s, counted down live on the board until it vanishes."""
    store_id = f"s-{uid}"
    await coordinator.seed_store(store_id)
    cashier = await coordinator.terminal(store_id, "收银台", master=True)
    qr = await coordinator.table(store_id, "T1", "一号桌")
    await coordinator.call("PUT", f"/stores/{store_id}/orders/o1", 200, token=cashier["token"], json=order_body())

    page = await console()
    await go(page, store_id, "config")
    await expect(page.get_by_test_id("config-form")).to_have_attribute("data-ready", "1", timeout=WAIT_MS)
    await page.get_by_test_id("cfg-h5_payment_lock_seconds").fill("5")
    await page.get_by_test_id("config-save").click()
    await expect(page.get_by_test_id("config-status")).to_have_attribute("data-state", "saved", timeout=WAIT_MS)
    await expect(page.get_by_test_id("config-status")).to_have_text("已保存,新获取的锁立即按新配置生效")
    await shot(page, "04-config-saved-h5-5s", full_page=True)
    assert (await coordinator.call("GET", f"/admin/stores/{store_id}/config", 200))["h5_payment_lock_seconds"] == 5

    # A diner scans the table's code and goes to pay: the H5 payment lock on the same Redis.
    session = await coordinator.h5_session(qr)
    engine = coordinator.services.engine
    diner = await coordinator.services.auth.authenticate(session["session_token"], await engine.now())
    await go(page, store_id, "board")
    lock, _ = await engine.acquire(store_id, "o1", diner.holder(), Kind.PAYMENT)
    assert lock["expires_at"] - lock["acquired_at"] == 5000

    row = lock_rows(page, kind="payment", holder_role="h5", order_id="o1")
    await expect(row).to_have_count(1, timeout=4000)
    await expect(row.get_by_test_id("lock-holder")).to_contain_text("顾客(扫码点餐)")
    await expect(row.get_by_test_id("lock-table")).to_have_text("T1")
    left = float((await row.get_by_test_id("lock-countdown").inner_text()).split()[0])
    assert 0 < left <= 5.0
    await shot(page, "05-board-h5-payment-lock")
    # It lasts 5 s, not the default 15: it leaves the board without a reload shortly after.
    await expect(row).to_have_count(0, timeout=5000 + 2500)
    assert await engine.now() - lock["acquired_at"] < 15_000
    await expect(page.get_by_test_id("board-empty")).to_be_visible()


async def test_invalid_durations_are_refused_with_the_range_in_the_page(console, coordinator, uid):
    """Out-of-range values are refused before sending with the range shown, and the server's 400 detail shows next to its field too."""
    store_id = f"s-{uid}"
    await coordinator.seed_store(store_id)
    page = await console()
    patches: list[str] = []
    page.on("request", lambda r: patches.append(r.url) if r.method == "PATCH" else None)
    await go(page, store_id, "config")
    await expect(page.get_by_test_id("config-form")).to_have_attribute("data-ready", "1", timeout=WAIT_MS)

    await page.get_by_test_id("cfg-h5_payment_lock_seconds").fill("0")
    await page.get_by_test_id("cfg-erp_rpc_timeout_ms").fill("50000")
    await page.get_by_test_id("config-save").click()
    await expect(page.get_by_test_id("error-h5_payment_lock_seconds")).to_have_text("须为 1 到 300 之间的整数(秒)")
    await expect(page.get_by_test_id("error-erp_rpc_timeout_ms")).to_have_text("须为 100 到 30000 之间的整数(毫秒)")
    await expect(page.get_by_test_id("config-status")).to_have_text("请先修正标红的字段")
    await shot(page, "06-config-refused-client", full_page=True)
    assert patches == []

    # A page whose range table is out of date still cannot store a bad value: the server refuses it
    # and the page shows the server's message, with the range, next to the field.
    await page.get_by_test_id("config-reset").click()
    await page.get_by_test_id("cfg-presettle_lock_seconds").evaluate("el => el.removeAttribute('max')")
    await page.get_by_test_id("cfg-presettle_lock_seconds").fill("100000")
    await page.get_by_test_id("cfg-order_lock_seconds").fill("60")
    await page.get_by_test_id("config-save").click()
    error = page.get_by_test_id("error-presettle_lock_seconds")
    await expect(error).to_have_attribute("data-source", "server", timeout=WAIT_MS)
    await expect(error).to_contain_text("服务器拒绝:presettle_lock_seconds must be between 30 and 86400 seconds")
    await expect(page.get_by_test_id("error-order_lock_seconds")).to_be_hidden()
    await shot(page, "07-config-refused-server", full_page=True)
    assert len(patches) == 1
    config = await coordinator.call("GET", f"/admin/stores/{store_id}/config", 200)
    assert config["presettle_lock_seconds"] == 1800 and config["order_lock_seconds"] == 300  # nothing changed


# --- terminals -----------------------------------------------------------------------------------


async def test_revoking_a_terminal_closes_its_socket_and_its_locks_leave_the_board_live(console, coordinator, uid):
    """A terminal registered in the console shows its token once, goes online with its socket; revoking it closes the socket 4401 and its lock leaves an open board without a reload."""
    store_id = f"s-{uid}"
    await coordinator.seed_store(store_id)
    await coordinator.terminal(store_id, "收银台", master=True)
    await coordinator.table(store_id, "T1", "一号桌")

    page = await console()
    await go(page, store_id, "terminals")
    await expect(page.get_by_test_id("terminal-master")).to_have_count(1, timeout=WAIT_MS)
    await page.get_by_test_id("term-name").fill("服务员小李")
    await page.get_by_test_id("term-register").click()
    panel = page.get_by_test_id("token-panel")
    await expect(panel).to_be_visible(timeout=WAIT_MS)
    await expect(page.get_by_test_id("token-warning")).to_contain_text("此令牌只显示这一次")
    token = await page.get_by_test_id("token-value").input_value()
    terminal_id = await panel.get_attribute("data-terminal-id")
    assert token.startswith(f"erp~{store_id}~{terminal_id}~")
    await page.get_by_test_id("token-copy").click()
    await expect(page.get_by_test_id("token-copy")).to_have_text("已复制")
    assert await page.evaluate("navigator.clipboard.readText()") == token
    await shot(page, "08-terminal-token-once")
    await page.get_by_test_id("token-dismiss").click()
    await expect(panel).to_have_count(0)
    listed = await coordinator.call("GET", f"/admin/stores/{store_id}/terminals", 200)
    assert token not in str(listed)

    row = page.locator(f'[data-testid="terminal-row"][data-terminal-id="{terminal_id}"]')
    await expect(row.get_by_test_id("terminal-online")).to_have_attribute("data-online", "0", timeout=WAIT_MS)
    ws_url = coordinator.url.replace("http://", "ws://") + f"{API}/ws?token={urllib.parse.quote(token)}"
    async with connect(ws_url, proxy=None, open_timeout=5) as ws:
        assert '"hello"' in await recv_text(ws)
        await expect(row.get_by_test_id("terminal-online")).to_have_attribute("data-online", "1", timeout=WAIT_MS)
        await expect(row.get_by_test_id("terminal-online")).to_have_text("在线")
        await shot(page, "09-terminals-online")

        await coordinator.call("PUT", f"/stores/{store_id}/orders/o1", 200, token=token, json=order_body())
        await coordinator.call("POST", f"/stores/{store_id}/orders/o1/locks", 201, token=token, json={"kind": "order"})
        board = await console()
        await go(board, store_id, "board")
        lock_row = lock_rows(board, terminal_id=terminal_id, kind="order")
        await expect(lock_row).to_have_count(1, timeout=WAIT_MS)
        await expect(lock_row.get_by_test_id("lock-holder")).to_contain_text("服务员小李")
        await expect(lock_row.get_by_test_id("lock-holder-online")).to_have_text("在线")
        await board.evaluate("window.__sameDocument = true")
        await shot(board, "10-board-before-revoke")

        # Cancelling the confirm dialog changes nothing.
        await row.get_by_test_id("terminal-revoke").click()
        await expect(page.get_by_test_id("confirm-text")).to_contain_text("服务员小李")
        await shot(page, "11-revoke-confirm")
        await page.get_by_test_id("confirm-cancel").click()
        await asyncio.sleep(0.3)
        await expect(row).to_have_count(1)

        await row.get_by_test_id("terminal-revoke").click()
        await page.get_by_test_id("confirm-ok").click()
        assert await close_code(ws) == 4401
    await expect(row).to_have_count(0, timeout=WAIT_MS)
    await expect(lock_row).to_have_count(0, timeout=3000)
    await expect(board.get_by_test_id("board-empty")).to_be_visible()
    assert await board.evaluate("window.__sameDocument === true")  # no reload happened
    await shot(board, "12-board-after-revoke")
    await coordinator.call("GET", f"/stores/{store_id}/locks", 401, token=token)


# --- tables and QR codes -------------------------------------------------------------------------


async def test_table_qr_from_the_page_opens_a_session_and_rotation_voids_it(console, coordinator, uid):
    """A table's QR code downloaded from the page decodes to an H5 link that opens a session; after rotation it no longer does and the new code does."""
    store_id = f"s-{uid}"
    await coordinator.seed_store(store_id)
    await coordinator.table(store_id, "T2", "二号桌")
    page = await console()
    await go(page, store_id, "tables")
    await page.get_by_test_id("table-id-input").fill("T1")
    await page.get_by_test_id("table-name-input").fill("一号桌")
    await page.get_by_test_id("table-create").click()
    card = page.locator('[data-testid="table-card"][data-table-id="T1"]')
    await expect(card.get_by_test_id("table-qr")).to_have_attribute("data-state", "ready", timeout=WAIT_MS)
    assert (await card.get_by_test_id("table-qr").get_attribute("src")).startswith("blob:")
    await expect(page.get_by_test_id("table-card")).to_have_count(2)
    await shot(page, "13-tables")

    async with page.expect_download(timeout=WAIT_MS) as info:
        await card.get_by_test_id("table-qr-download").click()
    download = await info.value
    assert download.suggested_filename == f"{store_id}-T1.png"
    link = decode_qr(Path(await download.path()).read_bytes())
    assert link.startswith(f"{coordinator.url}/h5/?qr=")
    assert link == await card.get_by_test_id("table-qr-url").inner_text()
    old = qr_token(link)
    session = await coordinator.h5_session(old)
    assert session["table_id"] == "T1" and session["store_id"] == store_id

    # The printable sheet holds every table's code; print media shows only the sheet.
    await page.get_by_test_id("print-preview").click()
    await expect(page.get_by_test_id("print-label")).to_have_count(2)
    await expect(page.locator('[data-testid="print-qr"][data-state="ready"]')).to_have_count(2, timeout=WAIT_MS)
    await page.emulate_media(media="print")
    await expect(page.get_by_test_id("tables-list")).to_be_hidden()
    await expect(page.get_by_test_id("side")).to_be_hidden()
    await shot(page, "14-print-sheet", full_page=True)
    await page.emulate_media(media="screen")
    await page.get_by_test_id("print-preview").click()

    await page.get_by_test_id("qr-rotate").click()
    await expect(page.get_by_test_id("confirm-text")).to_contain_text("已打印的二维码立即失效")
    await shot(page, "15-rotate-confirm")
    await page.get_by_test_id("confirm-ok").click()
    await expect(card.get_by_test_id("table-qr-url")).not_to_have_text(link, timeout=WAIT_MS)
    await expect(card.get_by_test_id("table-qr")).to_have_attribute("data-state", "ready", timeout=WAIT_MS)
    await coordinator.h5_session(old, status=401)
    png = base64.b64decode(await card.get_by_test_id("table-qr").evaluate(
        """async (img) => {
            const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
            let s = ""; for (const b of bytes) s += String.fromCharCode(b); return btoa(s);
        }"""))
    fresh = decode_qr(png)
    assert fresh != link and fresh == await card.get_by_test_id("table-qr-url").inner_text()
    await coordinator.h5_session(qr_token(fresh))


# --- reconciliation and audit ----------------------------------------------------------------------


async def test_force_during_payment_shows_in_reconciliation_with_its_trail(console, coordinator, uid):
    """A cashier forcing through a diner's payment lock puts the order on the reconciliation page with its audit trail."""
    store_id = f"s-{uid}"
    await coordinator.seed_store(store_id)
    cashier = await coordinator.terminal(store_id, "收银台", master=True)
    qr = await coordinator.table(store_id, "T1", "一号桌")
    await coordinator.call("PUT", f"/stores/{store_id}/orders/o1", 200, token=cashier["token"], json=order_body())
    await coordinator.call("PUT", f"/stores/{store_id}/orders/o2", 200, token=cashier["token"],
                           json=order_body("o2", table_id="T1"))
    session = await coordinator.h5_session(qr)
    engine = coordinator.services.engine
    diner = await coordinator.services.auth.authenticate(session["session_token"], await engine.now())
    await engine.acquire(store_id, "o1", diner.holder(), Kind.PAYMENT)
    locks = f"/stores/{store_id}/orders/o1/locks"
    denied = await coordinator.call("POST", locks, 409, token=cashier["token"], json={"kind": "payment"})
    assert denied["error"]["code"] == "PAYMENT_LOCKED" and denied["error"]["force_allowed"] is True
    await coordinator.call("POST", locks, 201, token=cashier["token"], json={"kind": "payment", "force": True})
    # o2 is paid cleanly: nothing to look at.
    lock = await coordinator.call("POST", f"/stores/{store_id}/orders/o2/locks", 201, token=cashier["token"],
                                  json={"kind": "payment"})
    await coordinator.call("POST", f"/stores/{store_id}/orders/o2/payments", 200, token=cashier["token"],
                           json={"token": lock["lock"]["token"], "amount_cents": 3800, "version": 1, "payment_ref": "p2"})

    page = await console()
    await go(page, store_id, "reconciliation")
    case = page.locator('[data-testid="recon-case"][data-order-id="o1"]')
    await expect(case).to_have_count(1, timeout=WAIT_MS)
    await expect(page.get_by_test_id("recon-case")).to_have_count(1)
    await expect(case.get_by_test_id("recon-case-title")).to_have_text("订单 o1 · 桌台 T1")
    await expect(case.get_by_test_id("recon-reason")).to_have_text("支付中被强制解锁")
    trail = case.get_by_test_id("trail-row")
    names = [await r.get_attribute("data-name") for r in await trail.all()]
    assert names == ["order.updated", "lock.acquired", "lock.forced", "lock.acquired"]
    forced = case.locator('[data-testid="trail-row"][data-name="lock.forced"]')
    await expect(forced.get_by_test_id("entry-event")).to_have_text("强制解锁")
    await expect(forced.get_by_test_id("entry-summary")).to_contain_text("支付锁 · 顾客(扫码点餐)")
    await expect(forced.get_by_test_id("entry-summary")).to_contain_text(f"操作方: 收银台 ({cashier['terminal_id']})")
    await expect(forced.get_by_test_id("entry-actor")).to_have_text(f"收银台 ({cashier['terminal_id']})")
    await shot(page, "16-reconciliation", full_page=True)

    await case.get_by_test_id("recon-open-audit").click()
    await expect(page.get_by_test_id("nav-audit")).to_have_class("side-link active", timeout=WAIT_MS)
    await expect(page.get_by_test_id("audit-order")).to_have_value("o1")
    await expect(page.get_by_test_id("audit-row")).to_have_count(4, timeout=WAIT_MS)
    await expect(page.locator('[data-testid="audit-row"][data-order-id="o2"]')).to_have_count(0)


async def test_audit_log_filters_by_order_kind_and_time_and_pages_with_next(console, coordinator, uid):
    """The audit page filters by order, lock kind and time window, and pages forward and back along the next cursor."""
    store_id = f"s-{uid}"
    await coordinator.seed_store(store_id)
    cashier = await coordinator.terminal(store_id, "收银台", master=True)
    await coordinator.table(store_id, "T1", "一号桌")
    engine = coordinator.services.engine
    holder = {"role": "erp", "terminal_id": cashier["terminal_id"], "name": "收银台"}
    for order_id in ("o1", "o2"):
        await engine.put_order(store_id, OrderIn.model_validate(order_body(order_id)), holder)
    for _ in range(30):  # 60 lock transitions on o1
        lock, _ = await engine.acquire(store_id, "o1", holder, Kind.ORDER)
        await engine.release(store_id, "o1", Kind.ORDER, lock["token"], holder)
    payment, _ = await engine.acquire(store_id, "o2", holder, Kind.PAYMENT)
    await engine.release(store_id, "o2", Kind.PAYMENT, payment["token"], holder)
    everything = []
    after = None
    while True:
        page_ = await coordinator.call("GET", f"/admin/stores/{store_id}/audit", 200,
                                       params={"limit": 500, **({"after": after} if after else {})})
        everything += page_["entries"]
        if not page_["next"]:
            break
        after = page_["next"]
    total = len(everything)
    assert total > 60

    page = await console()
    await go(page, store_id, "audit")
    rows = page.get_by_test_id("audit-row")
    await expect(rows).to_have_count(50, timeout=WAIT_MS)
    await expect(page.get_by_test_id("audit-page")).to_have_text("第 1 页")
    await expect(page.get_by_test_id("audit-prev")).to_be_disabled()
    first_id = await rows.first.get_attribute("data-id")
    await shot(page, "17-audit-page-1")
    await page.get_by_test_id("audit-next").click()
    await expect(page.get_by_test_id("audit-page")).to_have_text("第 2 页", timeout=WAIT_MS)
    await expect(rows).to_have_count(total - 50)
    assert await rows.first.get_attribute("data-id") == everything[50]["id"]
    await expect(page.get_by_test_id("audit-next")).to_be_disabled()
    await page.get_by_test_id("audit-prev").click()
    await expect(page.get_by_test_id("audit-page")).to_have_text("第 1 页", timeout=WAIT_MS)
    await expect(rows.first).to_have_attribute("data-id", first_id)

    await page.get_by_test_id("audit-kind").select_option("payment")
    await page.get_by_test_id("audit-search").click()
    await expect(rows).to_have_count(2, timeout=WAIT_MS)
    assert [await r.get_attribute("data-name") for r in await rows.all()] == ["lock.acquired", "lock.released"]
    await expect(page.locator('[data-testid="audit-row"][data-order-id="o2"]')).to_have_count(2)
    await shot(page, "18-audit-payment-filter")

    await page.get_by_test_id("audit-kind").select_option("")
    await page.get_by_test_id("audit-order").fill("o2")
    await page.get_by_test_id("audit-search").click()
    await expect(rows).to_have_count(3, timeout=WAIT_MS)  # order.updated + acquired + released

    # A window that starts after the last entry is empty; one ending before a later "from" is refused.
    later = datetime.fromtimestamp(time.time() + 3600, ZoneInfo(ZONE)).strftime("%Y-%m-%dT%H:%M:%S")
    earlier = datetime.fromtimestamp(time.time() - 3600, ZoneInfo(ZONE)).strftime("%Y-%m-%dT%H:%M:%S")
    await page.get_by_test_id("audit-from").fill(later)
    await page.get_by_test_id("audit-search").click()
    await expect(page.get_by_test_id("audit-empty")).to_be_visible(timeout=WAIT_MS)
    await page.get_by_test_id("audit-from").fill(earlier)
    await page.get_by_test_id("audit-search").click()
    await expect(rows).to_have_count(3, timeout=WAIT_MS)
    await page.get_by_test_id("audit-to").fill(earlier)
    await page.get_by_test_id("audit-from").fill(later)
    await page.get_by_test_id("audit-search").click()
    await expect(page.get_by_test_id("audit-error")).to_have_text("开始时间不能晚于结束时间")


async def test_split_bill_share_locks_show_side_by_side_on_the_board(console, coordinator, uid):
    """Two shares of one order held at once are two payment rows on the board, each with its share amount."""
    store_id = f"s-{uid}"
    await coordinator.seed_store(store_id)
    cashier = await coordinator.terminal(store_id, "收银台", master=True)
    waiter = await coordinator.terminal(store_id, "服务员B")
    await coordinator.table(store_id, "T1", "一号桌")
    await coordinator.call("PUT", f"/stores/{store_id}/orders/o1", 200, token=cashier["token"], json=order_body())
    for token, share in ((waiter["token"], {"lines": ["l2"]}), (cashier["token"], {"rest": True})):
        await coordinator.call("POST", f"/stores/{store_id}/orders/o1/shares", 201, token=token, json={"share": share})

    board = await console()
    await go(board, store_id, "board")
    rows = lock_rows(board, kind="payment", order_id="o1")
    await expect(rows).to_have_count(2, timeout=WAIT_MS)
    await expect(rows.get_by_test_id("lock-share")).to_have_count(2)
    assert sorted(await rows.get_by_test_id("lock-share").all_inner_texts()) == ["分单 ¥18.00", "分单 ¥20.00"]
    await shot(board, "20-board-split-bill")
