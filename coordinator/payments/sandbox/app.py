"""Wiring of the sandbox provider: one ``Sandbox`` owner, the routes, and the unreachable switch."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web

from . import alipay, control, paypage, wechat
from .core import SANDBOX, Sandbox
from .keys import SandboxKeys, write_private
from .state import TradeBook

#: A "hang" request waits at most this long for the switch to go back to normal.
HANG_LIMIT_S = 60.0


def is_provider_api(request: web.Request) -> bool:
    """The paths the real providers serve (the pay page and control API stay reachable)."""
    return request.path.startswith("/v3/") or request.path == "/gateway.do"


@web.middleware
async def unreachable(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Answer the provider APIs as an outage would: drop the connection, 503, or never answer."""
    sb = request.app[SANDBOX]
    mode = sb.switches.mode
    if mode == "normal" or not is_provider_api(request):
        return await handler(request)
    if mode == "503":
        return web.Response(status=503, text="Service Unavailable")
    if mode == "hang":
        try:
            await asyncio.wait_for(sb.reachable.wait(), HANG_LIMIT_S)
        except TimeoutError:
            pass
        return web.Response(status=503, text="Service Unavailable")
    # "drop": close the socket with no answer at all, as a dead load balancer does.
    if request.transport is not None:
        request.transport.abort()
    raise web.HTTPServiceUnavailable()


def build_app(data_dir: Path) -> web.Application:
    """Build the sandbox app; keys, trades and the control token live in ``data_dir``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    keys = SandboxKeys.load_or_create(data_dir)
    token = secrets.token_urlsafe(32)
    write_private(data_dir / "control-token", token)
    sb = Sandbox(keys, TradeBook(data_dir / "trades.json"), token)
    sb.wires = {"wechatpay": wechat.WechatWire(keys), "alipay": alipay.AlipayWire(keys)}
    app = web.Application(middlewares=[unreachable], client_max_size=64 * 1024)
    app[SANDBOX] = sb

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await sb.start()
        yield
        sb.reachable.set()
        await sb.stop()

    app.cleanup_ctx.append(lifecycle)
    for table in (wechat.routes, alipay.routes, paypage.routes, control.routes):
        app.add_routes(table)
    return app


def publish(app: web.Application, data_dir: Path, base_url: str) -> None:
    """Record the bound address and write ``credentials.json`` (0600) for the operator."""
    sb = app[SANDBOX]
    sb.base_url = base_url
    write_private(data_dir / "credentials.json", json.dumps(sb.keys.credentials(base_url), indent=1))
