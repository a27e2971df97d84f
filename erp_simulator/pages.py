"""The waiter page of one terminal: static files plus a small local JSON API and an SSE stream.

The browser never talks to the coordinator: it talks to this simulator process, which holds
the terminal's websocket. ``GET /api/state`` is everything the page draws; ``GET /api/stream``
(server-sent events) sends ``state`` whenever it changes and ``notice`` for toasts ("your lock
was taken by X", "an add-on was refused"). Actions are ``POST``s that answer ``200 {…}`` or the
SPEC error object ``{error: {code, message, message_en, force_allowed}}``; the page repeats a
refused action with ``force: true`` after the user confirms.

Every request first passes ``page_guard`` (login cookie, JSON-only, same-origin, trusted Host);
what the page is shown never includes a lock token or an H5 session id.
"""

from __future__ import annotations

import asyncio
import json
from importlib.resources import files
from typing import Any

from aiohttp import web

from .client import Refused
from .page_guard import PageLogin, guard_middleware
from .terminal import Terminal

STATIC = files("erp_simulator") / "static"
TERMINAL = web.AppKey("terminal", Terminal)
STREAMS = web.AppKey("streams", set)
LOGIN = web.AppKey("login", PageLogin)
_KEEPALIVE_SECONDS = 15


class PageStream:
    """One open SSE connection: a dirty flag for state and a queue of notices."""

    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self.dirty = True
        self.notices: list[dict[str, Any]] = []
        self.closed = False

    def touch(self, notice: dict[str, Any] | None = None) -> None:
        """Mark the state changed (and queue ``notice``)."""
        self.dirty = True
        if notice is not None:
            self.notices.append(notice)
        self.wake.set()

    def close(self) -> None:
        """End the stream (server shutdown)."""
        self.closed = True
        self.wake.set()


def page_state(terminal: Terminal) -> dict[str, Any]:
    """Everything the waiter page draws, for this terminal, now."""
    db, now = terminal.db, terminal.now()
    names = {t["table_id"]: t["name"] for t in db.tables()}
    orders = {o["table_id"]: o for o in db.open_orders()}  # oldest first: the newest per table wins
    for table_id in orders:
        names.setdefault(table_id, table_id)
    tables = []
    for table_id in sorted(names):
        order = orders.get(table_id)
        locks, held = [], []
        if order is not None:
            # Split bill: what the coordinator says the paid shares came to (docs/protocol.md A13).
            order = order | {"paid_cents": int(terminal.view.orders.get(order["order_id"], {}).get("paid_cents", 0))}
            locks = _locks(terminal, order["order_id"], now)
            held = sorted(kind for (order_id, kind) in terminal.held if order_id == order["order_id"])
        tables.append({"table_id": table_id, "name": names[table_id], "order": order, "locks": locks, "held": held})
    return {
        "terminal": {"terminal_id": terminal.terminal_id, "name": terminal.name, "master": terminal.master,
                     "connected": terminal.connected, "revoked": terminal.revoked},
        "store_id": terminal.store_id,
        "now": now,
        "tables": tables,
        "menu": db.menu(),
        # SPEC §11: the inbox, newest first (the diner's session never shown)
        "service_requests": sorted(terminal.view.service_requests.values(),
                                   key=lambda r: r.get("requested_at", 0), reverse=True)[:20],
    }


def _locks(terminal: Terminal, order_id: str, now: int) -> list[dict[str, Any]]:
    """The order's live locks as the terminal sees them, with its own just-granted ones added."""
    seen = terminal.view.live_locks(order_id, now)
    fences = {lock["fence"] for lock in seen}
    for (held_order, _kind), lock in terminal.held.items():
        if held_order == order_id and lock["fence"] not in fences and int(lock["expires_at"]) > now:
            seen.append(lock)  # granted, its lock.acquired event not here yet
    out = []
    for lock in seen:
        holder = lock.get("holder") or {}
        mine = holder.get("role") == "erp" and holder.get("terminal_id") == terminal.terminal_id
        out.append({k: lock.get(k) for k in ("kind", "fence", "expires_at", "acquired_at", "completing", "share")}
                   | {"holder": page_holder(holder), "mine": mine})
    return sorted(out, key=lambda lock: lock["kind"])


def page_holder(holder: dict[str, Any]) -> dict[str, Any]:
    """A holder as the page shows it: a diner is "a diner", never their H5 session id."""
    if holder.get("role") == "h5":
        return {"role": "h5"}
    return holder


def page_notice(notice: dict[str, Any]) -> dict[str, Any]:
    """A notice as the page shows it (its ``by`` without an H5 session id)."""
    if isinstance(notice.get("by"), dict):
        return notice | {"by": page_holder(notice["by"])}
    return notice


# --- handlers ---------------------------------------------------------------------------------


async def index(request: web.Request) -> web.Response:
    """The page."""
    return web.Response(body=(STATIC / "index.html").read_bytes(), content_type="text/html", charset="utf-8")


async def static_file(request: web.Request) -> web.Response:
    """app.js, style.css."""
    name = request.match_info["name"]
    types = {"app.js": "application/javascript", "style.css": "text/css"}
    if name not in types:
        raise web.HTTPNotFound()
    return web.Response(body=(STATIC / name).read_bytes(), content_type=types[name], charset="utf-8")


async def state(request: web.Request) -> web.Response:
    """GET /api/state."""
    return _json(page_state(request.app[TERMINAL]))


async def stream(request: web.Request) -> web.StreamResponse:
    """GET /api/stream: server-sent ``state`` and ``notice`` events until the page goes away."""
    terminal = request.app[TERMINAL]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    page = PageStream()
    request.app[STREAMS].add(page)
    try:
        while not page.closed:
            try:
                await asyncio.wait_for(page.wake.wait(), _KEEPALIVE_SECONDS)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            page.wake.clear()
            notices, page.notices = page.notices, []
            for notice in notices:
                await response.write(_sse("notice", page_notice(notice)))
            if page.dirty:
                page.dirty = False
                await response.write(_sse("state", page_state(terminal)))
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        request.app[STREAMS].discard(page)
    return response


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(value, ensure_ascii=False), content_type="application/json")


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="body must be JSON") from None
    return body if isinstance(body, dict) else {}


def action(run):
    """Wrap an action: its result as JSON, a refusal as the SPEC error object."""

    async def handle(request: web.Request) -> web.Response:
        terminal = request.app[TERMINAL]
        try:
            result = await run(terminal, request.match_info, await _body(request))
        except Refused as refusal:
            return _json({"error": refusal.wire()}, status=refusal.status if refusal.status >= 400 else 409)
        except (KeyError, TypeError, ValueError) as e:
            invalid = Refused("VALIDATION_ERROR", "请求参数有误", f"Invalid request: {e}", status=400)
            return _json({"error": invalid.wire()}, status=400)
        return _json({"ok": True, "result": result})

    return handle


def _force(body: dict[str, Any]) -> bool:
    return body.get("force") is True


ACTIONS: list[tuple[str, str, Any]] = [
    ("POST", "/api/tables/{table_id}/orders", lambda t, m, b: t.open_order(m["table_id"], b.get("items") or [])),
    ("POST", "/api/orders/{order_id}/editor", lambda t, m, b: t.open_editor(m["order_id"], _force(b))),
    ("POST", "/api/orders/{order_id}/items",
     lambda t, m, b: t.add_dishes(m["order_id"], [{"sku": str(b.get("sku")), "qty": int(b.get("qty") or 1)}])),
    ("DELETE", "/api/orders/{order_id}/items/{line_id}", lambda t, m, b: t.remove_line(m["order_id"], m["line_id"])),
    ("POST", "/api/orders/{order_id}/submit", lambda t, m, b: t.submit(m["order_id"])),
    ("POST", "/api/orders/{order_id}/presettle", lambda t, m, b: t.presettle(m["order_id"], _force(b))),
    ("POST", "/api/orders/{order_id}/presettle/release", lambda t, m, b: t.unpresettle(m["order_id"])),
    ("POST", "/api/orders/{order_id}/payment",
     lambda t, m, b: t.checkout(m["order_id"], _force(b), b.get("force_unverified") is True)),
    ("POST", "/api/orders/{order_id}/payment/complete", lambda t, m, b: t.complete_payment(m["order_id"])),
    ("POST", "/api/orders/{order_id}/payment/cancel", lambda t, m, b: t.cancel_payment(m["order_id"])),
    # SPEC §11: 换桌, 并桌, taking a diner's service request
    ("POST", "/api/orders/{order_id}/move", lambda t, m, b: _told(t, t.client.move(
        m["order_id"], str(b["to_table_id"]), force=_force(b)))),
    ("POST", "/api/orders/{order_id}/merge", lambda t, m, b: _told(t, t.client.merge(
        m["order_id"], [str(o) for o in b["from_order_ids"]], force=_force(b)))),
    ("POST", "/api/service-requests/{request_id}/take", lambda t, m, b: _told(t, t.client.take_service_request(
        m["request_id"]))),
]


async def _told(terminal: Terminal, call: Any) -> Any:
    """Run a coordinator call, then redraw the pages (the ERP database may have changed under them)."""
    result = await call
    terminal.tell(None)
    return result


def _strip_tokens(result: Any) -> Any:
    """The page never needs a lock token: the simulator keeps it."""
    if isinstance(result, dict):
        return {k: v for k, v in result.items() if k != "token"}
    return result


def build_page_app(terminal: Terminal, login: PageLogin) -> web.Application:
    """The waiter page application of ``terminal``, open to browsers logged in with ``login``."""
    app = web.Application(client_max_size=64 * 1024, middlewares=[guard_middleware(login)])
    app[TERMINAL] = terminal
    app[LOGIN] = login
    app[STREAMS] = set()

    def listener(_terminal: Terminal, notice: dict[str, Any] | None) -> None:
        for page in app[STREAMS]:
            page.touch(notice)

    async def on_startup(app: web.Application) -> None:
        terminal.listeners.append(listener)

    async def on_shutdown(app: web.Application) -> None:
        if listener in terminal.listeners:
            terminal.listeners.remove(listener)
        for page in list(app[STREAMS]):
            page.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static_file)
    app.router.add_get("/api/state", state)
    app.router.add_get("/api/stream", stream)
    for method, path, run in ACTIONS:
        async def call(t: Terminal, m: Any, b: dict[str, Any], run: Any = run) -> Any:
            return _strip_tokens(await run(t, m, b))
        app.router.add_route(method, path, action(call))
    return app
