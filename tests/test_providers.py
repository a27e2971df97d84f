"""Payment provider adapters end to end against the sandbox provider process, over real HTTP."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from coordinator.payments.providers import (
    AlipayConfig,
    CreateOrder,
    PaymentNotification,
    PaymentProvider,
    ProviderRejected,
    ProviderUnreachable,
    RefundNotification,
    WechatPayConfig,
    build_provider,
)
from tests.support.sandbox import (
    NotifyServer,
    SandboxProcess,
)

TIMEOUT = 1.0


def _adapter(sb: SandboxProcess, name: str, clock: Any = time.time, **override: Any) -> PaymentProvider:
    raw = {**sb.credentials[name], **override}
    config = WechatPayConfig.model_validate(raw) if name == "wechatpay" else AlipayConfig.model_validate(raw)
    return build_provider(config, http_timeout=TIMEOUT, clock=clock)


@pytest.fixture(params=["wechatpay", "alipay"])
async def provider(request: pytest.FixtureRequest, sandbox: SandboxProcess, notify_server: NotifyServer) -> AsyncIterator[PaymentProvider]:
    """The adapter under test (each provider in turn), wired to the notify server."""
    adapter = _adapter(sandbox, request.param)
    notify_server.provider = adapter
    yield adapter
    await adapter.aclose()


def _order(ns: NotifyServer, amount: int = 1234, seconds: float = 120) -> CreateOrder:
    return CreateOrder(
        out_trade_no="TL" + secrets.token_hex(8), amount_cents=amount, description="桌 7 订单",
        expires_at=int((time.time() + seconds) * 1000), notify_url=ns.url, return_url="http://127.0.0.1:9/back",
    )


async def _open(provider: PaymentProvider, ns: NotifyServer, **kw: Any) -> CreateOrder:
    """Create a provider order and open its pay URL as the phone does (Alipay creates the trade then)."""
    order = _order(ns, **kw)
    created = await provider.create(order)
    assert created.pay_url is not None
    async with aiohttp.ClientSession() as s, s.get(created.pay_url, allow_redirects=False) as r:
        assert r.status in (200, 302), await r.text()
    return order


async def test_paid_notification_verifies_and_query_shows_paid(provider: PaymentProvider, sandbox: SandboxProcess, notify_server: NotifyServer) -> None:
    """A diner's payment reaches notify_url as a notification the adapter verifies, with the same amount and transaction as query."""
    order = await _open(provider, notify_server, amount=12345)
    status, _ = await sandbox.pay(order.out_trade_no, outcome="paid")
    assert status == 200
    [got] = await notify_server.wait_for(1)
    assert isinstance(got.result, PaymentNotification), got.result
    assert (got.result.out_trade_no, got.result.status, got.result.amount_cents) == (order.out_trade_no, "paid", 12345)
    payment = await provider.query(order.out_trade_no)
    assert (payment.status, payment.amount_cents, payment.transaction_id) == ("paid", 12345, got.result.transaction_id)
    assert payment.paid_at is not None and abs(payment.paid_at - time.time() * 1000) < 5000


async def test_close_unpaid_order(provider: PaymentProvider, sandbox: SandboxProcess, notify_server: NotifyServer) -> None:
    """Closing an unpaid order makes query answer closed and a later payment is refused."""
    order = await _open(provider, notify_server)
    await provider.close(order.out_trade_no)
    assert (await provider.query(order.out_trade_no)).status == "closed"
    await sandbox.pay(order.out_trade_no, outcome="paid")
    assert (await sandbox.trade(order.out_trade_no))["state"] == "closed"


async def test_alipay_close_of_an_unopened_trade_is_a_no_op(sandbox: SandboxProcess, notify_server: NotifyServer) -> None:
    """An Alipay trade exists only once the phone opens the URL: close before that succeeds and query reads pending."""
    alipay = _adapter(sandbox, "alipay")
    order = _order(notify_server)
    await alipay.create(order)
    await alipay.close(order.out_trade_no)
    assert (await alipay.query(order.out_trade_no)).status == "pending"
    await alipay.aclose()


async def test_refund_reaches_succeeded(provider: PaymentProvider, sandbox: SandboxProcess, notify_server: NotifyServer) -> None:
    """A partial then a full refund end succeeded at query_refund, a repeat is the same refund, and the trade reads refunded."""
    order = await _open(provider, notify_server, amount=1000)
    await sandbox.pay(order.out_trade_no, outcome="paid")
    await notify_server.wait_for(1)
    first = await provider.refund(order.out_trade_no, "RF" + order.out_trade_no, 400, 1000, "surplus")
    assert first.status in ("processing", "succeeded") and first.refund_cents == 400
    for _ in range(50):
        done = await provider.query_refund(first.out_refund_no, out_trade_no=order.out_trade_no)
        if done.status == "succeeded":
            break
        await asyncio.sleep(0.1)
    assert (done.status, done.refund_cents) == ("succeeded", 400) and done.succeeded_at is not None
    again = await provider.refund(order.out_trade_no, "RF" + order.out_trade_no, 400, 1000, "surplus")
    assert again.out_refund_no == first.out_refund_no and again.refund_cents == 400
    with pytest.raises(ProviderRejected):
        await provider.refund(order.out_trade_no, "RX" + order.out_trade_no, 601, 1000, "too much")
    await provider.refund(order.out_trade_no, "RY" + order.out_trade_no, 600, 1000, "rest")
    assert len((await sandbox.trade(order.out_trade_no))["refunds"]) == 2
    assert (await provider.query(order.out_trade_no)).status == "refunded"


async def test_wechat_refund_notification_verifies(sandbox: SandboxProcess, notify_server: NotifyServer) -> None:
    """WeChat's REFUND.SUCCESS notification decrypts to a RefundNotification with the refunded amount."""
    wechat = _adapter(sandbox, "wechatpay")
    notify_server.provider = wechat
    order = await _open(wechat, notify_server, amount=500)
    await sandbox.pay(order.out_trade_no)
    await wechat.refund(order.out_trade_no, "RF" + order.out_trade_no, 500, 500, "cancel")
    got = await notify_server.wait_for(2)
    refund = got[1].result
    assert isinstance(refund, RefundNotification), refund
    assert (refund.out_refund_no, refund.status, refund.refund_cents) == ("RF" + order.out_trade_no, "succeeded", 500)
    await wechat.aclose()


async def test_duplicate_notification_arrives_twice(provider: PaymentProvider, sandbox: SandboxProcess, notify_server: NotifyServer) -> None:
    """The duplicate switch delivers the same verified notification twice (the receiver must be idempotent)."""
    order = await _open(provider, notify_server)
    await sandbox.pay(order.out_trade_no, notify="duplicate")
    a, b = await notify_server.wait_for(2)
    assert isinstance(a.result, PaymentNotification) and isinstance(b.result, PaymentNotification)
    assert a.result.transaction_id == b.result.transaction_id and a.result.event_id == b.result.event_id


async def test_lost_notification_query_still_paid(provider: PaymentProvider, sandbox: SandboxProcess, notify_server: NotifyServer) -> None:
    """A lost notification never arrives, yet query answers paid."""
    order = await _open(provider, notify_server)
    await sandbox.pay(order.out_trade_no, notify="lost")
    await asyncio.sleep(0.5)
    assert notify_server.received == []
    assert (await provider.query(order.out_trade_no)).status == "paid"


async def test_late_notification_and_slow_payer(provider: PaymentProvider, sandbox: SandboxProcess, notify_server: NotifyServer) -> None:
    """A slow payer pays after pay_delay_ms, and a late notification arrives only after delay_ms."""
    order = await _open(provider, notify_server)
    status, _ = await sandbox.pay(order.out_trade_no, notify="late", delay_ms=800, pay_delay_ms=300)
    assert status == 202
    assert (await provider.query(order.out_trade_no)).status == "pending"
    await asyncio.sleep(0.6)
    assert (await provider.query(order.out_trade_no)).status == "paid"
    assert notify_server.received == []
    [got] = await notify_server.wait_for(1)
    assert isinstance(got.result, PaymentNotification)


async def test_failed_payment(provider: PaymentProvider, sandbox: SandboxProcess, notify_server: NotifyServer) -> None:
    """A failed payment sends no notification; WeChat reads failed (PAYERROR), Alipay keeps waiting for the buyer."""
    order = await _open(provider, notify_server)
    await sandbox.pay(order.out_trade_no, outcome="failed")
    await asyncio.sleep(0.3)
    assert notify_server.received == []
    expected = "failed" if provider.name == "wechatpay" else "pending"
    assert (await provider.query(order.out_trade_no)).status == expected
    assert (await sandbox.trade(order.out_trade_no))["failed_attempts"] == 1


async def test_refused_ack_is_retried(provider: PaymentProvider, sandbox: SandboxProcess, notify_server: NotifyServer) -> None:
    """A notification the merchant does not acknowledge is delivered again with back-off."""
    notify_server.refuse_first = 1
    order = await _open(provider, notify_server)
    await sandbox.pay(order.out_trade_no)
    await notify_server.wait_for(2)
    deliveries = (await sandbox.trade(order.out_trade_no))["deliveries"]
    assert [d["ok"] for d in deliveries] == [False, True]


async def test_order_expires_by_itself(provider: PaymentProvider, sandbox: SandboxProcess, notify_server: NotifyServer) -> None:
    """A trade still unpaid at time_expire closes by itself and can no longer be paid."""
    order = await _open(provider, notify_server, seconds=1.5)
    await asyncio.sleep(1.8)
    assert (await provider.query(order.out_trade_no)).status == "closed"
    await sandbox.pay(order.out_trade_no)
    assert (await provider.query(order.out_trade_no)).status == "closed"


@pytest.mark.parametrize("mode", ["drop", "503", "hang"])
async def test_unreachable_provider(provider: PaymentProvider, sandbox: SandboxProcess, notify_server: NotifyServer, mode: str) -> None:
    """With the provider down (connection dropped, 503, or no answer) every call raises ProviderUnreachable within the timeout."""
    order = await _open(provider, notify_server)
    await sandbox.control(mode=mode)
    try:
        started = time.monotonic()
        with pytest.raises(ProviderUnreachable):
            await provider.query(order.out_trade_no)
        with pytest.raises(ProviderUnreachable):
            await provider.close(order.out_trade_no)
        assert time.monotonic() - started < 2 * TIMEOUT + 0.5
    finally:
        await sandbox.control(mode="normal")
    assert (await provider.query(order.out_trade_no)).status == "pending"


async def test_request_signed_with_another_key_is_rejected(provider: PaymentProvider, sandbox: SandboxProcess, notify_server: NotifyServer) -> None:
    """The sandbox checks the merchant's request signature the way the provider does."""
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    field = "merchant_private_key" if provider.name == "wechatpay" else "app_private_key"
    impostor = _adapter(sandbox, provider.name, **{field: pem})
    with pytest.raises(ProviderRejected) as err:
        await impostor.query("TL" + secrets.token_hex(8))
    assert err.value.code == ("SIGN_ERROR" if provider.name == "wechatpay" else "isv.invalid-signature")
    await impostor.aclose()


async def test_answer_not_signed_by_the_platform_is_not_believed(provider: PaymentProvider, sandbox: SandboxProcess, notify_server: NotifyServer) -> None:
    """An answer whose signature does not match the configured platform/Alipay key is treated as no answer."""
    order = await _open(provider, notify_server)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = other.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    field = "platform_public_key" if provider.name == "wechatpay" else "alipay_public_key"
    doubter = _adapter(sandbox, provider.name, **{field: pub})
    with pytest.raises(ProviderUnreachable):
        await doubter.query(order.out_trade_no)
    await doubter.aclose()
