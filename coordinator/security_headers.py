"""The browser security headers every page, static file and API answer of ours carries.

One policy for the coordinator (admin console, H5 page, API) and the ERP simulator's waiter pages:
scripts and styles only from our own origin (none of the pages has inline script or style), no
plugins, no framing, no ``<base>`` rewriting, no MIME sniffing, no Referer (the H5 URL carries
the table's QR token).
"""

from __future__ import annotations

from collections.abc import MutableMapping

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data: blob:",  # blob: the admin console shows QR PNGs fetched with its token
    "connect-src 'self' blob:",  # CSP3: 'self' also matches ws:/wss: to our host; blob: our own QR PNGs
    "object-src 'none'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
))

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

#: Idle keep-alive connections are closed after this many seconds (aiohttp's AppRunner keeps them an hour).
KEEPALIVE_TIMEOUT_SECONDS = 30.0


def add_security_headers(headers: MutableMapping[str, str]) -> None:
    """Set the security headers on ``headers``, keeping any a handler chose itself."""
    for name, value in SECURITY_HEADERS.items():
        headers.setdefault(name, value)
