"""Issue 15 finding 8: every page, static file and API answer of the coordinator carries the security headers;
CORS is granted to the listed origins only."""

from __future__ import annotations

import pytest

from coordinator.api.middleware import security_middleware
from coordinator.app import build_app
from coordinator.security_headers import SECURITY_HEADERS

pytestmark = pytest.mark.security

PATHS = [
    "/admin/", "/admin/static/js/main.js", "/admin/static/admin.css",
    "/h5/", "/h5/static/js/main.js", "/h5/static/app.css",
    "/api/v1/openapi.json", "/healthz", "/api/v1/admin/stores",  # the last: 401 without a token
    "/h5/static/no-such-file.js", "/no/such/page",                # 404s
]


@pytest.fixture
def redis_url(redis_single_url: str) -> str:
    """Headers do not depend on the Redis topology: the single node is enough."""
    return redis_single_url


@pytest.mark.parametrize("path", PATHS)
async def test_every_answer_carries_the_security_headers(client, path):
    """CSP (script-src 'self', object-src/frame-ancestors/base-uri locked), XFO DENY, nosniff, no-referrer."""
    response = await client.get(path, allow_redirects=False)
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (path, response.status, name)
    csp = response.headers["Content-Security-Policy"]
    for directive in ("script-src 'self'", "object-src 'none'", "frame-ancestors 'none'", "base-uri 'none'"):
        assert directive in csp


async def test_the_admin_redirect_carries_them_too(client):
    """``/admin`` → ``/admin/`` (an HTTPException raised past the error middleware) still has the headers."""
    response = await client.get("/admin", allow_redirects=False)
    assert response.status == 302 and response.headers["X-Frame-Options"] == "DENY"


async def test_cors_only_for_the_listed_origins(aiohttp_client, settings):
    """A listed origin gets its own origin back (never ``*``, never credentials); another gets no CORS header."""
    app = build_app(settings.model_copy(update={"cors_origins": ["https://pos.example"]}))
    client = await aiohttp_client(app)
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    ok = await client.options("/api/v1/erp/orders", headers={"Origin": "https://pos.example", **preflight})
    assert ok.status == 204
    assert ok.headers["Access-Control-Allow-Origin"] == "https://pos.example"
    assert "Authorization" in ok.headers["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Credentials" not in ok.headers
    other = await client.options("/api/v1/erp/orders", headers={"Origin": "https://evil.example", **preflight})
    assert "Access-Control-Allow-Origin" not in other.headers
    simple = await client.get("/healthz", headers={"Origin": "https://pos.example"})
    assert "Access-Control-Allow-Origin" not in simple.headers  # only /api/
    api = await client.get("/api/v1/openapi.json", headers={"Origin": "https://pos.example"})
    assert api.headers["Access-Control-Allow-Origin"] == "https://pos.example"


def test_a_wildcard_cors_origin_is_refused():
    """``cors_origins = ["*"]`` fails at start-up rather than letting any site drive the API."""
    with pytest.raises(ValueError, match="not allowed"):
        security_middleware(["*"])
