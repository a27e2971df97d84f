"""Who may use a waiter page: the holder of its login link, from the page itself, on a trusted Host.

A waiter page drives a real terminal (it takes and forces locks, completes payments), so:

- Login: the page's printed URL carries a per-terminal key (``/?key=…``, generated at start).
  Opening it sets an HttpOnly, SameSite=Strict session cookie and redirects to ``/`` so the key
  does not stay in the address bar, the history or a Referer. Every other request needs the
  cookie (401 otherwise). The key keeps working for the life of the process, so the same link
  can be opened on a second device; a new process prints a new key.
- Cross-site requests: a state-changing request (not GET/HEAD) must be ``application/json``
  (415: an HTML form or a ``text/plain`` fetch cannot send that cross-site without a preflight)
  and come from the page's own origin: ``Origin`` equal to ``http://<Host>``, or, without an
  Origin, ``Sec-Fetch-Site: same-origin`` (403).
- DNS rebinding: ``Host`` must be an IP literal or ``localhost`` on the page's own port (403),
  so a hostile name resolved to this machine never counts as the page's origin.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
import secrets
from collections import OrderedDict

from aiohttp import web
from yarl import URL

from coordinator.security_headers import add_security_headers

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOGIN_PARAM = "key"
#: Sessions kept per page; the oldest is forgotten first (a waiter re-opens the link).
MAX_SESSIONS = 64

LOGIN_NEEDED_HTML = """<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><title>tablelock</title></head>
<body><p>请打开 tablelock demo / tablelock erp 打印的终端链接。</p>
<p>Open the waiter page link printed by <code>tablelock demo</code> or <code>tablelock erp</code>.</p></body></html>"""


class PageLogin:
    """The login of one terminal's waiter page: its key and the sessions opened with it."""

    def __init__(self, terminal_id: str, key: str | None = None) -> None:
        self.key = key or secrets.token_urlsafe(24)
        # Cookies ignore ports: every page on 127.0.0.1 shares one jar, so each has its own name.
        self.cookie_name = "tablelock_waiter_" + re.sub(r"[^A-Za-z0-9_-]", "_", terminal_id)
        self._sessions: OrderedDict[str, None] = OrderedDict()

    def check_key(self, key: str) -> bool:
        """Whether ``key`` is this page's login key (constant time)."""
        return hmac.compare_digest(key.encode(), self.key.encode())

    def open_session(self) -> str:
        """A new session id for a browser that presented the key."""
        session = secrets.token_urlsafe(32)
        self._sessions[session] = None
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def valid(self, session: str | None) -> bool:
        """Whether ``session`` (a cookie value) is a session of this page."""
        return bool(session) and session in self._sessions


def _trusted_host(request: web.Request) -> bool:
    """Host is an IP literal or localhost, on the port this page listens on."""
    try:
        host = URL(f"http://{request.headers.get('Host', '')}")
        port = host.port  # 80 when the Host names none
    except ValueError:
        return False
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if not host.host or sockname is None or port != sockname[1]:
        return False
    if host.host == "localhost":
        return True
    try:
        ipaddress.ip_address(host.host.strip("[]"))
    except ValueError:
        return False
    return True


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin == f"http://{request.headers.get('Host', '')}"
    return request.headers.get("Sec-Fetch-Site") == "same-origin"


def _refuse(status: int, code: str, message_en: str) -> web.Response:
    body = {"error": {"code": code, "message": message_en, "message_en": message_en, "force_allowed": False}}
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


def guard_middleware(login: PageLogin):
    """Return the middleware that logs browsers in and refuses cross-site or login-less requests."""

    @web.middleware
    async def guard(request: web.Request, handler) -> web.StreamResponse:
        response = await _guarded(request, handler, login)
        if not response.prepared:
            add_security_headers(response.headers)
        return response

    return guard


async def _guarded(request: web.Request, handler, login: PageLogin) -> web.StreamResponse:
    if not _trusted_host(request):
        return _refuse(403, "FORBIDDEN", "Host must be this machine's address and the page's port")
    if request.method not in SAFE_METHODS:
        if request.content_type != "application/json":
            return _refuse(415, "UNSUPPORTED_MEDIA_TYPE", "Send application/json")
        if not _same_origin(request):
            return _refuse(403, "FORBIDDEN", "Cross-origin request refused")
    key = request.query.get(LOGIN_PARAM)
    if request.method == "GET" and request.path == "/" and key is not None:
        if not login.check_key(key):
            return web.Response(status=401, text=LOGIN_NEEDED_HTML, content_type="text/html")
        redirect = web.Response(status=303, headers={"Location": "/", "Cache-Control": "no-store"})
        redirect.set_cookie(login.cookie_name, login.open_session(), httponly=True, samesite="Strict", path="/")
        return redirect
    if not login.valid(request.cookies.get(login.cookie_name)):
        if request.path == "/":
            return web.Response(status=401, text=LOGIN_NEEDED_HTML, content_type="text/html")
        return _refuse(401, "UNAUTHENTICATED", "Open the waiter page link first")
    return await handler(request)
