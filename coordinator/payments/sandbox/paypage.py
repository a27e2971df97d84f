"""The page the diner's phone opens to pay a sandbox trade (plain HTML, JS with textContent only)."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from aiohttp import web

from .alipay import AlipayWire
from .core import SANDBOX, Sandbox
from .state import PayRequest, Trade

routes = web.RouteTableDef()

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}

PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>沙箱支付</title><link rel="stylesheet" href="/pay/static/pay.css"></head>
<body><main id="pay" data-token="{token}">
<h1 id="merchant"></h1><p id="description"></p><p id="amount" class="amount"></p><p id="state"></p>
<button id="pay-ok" type="button">支付</button>
<button id="pay-fail" type="button">支付失败</button>
<button id="pay-cancel" type="button">取消</button>
</main><script src="/pay/static/pay.js"></script></body></html>
"""

SCRIPT = """'use strict';
(function () {
  const main = document.getElementById('pay');
  const token = main.dataset.token;
  const api = '/pay/api/' + encodeURIComponent(token);
  const redirect = new URLSearchParams(location.search).get('redirect_url') || '';
  const show = (id, text) => { document.getElementById(id).textContent = text; };
  fetch(api).then(r => r.json()).then(t => {
    show('merchant', t.merchant);
    show('description', t.description);
    show('amount', '¥' + t.amount_yuan);
    show('state', t.state_text);
  });
  const choose = choice => {
    for (const b of document.querySelectorAll('button')) b.disabled = true;
    fetch(api, {method: 'POST', headers: {'Content-Type': 'application/json'},
                body: JSON.stringify({choice: choice, redirect_url: redirect})})
      .then(r => r.json()).then(a => {
        show('state', a.state_text);
        if (a.redirect) setTimeout(() => location.assign(a.redirect), 600);
      });
  };
  document.getElementById('pay-ok').addEventListener('click', () => choose('pay'));
  document.getElementById('pay-fail').addEventListener('click', () => choose('fail'));
  document.getElementById('pay-cancel').addEventListener('click', () => choose('cancel'));
})();
"""

STYLE = """body{font-family:system-ui,sans-serif;max-width:28rem;margin:2rem auto;padding:0 1rem}
.amount{font-size:2rem;font-weight:bold}button{display:block;width:100%;margin:.5rem 0;padding:.8rem;font-size:1.1rem}
"""

STATE_TEXT = {"pending": "等待支付", "paid": "支付成功", "failed": "支付失败", "closed": "订单已关闭"}


def _trade(sb: Sandbox, token: str) -> Trade:
    trade = sb.book.by_token.get(token)
    if trade is None:
        raise web.HTTPNotFound(text="no such trade", headers=SECURITY_HEADERS)
    sb.expire(trade)
    return trade


def _safe_redirect(url: str) -> str:
    """Only absolute http(s) URLs: a ``javascript:`` redirect would run in this page's origin."""
    parts = urlsplit(url)
    return url if parts.scheme in ("http", "https") and parts.netloc else ""


@routes.get("/pay/wechat/{token}")
@routes.get("/pay/alipay/{token}")
async def page(request: web.Request) -> web.Response:
    """Serve the pay page of one trade."""
    trade = _trade(request.app[SANDBOX], request.match_info["token"])
    # The token is ours (hex), never the diner's input, so it can go into the attribute as is.
    return web.Response(text=PAGE.format(token=trade.token), content_type="text/html", headers=SECURITY_HEADERS)


@routes.get("/pay/static/pay.js")
async def script(request: web.Request) -> web.Response:
    """The pay page's script."""
    return web.Response(text=SCRIPT, content_type="application/javascript", headers=SECURITY_HEADERS)


@routes.get("/pay/static/pay.css")
async def style(request: web.Request) -> web.Response:
    """The pay page's style sheet."""
    return web.Response(text=STYLE, content_type="text/css", headers=SECURITY_HEADERS)


def _view(sb: Sandbox, trade: Trade) -> dict[str, str]:
    merchant = sb.keys.mchid if trade.provider == "wechatpay" else sb.keys.alipay_seller_id
    return {
        "merchant": f"沙箱商户 {merchant}",
        "description": trade.description,
        "amount_yuan": f"{trade.amount_cents // 100}.{trade.amount_cents % 100:02d}",
        "state": trade.state,
        "state_text": STATE_TEXT[trade.state],
    }


@routes.get("/pay/api/{token}")
async def read(request: web.Request) -> web.Response:
    """The trade as the pay page shows it."""
    sb = request.app[SANDBOX]
    return web.json_response(_view(sb, _trade(sb, request.match_info["token"])), headers=SECURITY_HEADERS)


@routes.post("/pay/api/{token}")
async def choose(request: web.Request) -> web.Response:
    """Apply the diner's button and say where the phone goes next."""
    sb = request.app[SANDBOX]
    trade = _trade(sb, request.match_info["token"])
    try:
        body = json.loads(await request.read())
        choice, redirect = body["choice"], str(body.get("redirect_url", ""))
    except (ValueError, KeyError, TypeError):
        raise web.HTTPBadRequest(text="bad choice", headers=SECURITY_HEADERS) from None
    if choice == "pay":
        sb.pay(trade, PayRequest())
    elif choice == "fail":
        sb.pay(trade, PayRequest(outcome="failed", pay_delay_ms=0))
    elif choice != "cancel":
        raise web.HTTPBadRequest(text="bad choice", headers=SECURITY_HEADERS)
    if trade.provider == "wechatpay":
        # WeChat sends the phone to the redirect_url the merchant appended to h5_url.
        target = _safe_redirect(redirect)
    else:
        wire = sb.wires["alipay"]
        assert isinstance(wire, AlipayWire)
        target = _safe_redirect(wire.return_url(trade))
    return web.json_response({**_view(sb, trade), "redirect": target}, headers=SECURITY_HEADERS)
