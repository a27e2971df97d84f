"""The sandbox's control API for tests and demos: switches, acting as the diner, reading trades."""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import ValidationError

from .core import SANDBOX, Sandbox
from .state import PayRequest, SwitchUpdate

routes = web.RouteTableDef()

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def _loopback(request: web.Request) -> None:
    # The Host check defeats DNS rebinding: a page on evil.example resolving to 127.0.0.1.
    try:
        host = urlsplit("//" + (request.host or "")).hostname
    except ValueError:
        host = None
    if request.remote not in ("127.0.0.1", "::1") or host not in LOOPBACK_HOSTS:
        raise web.HTTPForbidden(text="loopback only")


def _authorised(request: web.Request) -> Sandbox:
    _loopback(request)
    sb = request.app[SANDBOX]
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {sb.control_token}".encode()):
        raise web.HTTPUnauthorized(text="bearer token required", headers={"WWW-Authenticate": "Bearer"})
    return sb


async def _parse(request: web.Request, model: type[SwitchUpdate | PayRequest]) -> SwitchUpdate | PayRequest:
    try:
        return model.model_validate_json(await request.read() or b"{}")
    except ValidationError as exc:
        raise web.HTTPBadRequest(text=exc.json(include_url=False, include_input=False), content_type="application/json") from None


@routes.get("/")
async def about(request: web.Request) -> web.Response:
    """What this process is (the demo prints its address; a person opening it learns where to go)."""
    return web.Response(text="sandbox-pay: a local WeChat Pay v3 / Alipay sandbox. Pay pages are opened from the "
                             "diner's H5 page; switches: POST /sandbox/control (bearer token in <data dir>/control-token).\n")


@routes.get("/sandbox/credentials")
async def credentials(request: web.Request) -> web.Response:
    """What to paste into the coordinator's provider settings (loopback only)."""
    _loopback(request)
    sb = request.app[SANDBOX]
    return web.json_response(sb.keys.credentials(sb.base_url), headers={"Cache-Control": "no-store"})


@routes.get("/sandbox/control")
async def read_switches(request: web.Request) -> web.Response:
    """The current process switches."""
    return web.json_response(_authorised(request).switches.model_dump())


@routes.post("/sandbox/control")
async def set_switches(request: web.Request) -> web.Response:
    """Change process switches; ``mode`` other than normal makes the provider APIs unreachable."""
    sb = _authorised(request)
    update = await _parse(request, SwitchUpdate)
    sb.switches = sb.switches.model_copy(update=update.model_dump(exclude_none=True))
    if sb.switches.mode == "normal":
        sb.reachable.set()
    else:
        sb.reachable.clear()
    return web.json_response(sb.switches.model_dump())


@routes.get("/sandbox/trades/{no}")
async def read_trade(request: web.Request) -> web.Response:
    """A trade's state, refunds and notification deliveries."""
    sb = _authorised(request)
    trade = sb.book.by_no.get(request.match_info["no"])
    if trade is None:
        raise web.HTTPNotFound(text="no such trade")
    sb.expire(trade)
    return web.json_response(trade.public())


@routes.post("/sandbox/trades/{no}/pay")
async def pay(request: web.Request) -> web.Response:
    """Act as the diner on one trade (200 applied now, 202 scheduled for a slow payer)."""
    sb = _authorised(request)
    trade = sb.book.by_no.get(request.match_info["no"])
    if trade is None:
        raise web.HTTPNotFound(text="no such trade (an Alipay trade exists once its pay URL is opened)")
    req = await _parse(request, PayRequest)
    assert isinstance(req, PayRequest)
    applied = sb.pay(trade, req)
    return web.json_response(trade.public(), status=200 if applied else 202)
