"""Plugin: a restaurant that takes provider payments (``paying``): the restaurant's coordinator
(whose public URL is its own port, so the sandbox's notifications reach it), the sandbox provider
process, and the store's provider settings set through the admin API from the sandbox's
credentials; ``cashier_page_url``: the master terminal's waiter page (the browser tests' till). Helper: ``wechat_notification`` builds a notification signed as the provider signs it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from coordinator.payments.sandbox import crypto
from coordinator.payments.sandbox.keys import SandboxKeys
from coordinator.payments.sandbox.state import Trade
from coordinator.payments.sandbox.wechat import WechatWire
from coordinator.services import SERVICES
from erp_simulator.page_guard import LOGIN_PARAM, PageLogin
from erp_simulator.pages import build_page_app
from h5_client.client import H5Client
from tests.support.restaurant import Restaurant, eventually
from tests.support.sandbox import SandboxProcess

@dataclass
class PayingRestaurant:
    """``Restaurant`` + the sandbox provider set up for the store."""

    shop: Restaurant
    sandbox: SandboxProcess
    app: Any

    @property
    def services(self) -> Any:
        """The coordinator's Services (read-only inspection of records in assertions)."""
        return self.app.app[SERVICES]

    async def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Call an admin endpoint of the store (path after ``/admin/stores/{s}``)."""
        url = f"{self.shop.base_url}/api/v1/admin/stores/{self.shop.store_id}{path}"
        async with self.shop.admin.request(method, url, json=body) as r:
            text = await r.text()
            return r.status, (await r.json() if r.content_type == "application/json" else text)

    async def record(self, out_trade_no: str) -> dict[str, Any]:
        """The payment record as the admin API lists it."""
        status, body = await self.admin("GET", "/payments")
        assert status == 200, body
        return next(p for p in body["payments"] if p["out_trade_no"] == out_trade_no)

    async def claim_and_start(self, diner: H5Client, provider: str = "wechatpay") -> tuple[dict, dict, int]:
        """Check out and start paying: (checkout grant, started payment, the seq before)."""
        seq = (await diner.table())["seq"]
        grant = await diner.checkout()
        started = await diner.start_payment(grant["lock"]["token"], provider)
        if provider == "alipay":
            # An Alipay wap trade exists at the provider once the phone opens the pay URL.
            async with aiohttp.ClientSession() as http, http.get(started["pay_url"]) as r:
                assert r.status == 200, await r.text()
        return grant, started, seq

    async def paid_in_erp(self) -> dict[str, Any]:
        """Wait until the ERP database has the order paid; return it."""
        return await eventually(lambda: (o := self.shop.erp_order())["status"] == "paid" and o,
                                timeout=15, what="order paid in the ERP")


@pytest.fixture
async def paying(restaurant: Restaurant, sandbox: SandboxProcess, coordinator_server: Any) -> PayingRestaurant:
    """The restaurant with both sandbox providers configured through the admin API."""
    shop = PayingRestaurant(restaurant, sandbox, coordinator_server)
    for name in ("wechatpay", "alipay"):
        status, body = await shop.admin("PUT", f"/payments/providers/{name}", sandbox.credentials[name])
        assert status == 200, body
    return shop


@pytest.fixture
async def cashier_page_url(paying: PayingRestaurant) -> AsyncIterator[str]:
    """The master terminal's waiter page on a free port; yields its login link."""
    master = paying.shop.master
    login = PageLogin(master.terminal_id)
    runner = web.AppRunner(build_page_app(master, login), access_log=None, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/?{LOGIN_PARAM}={login.key}"
    finally:
        await runner.cleanup()


def wechat_notification(sandbox: SandboxProcess, *, out_trade_no: str, amount_cents: int, transaction_id: str,
                        signed_at: float | None = None, keys_dir: Any = None) -> tuple[dict[str, str], bytes]:
    """A TRANSACTION.SUCCESS notification built and signed as the sandbox provider builds it.

    With ``keys_dir`` the sandbox's keys of another data dir sign it (a forgery); with
    ``signed_at`` the signature carries that time (a captured notification replayed later).
    """
    wire = WechatWire(SandboxKeys.load_or_create(keys_dir or sandbox.data_dir))
    now_ms = int(time.time() * 1000)
    trade = Trade(provider="wechatpay", out_trade_no=out_trade_no, amount_cents=amount_cents, description="x",
                  notify_url="http://127.0.0.1:9/", return_url="http://127.0.0.1:9/", expires_at_ms=now_ms + 60_000,
                  created_ms=now_ms, token="t", fingerprint="f", trade_type="MWEB", state="paid",
                  transaction_id=transaction_id, paid_at_ms=now_ms)
    delivery = wire.payment_notification(trade)
    assert delivery is not None
    headers = dict(delivery.headers)
    if signed_at is not None:
        ts, nonce = str(int(signed_at)), headers["Wechatpay-Nonce"]
        headers["Wechatpay-Timestamp"] = ts
        headers["Wechatpay-Signature"] = crypto.sign(wire.platform_key, f"{ts}\n{nonce}\n".encode() + delivery.body + b"\n")
    return headers, delivery.body
