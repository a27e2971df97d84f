"""Issue 15 finding 1: a waiter page is used only by who opened its printed link, from the page itself.

The store's ERP runs three terminals with their pages on free ports (as in test_waiter_page.py);
requests are sent with aiohttp as a browser or as a hostile page would send them.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from yarl import URL

from coordinator.cli import build_parser
from coordinator.security_headers import KEEPALIVE_TIMEOUT_SECONDS, SECURITY_HEADERS
from erp_simulator.simulator import Simulator
from h5_client.client import H5Client, H5Error

pytestmark = pytest.mark.security


@pytest.fixture
def redis_url(redis_single_url: str) -> str:
    """The waiter pages need one Redis node (the coordinator tests cover the cluster)."""
    return redis_single_url




def _login_url(sim: Simulator, name: str = "服务员A") -> URL:
    return URL(next(url for terminal, url in sim.pages if terminal.name == name))


async def _logged_in(sim: Simulator, name: str = "服务员A") -> tuple[aiohttp.ClientSession, str]:
    """A client session that opened the page's printed link, and the page's origin."""
    login = _login_url(sim, name)
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # unsafe: cookies for IP hosts
    async with http.get(login) as response:
        assert response.status == 200
        assert "key" not in response.url.query  # redirected to the bare page
    return http, str(login.origin())


def _order_id(sim: Simulator) -> str:
    return sim.db.table_order("T1")["order_id"]


async def test_a_login_less_request_is_refused(sim):
    """Without the session cookie the page, its state and its actions answer 401, and nothing happens."""
    base = _login_url(sim).origin()
    async with aiohttp.ClientSession() as http:
        for path in ("/", "/api/state", "/api/stream", "/static/app.js"):
            async with http.get(base.with_path(path)) as response:
                assert response.status == 401, path
        async with http.post(base.with_path(f"/api/orders/{_order_id(sim)}/editor"), json={"force": True},
                             headers={"Origin": str(base)}) as response:
            assert response.status == 401
        async with http.get(base.with_path("/").with_query(key="not-the-key")) as response:
            assert response.status == 401
    assert not sim.terminal("服务员A").held


async def test_login_sets_a_strict_httponly_cookie_and_strips_the_key(sim):
    """Opening the printed link answers 303 to / with an HttpOnly SameSite=Strict session cookie."""
    login = _login_url(sim)
    async with aiohttp.ClientSession() as http:
        async with http.get(login, allow_redirects=False) as response:
            assert response.status == 303 and response.headers["Location"] == "/"
            cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and login.query["key"] not in cookie


async def test_a_cross_site_text_plain_post_is_refused(sim):
    """A text/plain POST (what any web page may send cross-site) is 415 even with the cookie; no lock is taken."""
    http, origin = await _logged_in(sim)
    async with http:
        url = f"{origin}/api/orders/{_order_id(sim)}/payment"
        async with http.post(url, data='{"force": true}', headers={"Content-Type": "text/plain",
                                                                   "Origin": "https://evil.example"}) as response:
            assert response.status == 415
        async with http.post(url, data='{"force": true}', headers={"Content-Type": "text/plain",
                                                                   "Origin": origin}) as response:
            assert response.status == 415
    assert not sim.terminal("服务员A").held


async def test_a_json_post_from_another_origin_or_host_is_refused(sim):
    """JSON from a foreign Origin, a cross-site fetch without Origin, or a rebinding Host is 403."""
    http, origin = await _logged_in(sim)
    port = URL(origin).port
    url = f"{origin}/api/orders/{_order_id(sim)}/editor"
    async with http:
        for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {},
                        {"Origin": f"http://evil.example:{port}", "Host": f"evil.example:{port}"}):
            async with http.post(url, json={"force": True}, headers=headers) as response:
                assert response.status == 403, headers
        async with http.get(f"{origin}/api/state", headers={"Host": f"evil.example:{port}"}) as response:
            assert response.status == 403
        assert not sim.terminal("服务员A").held
        async with http.post(url, json={"force": False}, headers={"Origin": origin}) as response:
            assert response.status == 200  # the page itself still works
        async with http.post(url.replace("/editor", "/submit"), json={},
                             headers={"Sec-Fetch-Site": "same-origin"}) as response:
            assert response.status == 200


async def test_state_shows_no_h5_session_id(sim, store):  # noqa: F811
    """A diner's payment lock appears on the page as held by "h5", without the diner's session id."""
    http, origin = await _logged_in(sim, "收银台")
    async with http, await H5Client.open(store.base_url, store.qr) as diner:
        for _ in range(50):  # the master pushes T1's order to the coordinator just after it connects
            try:
                await diner.checkout()
                break
            except H5Error as e:
                assert e.status == 404
                await asyncio.sleep(0.1)
        for _ in range(50):
            async with http.get(f"{origin}/api/state") as response:
                text = await response.text()
                state = await response.json()
            locks = next(t for t in state["tables"] if t["table_id"] == "T1")["locks"]
            if locks:
                break
            await asyncio.sleep(0.1)
        assert [lock["holder"] for lock in locks] == [{"role": "h5"}]
        session_id = diner.session_token.split("~")[3]
        assert session_id not in text and "session_id" not in text


async def test_waiter_pages_carry_the_security_headers(sim):
    """The login notice, the page, its script and its API answers carry CSP, XFO, nosniff and no-referrer."""
    http, origin = await _logged_in(sim)
    async with http:
        for path in ("/", "/static/app.js", "/static/style.css", "/api/state"):
            async with http.get(origin + path) as response:
                assert response.status == 200, path
                for name, value in SECURITY_HEADERS.items():
                    assert response.headers.get(name) == value, (path, name)
    async with aiohttp.ClientSession() as anonymous, anonymous.get(origin + "/") as refused:
        assert refused.status == 401 and refused.headers["X-Frame-Options"] == "DENY"


def test_pages_bind_loopback_unless_told_and_idle_connections_are_closed(sim):
    """`demo` serves the waiter pages on 127.0.0.1 by default; page servers drop idle keep-alives in 30 s."""
    assert build_parser().parse_args(["demo"]).pages_host == "127.0.0.1"
    assert build_parser().parse_args(["demo", "--pages-host", "0.0.0.0"]).pages_host == "0.0.0.0"
    assert build_parser().parse_args(["erp", "--coordinator", "x", "--store", "s"]).pages_host == "127.0.0.1"
    for runner in sim._runners:
        assert runner.server is not None and runner.server._kwargs["keepalive_timeout"] == KEEPALIVE_TIMEOUT_SECONDS
