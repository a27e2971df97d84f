"""Notification verification (forged, tampered, re-encrypted, stale), amounts, secrets and sandbox guards."""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import ValidationError

from coordinator.payments.providers import (
    AlipayConfig,
    CreateOrder,
    InvalidNotification,
    PaymentNotification,
    WechatPayConfig,
    build_provider,
)
from coordinator.payments.providers.alipay import fen_to_yuan, yuan_to_fen
from tests.support.sandbox import (
    NotifyServer,
    Received,
    SandboxProcess,
    start_sandbox,
    stop_sandbox,
)

OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _config(sb: SandboxProcess, name: str) -> WechatPayConfig | AlipayConfig:
    raw = sb.credentials[name]
    return WechatPayConfig.model_validate(raw) if name == "wechatpay" else AlipayConfig.model_validate(raw)


def _sign(key: rsa.RSAPrivateKey, message: bytes) -> str:
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def _sandbox_key(sb: SandboxProcess, name: str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(sb.keys()[name].encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


async def _capture(sb: SandboxProcess, ns: NotifyServer, name: str, amount: int = 1234) -> Received:
    """Pay a fresh order and return the notification as notify_url received it."""
    adapter = build_provider(_config(sb, name), http_timeout=2)
    ns.provider = adapter
    order = CreateOrder(out_trade_no="TL" + secrets.token_hex(8), amount_cents=amount, description="桌 3",
                        expires_at=int((time.time() + 120) * 1000), notify_url=ns.url, return_url="http://127.0.0.1:9/r")
    created = await adapter.create(order)
    assert created.pay_url is not None
    async with aiohttp.ClientSession() as s, s.get(created.pay_url, allow_redirects=False) as r:
        assert r.status in (200, 302)
    await sb.pay(order.out_trade_no)
    [got] = await ns.wait_for(1)
    await adapter.aclose()
    assert isinstance(got.result, PaymentNotification), got.result
    return got


def _wechat_resign(sb: SandboxProcess, body: bytes, *, key: rsa.RSAPrivateKey | None = None, ts: int | None = None) -> dict[str, str]:
    stamp, nonce = str(ts or int(time.time())), secrets.token_hex(8)
    sig = _sign(key or _sandbox_key(sb, "platform_private_pem"), f"{stamp}\n{nonce}\n".encode() + body + b"\n")
    return {"Wechatpay-Timestamp": stamp, "Wechatpay-Nonce": nonce, "Wechatpay-Signature": sig,
            "Wechatpay-Serial": sb.credentials["wechatpay"]["platform_serial_no"]}


def _reencrypt(body: bytes, apiv3_key: bytes, change: dict[str, Any] | None = None, *, real_key: bytes) -> bytes:
    event = json.loads(body)
    res = event["resource"]
    plain = json.loads(AESGCM(real_key).decrypt(res["nonce"].encode(), base64.b64decode(res["ciphertext"]), res["associated_data"].encode()))
    plain.update(change or {})
    nonce = secrets.token_hex(6)
    res.update(nonce=nonce, ciphertext=base64.b64encode(AESGCM(apiv3_key).encrypt(nonce.encode(), json.dumps(plain).encode(), res["associated_data"].encode())).decode())
    return json.dumps(event).encode()


async def test_wechat_forged_tampered_reencrypted_and_stale_notifications_are_invalid(sandbox: SandboxProcess, notify_server: NotifyServer) -> None:
    """Only a notification signed by the platform key, fresh, unmodified and encrypted under our APIv3 key is accepted."""
    got = await _capture(sandbox, notify_server, "wechatpay")
    config = _config(sandbox, "wechatpay")
    assert isinstance(config, WechatPayConfig)
    wechat = build_provider(config, http_timeout=1)
    real_key = config.apiv3_key.get_secret_value().encode()
    assert wechat.verify_notification(got.headers, got.body) == got.result
    # The forging harness is right: re-encrypted under the real key and re-signed by the platform, it passes.
    good = _reencrypt(got.body, real_key, real_key=real_key)
    assert wechat.verify_notification(_wechat_resign(sandbox, good), good).transaction_id == got.result.transaction_id
    cases: dict[str, tuple[dict[str, str], bytes]] = {
        "forged signature": (_wechat_resign(sandbox, got.body, key=OTHER_KEY), got.body),
        "tampered body": (got.headers, got.body.replace(b'"id": "EV-', b'"id": "EX-')),
        "wrong serial": ({**got.headers, "Wechatpay-Serial": "PUB_KEY_ID_0000000000"}, got.body),
        "missing signature": ({k: v for k, v in got.headers.items() if k != "Wechatpay-Signature"}, got.body),
    }
    wrong = _reencrypt(got.body, secrets.token_hex(16).encode(), real_key=real_key)
    cases["re-encrypted with another key"] = (_wechat_resign(sandbox, wrong), wrong)
    other_mch = _reencrypt(got.body, real_key, {"mchid": "1900000001"}, real_key=real_key)
    cases["another merchant"] = (_wechat_resign(sandbox, other_mch), other_mch)
    stale = _wechat_resign(sandbox, got.body, ts=int(time.time()) - 301)
    cases["stale timestamp"] = (stale, got.body)
    for name, (headers, body) in cases.items():
        with pytest.raises(InvalidNotification):
            wechat.verify_notification(headers, body)
            pytest.fail(f"accepted: {name}")
    later = build_provider(config, http_timeout=1, clock=lambda: time.time() + 301)
    with pytest.raises(InvalidNotification):
        later.verify_notification(got.headers, got.body)


def _alipay_resign(form: dict[str, str], key: rsa.RSAPrivateKey) -> bytes:
    form = {k: v for k, v in form.items() if k != "sign"}
    content = "&".join(f"{k}={v}" for k, v in sorted(form.items()) if k not in ("sign", "sign_type") and v != "")
    return urlencode({**form, "sign": _sign(key, content.encode())}).encode()


async def test_alipay_forged_and_tampered_notifications_are_invalid(sandbox: SandboxProcess, notify_server: NotifyServer) -> None:
    """Only a form signed by the Alipay key, unmodified and for our app is accepted; its amount converts exactly."""
    got = await _capture(sandbox, notify_server, "alipay", amount=12345)
    assert got.result.amount_cents == 12345
    alipay = build_provider(_config(sandbox, "alipay"), http_timeout=1)
    form = dict(parse_qsl(got.body.decode()))
    assert form["total_amount"] == "123.45"
    key = _sandbox_key(sandbox, "alipay_private_pem")
    one_fen = _alipay_resign({**form, "total_amount": "0.01"}, key)
    assert alipay.verify_notification({}, one_fen).amount_cents == 1
    cases = {
        "forged signature": _alipay_resign(form, OTHER_KEY),
        "tampered amount": urlencode({**form, "total_amount": "0.01"}).encode(),
        "another app": _alipay_resign({**form, "app_id": "2021000000000000"}, key),
        "another seller": _alipay_resign({**form, "seller_id": "2088000000000000"}, key),
        "not RSA2": urlencode({**form, "sign_type": "RSA"}).encode(),
        "float amount": _alipay_resign({**form, "total_amount": "1e2"}, key),
        "not a form": b"\xff\xfe",
    }
    for name, body in cases.items():
        with pytest.raises(InvalidNotification):
            alipay.verify_notification({}, body)
            pytest.fail(f"accepted: {name}")
    assert alipay.ack(True) == (200, "text/plain; charset=utf-8", b"success")


@pytest.mark.parametrize(("text", "fen"), [("0.01", 1), ("123.45", 12345), ("0.10", 10), ("0.1", 10), ("88", 8800), ("19999999.99", 1999999999)])
def test_alipay_yuan_converts_to_fen_exactly(text: str, fen: int) -> None:
    """Alipay's yuan strings convert to fen exactly and back (no float on the way)."""
    assert yuan_to_fen(text) == fen
    assert yuan_to_fen(fen_to_yuan(fen)) == fen


@pytest.mark.parametrize("text", ["1.234", "-1.00", "1e3", "", " 1.00", "01.00", "NaN", "1,00"])
def test_alipay_yuan_rejects_what_is_not_an_amount(text: str) -> None:
    """Anything but a plain non-negative two-decimal yuan string is refused."""
    with pytest.raises(ValueError):
        yuan_to_fen(text)


def test_secrets_never_in_repr_or_dump(sandbox: SandboxProcess) -> None:
    """Private keys and the APIv3 key appear in no repr, str or JSON dump of a config or adapter."""
    for name in ("wechatpay", "alipay"):
        config = _config(sandbox, name)
        secret_values = [v for k, v in sandbox.credentials[name].items() if k in ("merchant_private_key", "apiv3_key", "app_private_key")]
        adapter = build_provider(config, http_timeout=1)
        # A PEM's first body line is enough to recognise a leaked key.
        needles = [v.splitlines()[1] if "\n" in v else v for v in secret_values]
        assert len(needles) == (2 if name == "wechatpay" else 1)
        for text in (repr(config), str(config), config.model_dump_json(), repr(adapter)):
            for needle in needles:
                assert needle not in text


def test_config_is_strict(sandbox: SandboxProcess) -> None:
    """A short APIv3 key, an unknown field or a non-URL base is refused when the settings are saved."""
    raw = sandbox.credentials["wechatpay"]
    for bad in ({"apiv3_key": "short"}, {"extra": 1}, {"base_url": "javascript:alert(1)"}, {"mchid": 1900}):
        with pytest.raises(ValidationError):
            WechatPayConfig.model_validate({**raw, **bad})


async def test_sandbox_control_needs_the_token_and_loopback(sandbox: SandboxProcess) -> None:
    """The control API refuses a missing token, and credentials refuse a non-loopback Host (DNS rebinding)."""
    async with aiohttp.ClientSession() as s:
        async with s.post(sandbox.url + "/sandbox/control", json={"mode": "drop"}) as r:
            assert r.status == 401
        async with s.get(sandbox.url + "/sandbox/credentials", headers={"Host": "evil.example"}) as r:
            assert r.status == 403
    assert (await sandbox.control())["mode"] == "normal"


async def test_pay_page_is_locked_down(sandbox: SandboxProcess, notify_server: NotifyServer) -> None:
    """The pay page sends a CSP without inline script, and refuses to redirect the phone to a javascript: URL."""
    wechat = build_provider(_config(sandbox, "wechatpay"), http_timeout=2)
    order = CreateOrder(out_trade_no="TL" + secrets.token_hex(8), amount_cents=250, description="<b>x</b>",
                        expires_at=int((time.time() + 60) * 1000), notify_url=notify_server.url, return_url="https://shop.example/r")
    created = await wechat.create(order)
    assert created.pay_url is not None and "redirect_url=https%3A%2F%2Fshop.example%2Fr" in created.pay_url
    token = created.prepay_id
    async with aiohttp.ClientSession() as s:
        async with s.get(created.pay_url) as r:
            csp = r.headers["Content-Security-Policy"]
            page = await r.text()
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "<script>" not in page
        async with s.get(f"{sandbox.url}/pay/api/{token}") as r:
            assert (await r.json())["amount_yuan"] == "2.50"
        async with s.post(f"{sandbox.url}/pay/api/{token}", json={"choice": "cancel", "redirect_url": "javascript:alert(1)"}) as r:
            assert (await r.json())["redirect"] == ""
        async with s.post(f"{sandbox.url}/pay/api/{token}", json={"choice": "cancel", "redirect_url": "https://shop.example/r"}) as r:
            assert (await r.json())["redirect"] == "https://shop.example/r"
    await wechat.aclose()


async def test_sandbox_restart_keeps_keys_and_trades(tmp_path: Any, notify_server: NotifyServer) -> None:
    """A sandbox restarted on the same data dir keeps its keys (credentials.json 0600) and its paid trades."""
    first = start_sandbox(tmp_path)
    try:
        got = await _capture(first, notify_server, "wechatpay")
    finally:
        assert stop_sandbox(first.proc) == 0
    assert (tmp_path / "credentials.json").stat().st_mode & 0o777 == 0o600
    second = start_sandbox(tmp_path)
    try:
        assert second.credentials["wechatpay"]["merchant_private_key"] == first.credentials["wechatpay"]["merchant_private_key"]
        wechat = build_provider(_config(second, "wechatpay"), http_timeout=2)
        payment = await wechat.query(got.result.out_trade_no)
        assert (payment.status, payment.transaction_id) == ("paid", got.result.transaction_id)
        await wechat.aclose()
    finally:
        stop_sandbox(second.proc)


async def test_wechat_jsapi_order_returns_signed_bridge_parameters(sandbox: SandboxProcess, notify_server: NotifyServer) -> None:
    """With a payer openid the order is a JSAPI order whose paySign the merchant key signed over appId/timeStamp/nonceStr/package."""
    config = _config(sandbox, "wechatpay")
    assert isinstance(config, WechatPayConfig)
    wechat = build_provider(config, http_timeout=2)
    order = CreateOrder(out_trade_no="TL" + secrets.token_hex(8), amount_cents=99, description="桌 1",
                        expires_at=int((time.time() + 60) * 1000), notify_url=notify_server.url,
                        return_url="http://127.0.0.1:9/r", payer_openid="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o")
    created = await wechat.create(order)
    await wechat.aclose()
    assert created.pay_url is None and created.jsapi is not None and created.prepay_id
    j = created.jsapi
    assert j.package == f"prepay_id={created.prepay_id}" and j.appId == config.appid
    key = serialization.load_pem_private_key(config.merchant_private_key.get_secret_value().encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    key.public_key().verify(base64.b64decode(j.paySign), f"{j.appId}\n{j.timeStamp}\n{j.nonceStr}\n{j.package}\n".encode(),
                            padding.PKCS1v15(), hashes.SHA256())
    assert (await sandbox.trade(order.out_trade_no))["trade_type"] == "JSAPI"
